"""Behaviour → text: templates, the segment encoder's token budget, and tokenization consistency."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from m6rec.data.protocol.history import RaggedHistory, recent_training_history, recent_training_rows
from m6rec.data.text.batch_prompts import encode_batch, encode_parts
from m6rec.data.text.encode import SegmentEncoder
from m6rec.data.text.render import (
    Templates,
    prompt_segments,
    render_history_item,
    render_item_text,
    render_prompt,
    render_user_text,
)
from m6rec.data.text.tokenizer import train_bpe_tokenizer
from tests.oracle import encode_one, training_history_by_loop

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
    [
        ({"prompt": "{user} likes {history}"}, r"data.templates.prompt: must contain \{candidate\}"),
        ({"prompt": "{user} {salary} {candidate}"}, r"data.templates.prompt: unknown field\(s\) \['salary'\]"),
        ({"candidate": "{title"}, "data.templates.candidate: "),
        ({"user": "jinja:A\n{{ age }"}, r"^data.templates.user: Jinja syntax error at line 2: unexpected '}'$"),
        ({"prompt": "{{ user | upper }} {{ candidate }}"}, r"data.templates.prompt: a Jinja prompt must insert"),
    ],
)
def test_bad_templates_name_the_config_key(override, message):
    with pytest.raises(ValueError, match=message):
        Templates(**override)


def test_template_fields_are_checked_against_the_tables():
    users = ["user_id", "age", "gender", "occupation"]
    Templates(candidate="{title} by {brand}", history_item="{title}").check_fields(["item_id", "title", "brand"], users)
    with pytest.raises(ValueError, match=r"data.templates.user: unknown field\(s\) \['salary'\]; the user table has"):
        Templates(user="{age} {salary}").check_fields(["item_id", "title"], ["user_id", "age"])
    with pytest.raises(ValueError, match=r"data.templates.history_item: unknown field\(s\) \['year'\]"):
        Templates(history_item="{title} ({year})").check_fields(["item_id", "title", "genres"], users)


def test_missing_values_are_tidied_and_any_column_can_be_named():
    bare = {"item_id": 9, "title": "Heat", "year": "", "genres": ""}
    assert render_item_text(bare, T) == "Heat"  # not "Heat (), "
    assert render_history_item(bare, 4.0, T) == "Heat (4/5)"
    assert render_item_text({"title": "Earbuds", "brand": float("nan")}, Templates(candidate="{title} ({brand})")) == (
        "Earbuds"
    )
    amazon = Templates(candidate="{title}, {category}")
    assert render_item_text({"title": "Earbuds", "category": "Headphones"}, amazon) == "Earbuds, Headphones"


def test_users_without_attributes_render_anonymously():
    assert render_user_text({"user_id": 3, "age": 0, "gender": "", "occupation": ""}, T) == "A user"
    assert render_user_text({"user_id": 3, "age": "25-34", "gender": "F", "occupation": "writer"}, T) == (
        "A 25-34-year-old female writer"
    )


def test_jinja_templates_render_like_their_format_twins():
    jinja = Templates(
        user="jinja:A {{ age }}-year-old {{ gender }} {{ occupation }}",
        history_item="{{ title }} ({{ '%.0f' | format(rating) }}/5)",
        candidate="{{ title }}{% if year %} ({{ year }}){% endif %}, {{ genres }}",
        prompt="{{ user }} rated {{ history }}. Will {{ pronoun }} enjoy {{ candidate }}?",
    )
    for item in (HEAT, {**HEAT, "year": ""}):
        assert render_item_text(item, jinja) == render_item_text(item, T)
    assert render_history_item(TOY, 5.0, jinja) == "Toy Story (5/5)"
    assert render_user_text(USER, jinja) == render_user_text(USER, T)
    args = ("A user", "he", ["X (4/5)", "Y (2/5)"], "Z")
    assert prompt_segments(*args, jinja) == prompt_segments(*args, T)
    assert render_item_text(HEAT, Templates(candidate="jinja:{{ title | upper }}")) == "HEAT"  # filters work


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
    (ids,) = encode_parts(enc, [(user, "he", history, cand)])
    assert len(ids) <= 90
    text = tokenizer.decode(ids)
    assert text.endswith("Will he enjoy Heat (1995), Action?")  # the candidate is never cut
    kept = text.split(" rated ")[1].split(". Will")[0].split("; ")
    assert kept == history[-len(kept) :] and 0 < len(kept) < 20  # a suffix: the newest items survive
    assert list(ids) == tokenizer(text, add_special_tokens=False)["input_ids"]  # same as tokenizing the text
    # budget is tight: one more item would not fit
    longer = render_prompt(user, "he", history[-len(kept) - 1 :], cand, T)
    assert len(tokenizer(longer)["input_ids"]) > 90


def test_encoder_refuses_a_budget_too_small_for_the_candidate(tokenizer):
    with pytest.raises(ValueError, match="data.max_length=8 is too small"):
        encode_parts(SegmentEncoder(tokenizer, T, max_length=8), [("A user", "he", ["Movie 1 (1/5)"], "Heat, Action")])


# ------------------------------------------------------------------ vectorised encoding (batch_prompts)
ODD_TEMPLATES = [
    T,
    Templates(prompt="{history} | {user}: {pronoun}?{candidate}", history_sep=" / "),
    Templates(prompt="Q:{candidate} after{history} by {user}", history_sep=";", empty_history="-"),
    Templates(history_sep="  ", prompt="{user}{history} {candidate} "),
    Templates(prompt="{{ user }} rated {{ history }}.\nWill {{ pronoun }} enjoy {{ candidate }}?"),
]


@pytest.mark.parametrize("templates", ODD_TEMPLATES)
@pytest.mark.parametrize("max_length", [30, 64, 400])
def test_encode_batch_equals_encoding_each_prompt(tokenizer, templates: Templates, max_length: int):
    """Same ids as the one-prompt oracle for every sample, including texts the assembly hands to the exact rule
    (empty, or ending in a space) and budgets that drop some, all or none of the history."""
    rng = np.random.default_rng(0)
    users = [("A 24-year-old male technician", "he"), ("A user", "they"), ("", "they"), ("Someone ", "she")]
    candidates = ["Heat (1995), Action", "Toy Story", "Café", "", "Fargo "]
    pieces = [f"Movie {i} ({i % 5 + 1}/5)" for i in range(12)] + ["Odd ", ""]
    n = 200
    lengths = rng.integers(0, 13, n)
    history = RaggedHistory(np.concatenate([[0], np.cumsum(lengths)]), np.arange(lengths.sum()))
    piece_code = rng.integers(0, len(pieces), int(lengths.sum()))
    user_code, candidate_code = rng.integers(0, len(users), n), rng.integers(0, 4, n)  # candidate "" breaks budgets
    candidate_code[rng.random(n) < 0.1] = 4

    reference = SegmentEncoder(tokenizer, templates, max_length)

    def one(j: int) -> np.ndarray:
        h = [pieces[c] for c in piece_code[history.offsets[j] : history.offsets[j + 1]]]
        return encode_one(reference, *users[user_code[j]], h, candidates[candidate_code[j]])

    expected, errors = [], []
    for j in range(n):
        try:
            expected.append(one(j))
        except ValueError as err:
            errors.append(str(err))
    encoder = SegmentEncoder(tokenizer, templates, max_length)
    args = (users, user_code, candidates, candidate_code, pieces, history, piece_code)
    if errors:  # the same one-line error as encoding that sample alone
        with pytest.raises(ValueError, match=rf"^data.max_length={max_length} is too small"):
            encode_batch(encoder, *args)
        return
    got = encode_batch(encoder, *args)
    assert len(got) == n and all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))
    assert max(len(x) for x in got) <= max_length


@pytest.mark.parametrize("max_len", [0, 1, 3, 50])
def test_ragged_history_equals_recent_training_history(max_len: int):
    rng = np.random.default_rng(1)
    n = 400
    inter = pd.DataFrame(
        {
            "user_id": rng.integers(1, 9, n) * 1000,
            "item_id": rng.integers(1, 30, n),
            "rating": rng.integers(1, 6, n).astype(np.float32),
            "timestamp": rng.integers(0, 40, n) * 10**9,
        }
    )
    is_train = rng.random(n) < 0.7
    ragged = recent_training_rows(inter, is_train, max_len)
    as_lists = ragged.as_lists(inter["item_id"].to_numpy(), inter["rating"].to_numpy())
    assert as_lists == recent_training_history(inter, is_train, max_len)
    assert as_lists == training_history_by_loop(inter, is_train, max_len)
    assert (sum(map(len, as_lists)) == 0) == (max_len == 0)  # not trivially empty
