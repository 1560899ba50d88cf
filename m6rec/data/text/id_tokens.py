"""P5 / OpenP5-style ID tokens: one vocabulary entry per user ("<u_12>") and per item ("<i_345>"), placed in the prompt
beside the text by the templates' `{user_token}` / `{item_token}` fields (data.id_tokens=true)."""

from __future__ import annotations

from tokenizers import AddedToken
from transformers import PreTrainedTokenizerBase

from m6rec.data.sources.tables import InteractionTables

USER_TOKEN, ITEM_TOKEN = "user_token", "item_token"  # the template fields (columns added to the user / item table)


def user_token(user_id: int) -> str:
    return f"<u_{user_id}>"


def item_token(item_id: int) -> str:
    return f"<i_{item_id}>"


def with_id_columns(tables: InteractionTables) -> InteractionTables:
    """The same tables with a `user_token` column on the user table and an `item_token` column on the item table.

    Only catalogue ids (the user and item tables) get tokens: no interaction, hence nothing from validation or test,
    decides what the vocabulary holds."""
    items = tables.items.assign(**{ITEM_TOKEN: tables.items["item_id"].map(item_token)})
    users = tables.users.assign(**{USER_TOKEN: tables.users["user_id"].map(user_token).astype(object)})
    return InteractionTables(tables.interactions, items, users)


def without_id_columns(rows: list[dict]) -> list[dict]:
    """Table rows with the ID-token fields removed (they then render empty): the texts a BPE tokenizer trains on."""
    return [{k: v for k, v in row.items() if k not in (USER_TOKEN, ITEM_TOKEN)} for row in rows]


def add_id_tokens(tokenizer: PreTrainedTokenizerBase, tables: InteractionTables) -> PreTrainedTokenizerBase:
    """Add one token per user and item of `tables` (after the text vocabulary, users first; a token absorbs the space
    before it) and return the tokenizer; the model's embedding table is sized by len(tokenizer)."""
    names = [user_token(u) for u in tables.users["user_id"].tolist()]
    names += [item_token(i) for i in tables.items["item_id"].tolist()]
    tokenizer.add_tokens([AddedToken(n, lstrip=True, normalized=False) for n in names])
    return tokenizer


def id_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Vocabulary indices of every ID token the tokenizer holds (sorted)."""
    vocab = tokenizer.get_added_vocab()
    return sorted(i for name, i in vocab.items() if name.startswith(("<u_", "<i_")) and name.endswith(">"))
