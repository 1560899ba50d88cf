"""The prompts of a behaviour log's samples: each distinct user, candidate item and history piece (item, rating)
rendered once from the tables, then every prompt tokenized under the token budget by `encode_batch`."""

from __future__ import annotations

import numpy as np
import pandas as pd

from m6rec.data.protocol.history import RaggedHistory
from m6rec.data.ragged import Ragged
from m6rec.data.sources.tables import InteractionTables
from m6rec.data.text.batch_prompts import encode_batch
from m6rec.data.text.encode import SegmentEncoder
from m6rec.data.text.render import (
    Templates,
    pronoun_for,
    render_history_item,
    render_history_items,
    render_item_text,
    render_user_text,
)


def prompt_parts(
    tables: InteractionTables, t: Templates, samples: pd.DataFrame, histories: list[list[tuple[int, float]]]
) -> list[tuple[str, str, list[str], str]]:
    """(user text, pronoun, history pieces, candidate text) of every sample; each distinct piece rendered once."""
    users = {row["user_id"]: row for row in tables.users.to_dict("records")}
    items = {row["item_id"]: row for row in tables.items.to_dict("records")}
    user_text = {u: (render_user_text(row, t), pronoun_for(row)) for u, row in users.items()}
    anonymous = (t.anonymous_user, "they")  # datasets without a user table (ML-20M/25M/latest)
    item_text = {i: render_item_text(row, t) for i, row in items.items()}
    piece: dict[tuple[int, float], str] = {}
    parts = []
    for u, i, hist in zip(samples["user_id"].tolist(), samples["item_id"].tolist(), histories, strict=True):
        pieces = []
        for key in hist:
            if key not in piece:
                piece[key] = render_history_item(items[key[0]], key[1], t)
            pieces.append(piece[key])
        parts.append((*user_text.get(u, anonymous), pieces, item_text[i]))
    return parts


def _history_source(
    samples: pd.DataFrame, histories: list[list[tuple[int, float]]] | RaggedHistory
) -> tuple[RaggedHistory, np.ndarray, np.ndarray]:
    """(history over rows of a source, the source's item ids, its ratings): `samples` itself for a RaggedHistory."""
    if isinstance(histories, RaggedHistory):
        return histories, samples["item_id"].to_numpy(), samples["rating"].to_numpy()
    lengths = np.array([len(h) for h in histories], np.int64)
    items = np.array([i for h in histories for i, _ in h], np.int64)
    ratings = np.array([r for h in histories for _, r in h], np.float64)
    return RaggedHistory(np.concatenate([[0], np.cumsum(lengths)]), np.arange(len(items))), items, ratings


def _render_pieces(
    item_rows: dict, item_keys: np.ndarray, rating_keys: np.ndarray, piece_keys: np.ndarray, t: Templates
) -> list[str]:
    """The text of each piece key (item index × len(rating_keys) + rating index), each item's fields prepared once."""
    n_ratings = max(len(rating_keys), 1)
    pieces: list[str] = [""] * len(piece_keys)
    order = np.argsort(piece_keys, kind="stable")
    items = piece_keys[order] // n_ratings
    for group in np.split(order, np.flatnonzero(np.diff(items)) + 1) if len(order) else []:
        keys = piece_keys[group]
        ratings = [float(rating_keys[k % n_ratings]) for k in keys.tolist()]
        texts = render_history_items(item_rows[item_keys[keys[0] // n_ratings]], ratings, t)
        for j, text in zip(group.tolist(), texts, strict=True):
            pieces[j] = text
    return pieces


def encode_prompts(
    tables: InteractionTables,
    t: Templates,
    tokenizer,
    max_length: int,
    samples: pd.DataFrame,
    histories: list[list[tuple[int, float]]] | RaggedHistory,
) -> Ragged:
    """Token ids of every sample's prompt, oldest history items dropped to fit `max_length` (`encode_batch`);
    `histories` as lists of (item, rating) or as rows of `samples`."""
    history, source_items, source_ratings = _history_source(samples, histories)
    user_code, user_ids = pd.factorize(samples["user_id"].to_numpy())
    users = tables.users.set_index("user_id", drop=False)
    user_rows = dict(zip(users.index.tolist(), users.to_dict("records"), strict=True))
    user_parts = [
        (render_user_text(user_rows[u], t), pronoun_for(user_rows[u])) if u in user_rows else (t.anonymous_user, "they")
        for u in user_ids.tolist()
    ]
    items = tables.items.set_index("item_id", drop=False)
    item_rows = dict(zip(items.index.tolist(), items.to_dict("records"), strict=True))
    item_code, item_ids = pd.factorize(samples["item_id"].to_numpy())
    candidates = [render_item_text(item_rows[i], t) for i in item_ids.tolist()]
    # a history piece = a distinct (item, rating) of the source rows some history uses, rendered once
    used = np.zeros(len(source_items), bool)
    used[history.rows] = True
    item_of, item_keys = pd.factorize(source_items[used])
    rating_of, rating_keys = pd.factorize(source_ratings[used])
    n_ratings = max(len(rating_keys), 1)
    code_of_used, piece_keys = pd.factorize(item_of.astype(np.int64) * n_ratings + rating_of)
    piece_code = np.zeros(len(source_items), np.int32)
    piece_code[used] = code_of_used
    del used, item_of, rating_of, code_of_used
    pieces = _render_pieces(item_rows, item_keys, rating_keys, piece_keys, t)
    encoder = SegmentEncoder(tokenizer, t, max_length)
    return encode_batch(encoder, user_parts, user_code, candidates, item_code, pieces, history, piece_code)
