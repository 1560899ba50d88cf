"""The prompts of a behaviour log's samples: user, history and candidate texts rendered from the tables once per
distinct value, then every prompt tokenized under the token budget by `encode_batch`."""

from __future__ import annotations

import numpy as np
import pandas as pd

from m6rec.data.sources.tables import InteractionTables
from m6rec.data.text.batch_prompts import RaggedHistory, encode_batch
from m6rec.data.text.encode import SegmentEncoder
from m6rec.data.text.render import Templates, pronoun_for, render_history_item, render_item_text, render_user_text


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


def encode_prompts(
    tables: InteractionTables,
    t: Templates,
    tokenizer,
    max_length: int,
    samples: pd.DataFrame,
    histories: list[list[tuple[int, float]]] | RaggedHistory,
) -> list[np.ndarray]:
    """Token ids of every sample's prompt, oldest history items dropped to fit `max_length` (as SegmentEncoder.encode,
    vectorised by `encode_batch`); `histories` as lists of (item, rating) or as rows of `samples`."""
    if isinstance(histories, RaggedHistory):
        lengths, rows = histories.lengths(), histories.rows
        hist_items, hist_ratings = samples["item_id"].to_numpy()[rows], samples["rating"].to_numpy()[rows]
    else:
        lengths = np.array([len(h) for h in histories], np.int64)
        hist_items = np.array([i for h in histories for i, _ in h], np.int64)
        hist_ratings = np.array([r for h in histories for _, r in h], np.float64)
    history = RaggedHistory(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), np.arange(lengths.sum()))
    user_code, user_ids = pd.factorize(samples["user_id"].to_numpy())
    users = {row["user_id"]: row for row in tables.users.to_dict("records")}
    user_parts = [(render_user_text(users[u], t), pronoun_for(users[u])) if u in users else
                  (t.anonymous_user, "they") for u in user_ids.tolist()]  # fmt: skip
    item_code, item_ids = pd.factorize(samples["item_id"].to_numpy())
    items = tables.items.set_index("item_id", drop=False)
    item_rows = dict(zip(items.index.tolist(), items.to_dict("records"), strict=True))
    candidates = [render_item_text(item_rows[i], t) for i in item_ids.tolist()]
    item_of, item_keys = pd.factorize(hist_items)  # a history piece = a distinct (item, rating)
    rating_of, rating_keys = pd.factorize(hist_ratings)
    n_ratings = max(len(rating_keys), 1)
    piece_code, piece_keys = pd.factorize(item_of.astype(np.int64) * n_ratings + rating_of)
    pieces = [render_history_item(item_rows[item_keys[k // n_ratings]], float(rating_keys[k % n_ratings]), t)
              for k in piece_keys.tolist()]  # fmt: skip
    encoder = SegmentEncoder(tokenizer, t, max_length)
    return encode_batch(encoder, user_parts, user_code, candidates, item_code, pieces, history, piece_code)


def covering_parts(parts: list[tuple[str, str, list[str], str]]) -> list[tuple[str, str, list[str], str]]:
    """A few thousand synthetic prompts in which every distinct user, history item and candidate appears, so one
    batch call tokenizes (almost) every segment the real prompts use; rare misses are tokenized on demand."""
    users = sorted({(u, p) for u, p, _, _ in parts})
    pieces = sorted({piece for _, _, history, _ in parts for piece in history}) or [""]
    candidates = sorted({c for _, _, _, c in parts})
    n = max(len(users), len(pieces), len(candidates))
    return [(*users[k % len(users)], pieces[k % len(pieces) : k % len(pieces) + 2], candidates[k % len(candidates)])
            for k in range(n)]  # fmt: skip
