"""Behaviour → text: templates, the segment encoder's token budget, and tokenization consistency."""

from __future__ import annotations

from pathlib import Path

import pytest

from m6rec.data.encode import SegmentEncoder
from m6rec.data.render import (
    Templates,
    prompt_segments,
    render_history_item,
    render_item_text,
    render_prompt,
    render_user_text,
)
from m6rec.data.tokenizer import train_bpe_tokenizer

T = Templates()
USER = {"user_id": 1, "age": 24, "gender": "M", "occupation": "technician"}
HEAT = {"item_id": 2, "title": "Heat", "year": "1995", "genres": "Action|Crime|Thriller"}
TOY = {"item_id": 1, "title": "Toy Story", "year": "1995", "genres": "Animation|Children's|Comedy"}


def test_default_templates_render_the_m6rec_sentence():
    history = [render_history_item(TOY, 5.0, T), render_history_item(HEAT, 3.0, T)]
    text = render_prompt(render_user_text(USER, T), "he", history, render_item_text(HEAT, T), T)
    assert text == (
        "A 24-year-old male technician rated Toy Story (5/5); Heat (3/5). "
        "Will he enjoy Heat (1995), Action, Crime, Thriller?"
    )
    assert render_prompt("A user", "they", [], "Heat", T) == "A user rated nothing yet. Will they enjoy Heat?"
    assert render_item_text({**HEAT, "year": ""}, T) == "Heat, Action, Crime, Thriller"


def test_segments_join_to_the_text_and_carry_their_leading_space():
    segs = prompt_segments("A user", "he", ["X (4/5)", "Y (2/5)"], "Z", T)
    assert segs == ["A user", " rated", " X (4/5)", ";", " Y (2/5)", ". Will", " he", " enjoy", " Z", "?"]


@pytest.mark.parametrize(
    ("override", "message"),
    [({"user": "{age} {salary}"}, r"data.templates.user: unknown field\(s\) \['salary'\]"),
     ({"prompt": "{user} likes {history}"}, r"data.templates.prompt: must contain \{candidate\}"),
     ({"candidate": "{title"}, "data.templates.candidate: ")],
)
def test_bad_templates_name_the_config_key(override, message):
    with pytest.raises(ValueError, match=message):
        Templates(**override)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    corpus = ["A 24-year-old male technician rated nothing yet. Will he enjoy Heat (1995), Action?"] * 5
    corpus += [f"Movie {i} ({i % 5 + 1}/5)" for i in range(200)]
    return train_bpe_tokenizer(corpus, 300, tmp_path_factory.mktemp("tok"))


def test_tokenizer_is_cached_and_round_trips(tokenizer, tmp_path: Path):
    text = "A 24-year-old male technician rated Movie 7 (3/5). Will he enjoy Café (1995)?"
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text  # byte-level: any text round-trips
    assert tokenizer.pad_token == "<pad>" and tokenizer.pad_token_id == 0


def test_encoder_matches_tokenizing_the_text_and_keeps_newest_history(tokenizer):
    history = [f"Movie {i} ({i % 5 + 1}/5)" for i in range(20)]
    enc = SegmentEncoder(tokenizer, T, max_length=90)
    user, cand = "A 24-year-old male technician", "Heat (1995), Action"
    ids = enc.encode(user, "he", history, cand)
    assert len(ids) <= 90
    text = tokenizer.decode(ids)
    assert text.endswith("Will he enjoy Heat (1995), Action?")  # the candidate is never cut
    kept = text.split(" rated ")[1].split(". Will")[0].split("; ")
    assert kept == history[-len(kept):] and 0 < len(kept) < 20  # a suffix: the newest items survive
    assert list(ids) == tokenizer(text, add_special_tokens=False)["input_ids"]  # same as tokenizing the text
    # budget is tight: one more item would not fit
    longer = render_prompt(user, "he", history[-len(kept) - 1:], cand, T)
    assert len(tokenizer(longer)["input_ids"]) > 90


def test_encoder_refuses_a_budget_too_small_for_the_candidate(tokenizer):
    with pytest.raises(ValueError, match="data.max_length=8 is too small"):
        SegmentEncoder(tokenizer, T, max_length=8).encode("A user", "he", ["Movie 1 (1/5)"], "Heat (1995), Action")
