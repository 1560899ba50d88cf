"""User errors vs bugs at the command line: bad data, bad config or a missing file is one line on stderr and exit
code 2; a bug keeps its traceback (exit 1). `HYDRA_FULL_ERROR=1` or `debug=true` shows every traceback.

A user error is a `UserError`, a `FileNotFoundError` / `NotADirectoryError`, Hydra's own config errors, or a
`ValueError` whose one-line message starts with what is wrong — a file (`path:line:`) or a config key (`data.x:`) —
the form every loader and config check in m6rec raises (tests/test_faults.py holds the cases).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable

USER_ERROR_EXIT_CODE = 2
_USER_FULL_ERROR = "M6REC_USER_HYDRA_FULL_ERROR"  # HYDRA_FULL_ERROR as the user set it (run_main sets it to 1)
_LOCATED = re.compile(r"^[^\s:]*[./][^\s:]*(:\d+)*: ")  # "data.batch_size: …", "/x/u.data:5: …", "Toys.jsonl.gz: …"


class OneLineError(Exception):
    """An error whose message says it all: printed as one line, exit code `exit_code`."""

    exit_code = 1


class UserError(OneLineError, ValueError):
    """Bad input from the user (config value, data file, missing folder); the message names the key or file."""

    exit_code = USER_ERROR_EXIT_CODE


class ConfigError(UserError):
    """A config value of the wrong type or pointing nowhere; the message starts with the config key."""


def exit_code(err: BaseException) -> int:
    """2 for a user error, the error's own `exit_code` for a OneLineError (e.g. 1 for a diverged loss)."""
    return getattr(err, "exit_code", USER_ERROR_EXIT_CODE)


def user_error(err: BaseException) -> BaseException | None:
    """The one-line error behind `err` (through InstantiationException and `raise … from`), or None for a bug."""
    from hydra.errors import CompactHydraException, InstantiationException

    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OneLineError | FileNotFoundError | NotADirectoryError):
            return err
        if isinstance(err, CompactHydraException) and not isinstance(err, InstantiationException):
            return err
        if isinstance(err, ValueError) and _LOCATED.match(str(err)):
            return err
        err = err.__cause__ or (err.__context__ if isinstance(err, InstantiationException) else None)
    return None


def one_line(err: BaseException) -> str:
    """The error as one line: its message with newlines folded, prefixed by the class name."""
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    return f"{type(err).__name__}: {text}"


def wants_traceback(argv: list[str] | None = None) -> bool:
    """`HYDRA_FULL_ERROR=1` in the environment (as the user set it) or `debug=true` on the command line."""
    argv = sys.argv[1:] if argv is None else argv
    full = os.environ.get(_USER_FULL_ERROR, os.environ.get("HYDRA_FULL_ERROR", "")) == "1"
    return full or any(a.lower() in ("debug=true", "+debug=true", "++debug=true") for a in argv)


def exit_if_user_error(err: BaseException, debug: bool) -> None:
    """Inside a single (not multirun) job: print a user error's one line and exit (before Hydra adds its own line)."""
    found = user_error(err)
    if found is not None and not debug and not wants_traceback():
        print(f"Error: {one_line(found)}", file=sys.stderr)
        raise SystemExit(exit_code(found)) from None


def run_main(main: Callable[[], object]) -> int:
    """Run a `@hydra.main` function; a user error → one line on stderr and exit code 2, anything else raises on."""
    show_traceback = wants_traceback()
    os.environ.setdefault(_USER_FULL_ERROR, os.environ.get("HYDRA_FULL_ERROR", ""))
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises instead of printing its own trimmed traceback
    try:
        main()
    except Exception as err:
        found = user_error(err)
        if found is None or show_traceback:
            raise
        print(f"Error: {one_line(found)}", file=sys.stderr)
        return exit_code(found)
    return 0
