"""Content baseline for cold items: TF-IDF of each item's title words and genres; a user is the mean TF-IDF vector
of the items in the query's history; score = cosine similarity. Needs no interaction with the scored item."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from m6rec.data.id_sequences import Catalogue
from m6rec.models.closed_form import history_matrix


def item_tokens(title: str, genres: str) -> list[str]:
    """Lower-cased alphanumeric words of the title, plus one `genre:<name>` token per `|`-separated genre."""
    words = re.findall(r"[a-z0-9]+", title.lower()) if isinstance(title, str) else []
    names = genres.split("|") if isinstance(genres, str) else []  # missing metadata (NaN): no tokens
    return words + [f"genre:{g.strip().lower()}" for g in names if g.strip()]


def tfidf(documents: Sequence[Sequence[str]]) -> np.ndarray:
    """L2-normalised TF-IDF rows (documents × sorted vocabulary): tf = count in the document, idf = ln((1 + n) /
    (1 + df)) + 1 (scikit-learn's smoothed idf); an empty document is a zero row."""
    vocabulary = {token: j for j, token in enumerate(sorted({t for doc in documents for t in doc}))}
    counts = np.zeros((len(documents), len(vocabulary)), np.float64)
    for row, doc in enumerate(documents):
        for token in doc:
            counts[row, vocabulary[token]] += 1.0
    idf = np.log((1.0 + len(documents)) / (1.0 + (counts > 0).sum(0))) + 1.0
    weights = counts * idf
    norms = np.linalg.norm(weights, axis=1, keepdims=True)
    return weights / np.where(norms > 0, norms, 1.0)


class TfidfContent(nn.Module):
    """Item vectors = `tfidf` of `item_tokens(title, genres)` over the whole catalogue's metadata (no interaction
    data); query = the L2-normalised mean of the distinct history items' vectors (zero for an empty history)."""

    def __init__(self, catalogue: Catalogue):
        super().__init__()
        meta = catalogue.items
        docs = [item_tokens(t, g) for t, g in zip(meta["title"].tolist(), meta["genres"].tolist(), strict=True)]
        matrix = torch.as_tensor(tfidf(docs), dtype=torch.float32)
        self.register_buffer("vectors", torch.cat([torch.zeros(1, matrix.size(1)), matrix]), persistent=False)

    def query_vectors(self, batch: dict[str, Tensor]) -> Tensor:
        seen = history_matrix(batch["history"], len(self.vectors) - 1)
        mean = (seen @ self.vectors[1:]) / seen.sum(1, keepdim=True).clamp_min(1)
        return mean / mean.norm(dim=1, keepdim=True).clamp_min(1e-12)

    def item_vectors(self) -> Tensor:
        return self.vectors[1:]
