"""Behaviour → text, the M6-Rec way: user attributes, recent history of item titles, the candidate item.

Templates are set in config (`data.templates.*`): Python format strings, or Jinja2 templates (a template that starts
with `jinja:` or contains `{{` / `{%`). The default joint prompt reads
"A 24-year-old male technician rated Toy Story (5/5); Heat (4/5). Will he enjoy Fargo (1996), Crime, Drama?".
Item and user templates may name any column of the item / user table; a format-string template tidies what empty
values leave behind ("Heat ()," → "Heat").
"""

from __future__ import annotations

import functools
import math
import re
import string
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import jinja2
import jinja2.meta
import jinja2.sandbox

GENDER_WORDS = {"M": ("male", "he"), "F": ("female", "she")}
JINJA_PREFIX = "jinja:"
PROMPT_FIELDS = ("user", "history", "pronoun", "candidate")
ENTITY_TEMPLATES = ("user", "history_item", "candidate")  # fields come from the user / item table
_JINJA = jinja2.sandbox.SandboxedEnvironment(
    undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True
)  # templates may come from a downloaded run
_SENTINEL = "\x00{}\x00"  # marks where a Jinja prompt puts each field (see `prompt_layout`)


def is_jinja(template: str) -> bool:
    """A Jinja2 template: starts with `jinja:` or contains `{{` / `{%` (else a Python format string)."""
    return template.startswith(JINJA_PREFIX) or "{{" in template or "{%" in template


@functools.lru_cache(maxsize=64)
def _jinja(template: str) -> jinja2.Template:
    return _JINJA.from_string(template.removeprefix(JINJA_PREFIX))


@functools.lru_cache(maxsize=64)
def template_fields(template: str) -> frozenset[str]:
    """The names a template reads (format fields, or Jinja's undeclared variables); raises on a syntax error."""
    if is_jinja(template):
        source = template.removeprefix(JINJA_PREFIX)
        return frozenset(jinja2.meta.find_undeclared_variables(_JINJA.parse(source)))
    return frozenset(f.split(".")[0].split("[")[0] for _, f, _, _ in string.Formatter().parse(template) if f)


@dataclass(frozen=True)
class Templates:
    """Templates for each part of a rendered event; the names they use come from the data."""

    user: str = "A {age}-year-old {gender} {occupation}"
    history_item: str = "{title} ({rating:.0f}/5)"
    candidate: str = "{title} ({year}), {genres}"
    prompt: str = "{user} rated {history}. Will {pronoun} enjoy {candidate}?"
    history_sep: str = "; "
    empty_history: str = "nothing yet"
    anonymous_user: str = "A user"  # for users without attributes (no user table, or all attributes empty)

    def __post_init__(self) -> None:
        for name in (*ENTITY_TEMPLATES, "prompt"):
            template = getattr(self, name)
            try:
                fields = template_fields(template)
                if is_jinja(template):
                    _jinja(template)
            except jinja2.TemplateSyntaxError as err:
                msg = f"Jinja syntax error at line {err.lineno}: {err.message}"
                raise ValueError(f"data.templates.{name}: {msg}") from None
            except ValueError as err:
                raise ValueError(f"data.templates.{name}: {err}".splitlines()[0]) from None
            if name == "prompt" and not fields <= set(PROMPT_FIELDS):
                unknown = sorted(fields - set(PROMPT_FIELDS))
                raise ValueError(f"data.templates.prompt: unknown field(s) {unknown}; use {sorted(PROMPT_FIELDS)}")
        if "candidate" not in template_fields(self.prompt):
            raise ValueError("data.templates.prompt: must contain {candidate}")
        if is_jinja(self.prompt):
            prompt_layout(self.prompt)  # the fields must appear unchanged

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> Templates:
        return cls(**dict(cfg or {}))

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    def check_fields(self, item_columns: Iterable[str], user_columns: Iterable[str]) -> None:
        """Every name an item / user template uses must be a column of that table (one-line error otherwise)."""
        item = set(item_columns) - {"item_id"}
        allowed = {
            "user": set(user_columns) - {"user_id"} | {"pronoun"},
            "history_item": item | {"rating"},
            "candidate": item,
        }
        for name, names in allowed.items():
            unknown = template_fields(getattr(self, name)) - names
            if unknown:
                table = "user" if name == "user" else "item"
                raise ValueError(
                    f"data.templates.{name}: unknown field(s) {sorted(unknown)}; the {table} table has {sorted(names)}"
                )


class _Fields(dict):
    """Format values: a name missing from the row renders empty."""

    def __missing__(self, key: str) -> str:
        return ""


def _empty(value: Any) -> bool:
    return value is None or value == "" or (isinstance(value, float) and math.isnan(value))


def _clean(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: ("" if _empty(v) else v) for k, v in row.items()}


_EMPTY_PARENS = re.compile(r"\s*\(\s*\)")
_REPEATED_COMMAS = re.compile(r",(\s*,)+")
_EDGE_COMMAS = re.compile(r"^[\s,]+|[\s,]+$")


def _tidy(text: str) -> str:
    """What empty values leave in a format-string rendering: "()" dropped, ", ," merged, no edge commas."""
    text = _REPEATED_COMMAS.sub(",", _EMPTY_PARENS.sub("", text))
    return " ".join(_EDGE_COMMAS.sub("", text).split())


def render_template(template: str, fields: Mapping[str, Any]) -> str:
    """One template filled from `fields` (format string: tidied; Jinja: stripped)."""
    if is_jinja(template):
        return " ".join(_jinja(template).render(**fields).split())
    return _tidy(template.format_map(_Fields(fields)))


def _user_fields(user: Mapping[str, Any]) -> dict[str, Any]:
    fields = _clean(user)
    fields["gender"], fields["pronoun"] = GENDER_WORDS.get(str(fields.get("gender", "")), ("", "they"))
    return fields


def _item_fields(item: Mapping[str, Any]) -> dict[str, Any]:
    fields = _clean(item)
    fields["genres"] = str(fields.get("genres", "")).replace("|", ", ")
    return fields


def has_attributes(user: Mapping[str, Any], t: Templates) -> bool:
    """Whether any attribute the user template reads is set (not empty, NaN or a 0 age)."""
    names = template_fields(t.user) - {"pronoun"}
    return any(not _empty(v) and v != 0 for k, v in user.items() if k in names)


def render_user_text(user: Mapping[str, Any], t: Templates) -> str:
    """User attributes as a phrase, e.g. "A 24-year-old male technician"; no attributes → `anonymous_user`."""
    if not has_attributes(user, t):
        return t.anonymous_user
    return render_template(t.user, _user_fields(user))


def pronoun_for(user: Mapping[str, Any]) -> str:
    return _user_fields(user)["pronoun"]


def render_item_text(item: Mapping[str, Any], t: Templates) -> str:
    """The candidate side, e.g. "Heat (1995), Action, Crime, Thriller"."""
    return render_template(t.candidate, _item_fields(item))


def render_history_item(item: Mapping[str, Any], rating: float, t: Templates) -> str:
    return render_template(t.history_item, {**_item_fields(item), "rating": rating})


def render_history_items(item: Mapping[str, Any], ratings: Iterable[float], t: Templates) -> list[str]:
    """`render_history_item` of one item at each of `ratings`, the item's fields prepared once."""
    fields = _item_fields(item)
    return [render_template(t.history_item, {**fields, "rating": rating}) for rating in ratings]


@functools.lru_cache(maxsize=16)
def prompt_layout(template: str) -> tuple[tuple[str, str | None], ...]:
    """The prompt template as (literal, field) pairs in order; a Jinja prompt is rendered once with placeholders,
    so it may place the fields but not transform them."""
    if not is_jinja(template):
        return tuple((literal, field) for literal, field, _, _ in string.Formatter().parse(template))
    try:
        text = _jinja(template).render(**{f: _SENTINEL.format(f) for f in PROMPT_FIELDS})
    except jinja2.TemplateError as err:
        raise ValueError(f"data.templates.prompt: {err}".splitlines()[0]) from None
    pieces = text.split("\x00")  # literal, field, literal, field, ..., literal
    fields = pieces[1::2]
    if any(f not in PROMPT_FIELDS for f in fields) or "candidate" not in fields:
        raise ValueError("data.templates.prompt: a Jinja prompt must insert user/history/pronoun/candidate unchanged")
    layout = [(literal, field) for literal, field in zip(pieces[::2], fields, strict=False)]
    return (*layout, (pieces[-1], None)) if pieces[-1] else tuple(layout)


def prompt_segments(user_text: str, pronoun: str, history: list[str], candidate_text: str, t: Templates) -> list[str]:
    """The prompt as consecutive segments (template literals, user, each history item, candidate).

    Joined they are the prompt text; each segment starts with the space that precedes it, so tokenizing the
    segments one by one matches tokenizing the text (and lets the encoder cache and budget them).
    """
    history_segments: list[str] = []
    for i, piece in enumerate(history):
        history_segments += [t.history_sep, piece] if i else [piece]
    values = {
        "user": [user_text],
        "pronoun": [pronoun],
        "candidate": [candidate_text],
        "history": history_segments or [t.empty_history],
    }
    raw: list[str] = []
    for literal, field in prompt_layout(t.prompt):
        raw += ([literal] if literal else []) + (values[field] if field else [])
    segments: list[str] = []
    for segment in raw:
        if segments and segments[-1].endswith(" "):  # the space belongs to the next word
            segments[-1], segment = segments[-1][:-1], " " + segment
        segments.append(segment)
    return [s for s in segments if s]


def render_prompt(user_text: str, pronoun: str, history: list[str], candidate_text: str, t: Templates) -> str:
    """The cross-encoding prompt as one string; `history` is oldest → newest."""
    return "".join(prompt_segments(user_text, pronoun, history, candidate_text, t))
