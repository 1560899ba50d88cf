"""MovieLens-100K: fetch once into a cache (GroupLens zip, else the copy inside the PyPI `recbole` wheel), parse.

Both sources are verified by checksum before anything is moved into the cache; the cache directory appears
atomically (temp dir + rename) under a file lock, so a failed or concurrent fetch never leaves half a dataset.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import pandas as pd
from filelock import FileLock

from m6rec.data.sources.parse import atomic_columns, to_int, utf8_error
from m6rec.data.sources.tables import InteractionTables
from m6rec.utils.files import atomic_dir, file_digest

log = logging.getLogger(__name__)

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
GROUPLENS_MD5 = "0e33842e24a9c977be4e0107933c0723"  # published next to the zip as ml-100k.zip.md5
RECBOLE_REQUIREMENT = "recbole==1.2.1"
RECBOLE_PREFIX = "recbole/dataset_example/ml-100k/"
RECBOLE_SHA256 = {
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
    "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
}
GROUPLENS_FILES = ("u.data", "u.item", "u.user")
GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
SOURCES = ("grouplens", "pypi")


class ChecksumError(RuntimeError):
    """A downloaded file does not match its published checksum."""


# --------------------------------------------------------------------------- network boundary (stubbed in tests)
def download_url(url: str, dest: Path, timeout: float = 30.0) -> None:
    """Download `url` to `dest` (raises OSError when unreachable)."""
    with urllib.request.urlopen(url, timeout=timeout) as response, open(dest, "wb") as f:
        while chunk := response.read(1 << 20):
            f.write(chunk)


def pip_download(requirement: str, dest: Path) -> Path:
    """Fetch one wheel with `pip download --no-deps` (no install) and return its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-d", str(dest)]
    proc = subprocess.run([*cmd, requirement], capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        raise OSError(f"pip download {requirement} failed: {proc.stderr.strip().splitlines()[-1:]}")
    return wheels[0]


# --------------------------------------------------------------------------- fetch
def _fetch_grouplens(out: Path) -> None:
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        archive = Path(tmp) / "ml-100k.zip"
        download_url(GROUPLENS_URL, archive)
        digest = file_digest(archive, "md5")
        if digest != GROUPLENS_MD5:
            raise ChecksumError(f"{GROUPLENS_URL}: md5 {digest} != published {GROUPLENS_MD5}; cache left untouched")
        with zipfile.ZipFile(archive) as zf:
            for name in (*GROUPLENS_FILES, "u.genre", "README"):
                (out / name).write_bytes(zf.read(f"ml-100k/{name}"))


def _fetch_pypi(out: Path) -> None:
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        wheel = pip_download(RECBOLE_REQUIREMENT, Path(tmp))
        with zipfile.ZipFile(wheel) as zf:
            for name, expected in RECBOLE_SHA256.items():
                (out / name).write_bytes(zf.read(RECBOLE_PREFIX + name))
                digest = file_digest(out / name)
                if digest != expected:
                    raise ChecksumError(
                        f"{wheel.name}:{RECBOLE_PREFIX}{name}: sha256 {digest} != expected {expected}; "
                        "cache left untouched"
                    )


_FETCHERS = {"grouplens": _fetch_grouplens, "pypi": _fetch_pypi}


def fetch_ml100k(cache_dir: str | Path, sources: tuple[str, ...] | list[str] = SOURCES) -> Path:
    """Return `<cache_dir>/ml-100k`, fetching it on first use from the first reachable source.

    An unreachable source falls through to the next; a checksum mismatch stops with `ChecksumError`.
    """
    cache_dir = Path(cache_dir)
    target = cache_dir / "ml-100k"
    if (target / "SOURCE").exists():
        return target
    unknown = [s for s in sources if s not in _FETCHERS]
    if unknown:
        raise ValueError(f"data.sources: unknown source(s) {unknown}; choose from {list(_FETCHERS)}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache_dir / ".ml-100k.lock")):
        if (target / "SOURCE").exists():  # another process fetched it while we waited
            return target
        failures = []
        for source in sources:
            try:
                with atomic_dir(target) as tmp:
                    log.info("Fetching MovieLens-100K from %s", source)
                    _FETCHERS[source](tmp)
                    (tmp / "SOURCE").write_text(source + "\n")
                return target
            except OSError as err:  # unreachable: try the next source
                log.warning("MovieLens-100K source %s unavailable: %s", source, err)
                failures.append(f"{source}: {err}")
    raise RuntimeError("Could not fetch MovieLens-100K from any source: " + "; ".join(failures))


# --------------------------------------------------------------------------- parse
def _read_table(path: Path, sep: str, names: list[str] | None, encoding: str, header: int | None) -> pd.DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing (expected an ML-100K file)")
    try:
        return pd.read_csv(
            path,
            sep=sep,
            names=names,
            header=header,
            encoding=encoding,
            dtype=str,
            keep_default_na=False,
            engine="c",
            quoting=3,
            skip_blank_lines=False,  # a blank line is an error at its own line number
        )
    except UnicodeDecodeError:
        raise utf8_error(path) from None
    except pd.errors.ParserError as err:
        raise ValueError(f"{path}: {err}") from err


def _check_ratings(inter: pd.DataFrame, path: Path, offset: int) -> None:
    bad = inter["rating"].isna() | (inter["rating"] < 0)
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise ValueError(f"{path}:{row + offset}: column 'rating' must be a number >= 0")


def _load_grouplens(root: Path) -> InteractionTables:
    path = root / "u.data"
    raw = _read_table(path, "\t", ["user_id", "item_id", "rating", "timestamp"], "utf-8", None)
    inter = pd.DataFrame({c: to_int(raw, c, path, 1) for c in ("user_id", "item_id", "timestamp")})
    inter["rating"] = pd.to_numeric(raw["rating"], errors="coerce").astype("float32")
    _check_ratings(inter, path, 1)

    path = root / "u.item"
    raw = _read_table(path, "|", ["item_id", "title", "date", "video_date", "url", *GENRES], "latin-1", None)
    titles = raw["title"].str.extract(r"^(.*?)(?: \((\d{4})\))?\s*$")
    flags = raw[list(GENRES)].to_numpy() == "1"
    items = pd.DataFrame(
        {
            "item_id": to_int(raw, "item_id", path, 1),
            "title": titles[0].fillna(raw["title"]),
            "year": raw["date"].str[-4:],
            "genres": ["|".join(g for g, on in zip(GENRES, row, strict=True) if on) for row in flags],
        }
    )

    path = root / "u.user"
    raw = _read_table(path, "|", ["user_id", "age", "gender", "occupation", "zip"], "utf-8", None)
    users = pd.DataFrame(
        {
            "user_id": to_int(raw, "user_id", path, 1),
            "age": to_int(raw, "age", path, 1),
            "gender": raw["gender"],
            "occupation": raw["occupation"],
        }
    )
    return InteractionTables(inter[["user_id", "item_id", "rating", "timestamp"]], items, users)


def _load_recbole(root: Path) -> InteractionTables:
    path = root / "ml-100k.inter"
    columns = ["user_id", "item_id", "rating", "timestamp"]
    raw = atomic_columns(path, _read_table(path, "\t", None, "utf-8", 0), columns)
    inter = pd.DataFrame({c: to_int(raw, c, path, 2) for c in ("user_id", "item_id")})
    inter["rating"] = pd.to_numeric(raw["rating"], errors="coerce").astype("float32")
    _check_ratings(inter, path, 2)
    inter["timestamp"] = to_int(raw, "timestamp", path, 2)

    path = root / "ml-100k.item"
    raw = atomic_columns(
        path, _read_table(path, "\t", None, "utf-8", 0), ["item_id", "movie_title", "release_year", "class"]
    )
    items = pd.DataFrame(
        {
            "item_id": to_int(raw, "item_id", path, 2),
            "title": raw["movie_title"],
            "year": raw["release_year"],
            "genres": raw["class"].str.split().str.join("|"),
        }
    )

    path = root / "ml-100k.user"
    raw = atomic_columns(path, _read_table(path, "\t", None, "utf-8", 0), ["user_id", "age", "gender", "occupation"])
    users = pd.DataFrame(
        {
            "user_id": to_int(raw, "user_id", path, 2),
            "age": to_int(raw, "age", path, 2),
            "gender": raw["gender"],
            "occupation": raw["occupation"],
        }
    )
    return InteractionTables(inter, items, users)


def load_ml100k(root: str | Path) -> InteractionTables:
    """Parse ML-100K from a directory in GroupLens (`u.data`…) or RecBole atomic (`ml-100k.inter`…) format."""
    root = Path(root)
    if (root / "u.data").exists():
        tables = _load_grouplens(root)
    elif (root / "ml-100k.inter").exists():
        tables = _load_recbole(root)
    else:
        raise FileNotFoundError(f"{root}: neither u.data (GroupLens) nor ml-100k.inter (RecBole) found")
    tables.items["year"] = tables.items["year"].where(tables.items["year"].str.fullmatch(r"\d{4}"), "")
    _check_ids(root, tables)
    return tables


def _check_ids(root: Path, t: InteractionTables) -> None:
    for table, key in ((t.items, "item_id"), (t.users, "user_id")):
        dup = table[key].duplicated()
        if dup.any():
            raise ValueError(f"{root}: duplicate {key} {int(table[key][dup].iloc[0])} in the {key[:4]} table")
        unknown = ~t.interactions[key].isin(table[key])
        if unknown.any():
            row = int(unknown.to_numpy().argmax())
            raise ValueError(
                f"{root}: interaction row {row + 1} references unknown {key} {int(t.interactions[key].iloc[row])}"
            )
    if t.interactions.empty:
        raise ValueError(f"{root}: no interactions")
