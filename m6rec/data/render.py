"""Behaviour → text, the M6-Rec way: user attributes, recent history of item titles, the candidate item.

Templates are Python format strings set in config (`data.templates.*`), e.g. the default joint prompt reads
"A 24-year-old male technician rated Toy Story (5/5); Heat (4/5). Will he enjoy Fargo (1996), Crime, Drama?".
"""

from __future__ import annotations

import functools
import string
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

GENDER_WORDS = {"M": ("male", "he"), "F": ("female", "she")}


@dataclass(frozen=True)
class Templates:
    """Format strings for each part of a rendered event; fields named in braces come from the data."""

    user: str = "A {age}-year-old {gender} {occupation}"
    history_item: str = "{title} ({rating:.0f}/5)"
    candidate: str = "{title} ({year}), {genres}"
    prompt: str = "{user} rated {history}. Will {pronoun} enjoy {candidate}?"
    history_sep: str = "; "
    empty_history: str = "nothing yet"
    anonymous_user: str = "A user"  # for datasets without user attributes

    FIELDS = {
        "user": {"age", "gender", "occupation", "pronoun"},
        "history_item": {"title", "year", "genres", "rating"},
        "candidate": {"title", "year", "genres"},
        "prompt": {"user", "history", "pronoun", "candidate"},
    }

    def __post_init__(self) -> None:
        for name, allowed in self.FIELDS.items():
            try:
                fields = {f for _, f, _, _ in string.Formatter().parse(getattr(self, name)) if f}
            except ValueError as err:
                raise ValueError(f"data.templates.{name}: {err}") from err
            unknown = fields - allowed
            if unknown:
                raise ValueError(f"data.templates.{name}: unknown field(s) {sorted(unknown)}; use {sorted(allowed)}")
        if "{candidate}" not in self.prompt:
            raise ValueError("data.templates.prompt: must contain {candidate}")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> Templates:
        return cls(**dict(cfg or {}))

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _user_fields(user: Mapping[str, Any]) -> dict[str, Any]:
    gender, pronoun = GENDER_WORDS.get(str(user["gender"]), ("", "they"))
    return {"age": user["age"], "gender": gender, "occupation": user["occupation"], "pronoun": pronoun}


def _item_fields(item: Mapping[str, Any]) -> dict[str, Any]:
    return {"title": item["title"], "year": item["year"], "genres": str(item["genres"]).replace("|", ", ")}


def render_user_text(user: Mapping[str, Any], t: Templates) -> str:
    """User attributes as a phrase, e.g. "A 24-year-old male technician"."""
    return " ".join(t.user.format(**_user_fields(user)).split())


def pronoun_for(user: Mapping[str, Any]) -> str:
    return _user_fields(user)["pronoun"]


def render_item_text(item: Mapping[str, Any], t: Templates) -> str:
    """The candidate side, e.g. "Heat (1995), Action, Crime, Thriller"."""
    return t.candidate.format(**_item_fields(item)).replace(" ()", "")


def render_history_item(item: Mapping[str, Any], rating: float, t: Templates) -> str:
    return t.history_item.format(**_item_fields(item), rating=rating).replace(" ()", "")


@functools.lru_cache(maxsize=16)
def _parsed(template: str) -> list[tuple[str, str | None]]:
    return [(literal, field) for literal, field, _, _ in string.Formatter().parse(template)]


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
    for literal, field in _parsed(t.prompt):
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
