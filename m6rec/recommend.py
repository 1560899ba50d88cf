"""Top-k recommendations for one user from a trained run (full or adapter-only checkpoint).

Usage: python -m m6rec.recommend --run <run dir> --user <id> [--k 10] [--candidates FILE] [--ckpt PATH] [--include-seen]
       [--trust-run-config]

A run directory may come from anyone: its config instantiates only `_target_`s inside ALLOWED_TARGETS unless
`--trust-run-config` (a target elsewhere could run arbitrary code), and checkpoints load with `weights_only=True`.

The run is rebuilt from its `config_resolved.yaml` exactly as run.py built it and the checkpoint is loaded through the
system's own checkpoint hooks. A CTR / rating run scores each candidate by the system's forward on the prompt evaluation
builds (the user's most recent interactions, of every split, + the candidate); a retrieval run by the cosine similarity
of the user's query embedding (built as evaluation builds it, over every split) with the candidate's item embedding.
Every item the user has interacted with (any split) is left out of the ranking unless --include-seen.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from m6rec.build import build_datamodule_and_system
from m6rec.data.datamodules.eval_history import ALL_SPLITS
from m6rec.systems.ctr import CTRSystem
from m6rec.systems.rating import RatingSystem
from m6rec.systems.retrieval import RetrievalSystem
from m6rec.utils.run_record import best_checkpoint

SCORING_SYSTEMS = (CTRSystem, RatingSystem)  # a forward that scores (user, item) prompts
EMBEDDING_SYSTEMS = (RetrievalSystem,)  # towers that embed user queries and items


ALLOWED_TARGETS = ("m6rec.", "torch.", "transformers.", "peft.", "lightning.")
BUILT_GROUPS = ("data", "model", "peft", "task")  # what build_datamodule_and_system instantiates


class RecommendError(ValueError):
    """A problem with the arguments: a missing run directory or checkpoint, an unknown user or item."""


def check_targets(cfg: DictConfig, source: Path) -> None:
    """Raise RecommendError naming the first `_target_` of the built groups outside ALLOWED_TARGETS."""

    def walk(node: object, key: str) -> None:
        if isinstance(node, DictConfig):
            target = node.get("_target_")
            if target is not None and not str(target).startswith(ALLOWED_TARGETS):
                raise RecommendError(
                    f"{source}: {key}._target_={target} is outside the allow-list "
                    f"{list(ALLOWED_TARGETS)}; --trust-run-config if you trust this run"
                )
            for k in node:
                walk(node._get_node(k), f"{key}.{k}")
        elif isinstance(node, ListConfig):
            for i, v in enumerate(node):
                walk(v, f"{key}[{i}]")

    for group in BUILT_GROUPS:
        if group in cfg:
            walk(cfg._get_node(group), group)


def load_run(
    run_dir: str | Path, ckpt: str | Path | None = None, trust_config: bool = False
) -> tuple[DictConfig, L.LightningDataModule, L.LightningModule]:
    """Rebuild a finished run's datamodule and system and load its best checkpoint (or `ckpt`); the config's targets
    must be inside ALLOWED_TARGETS unless `trust_config`."""
    run_dir = Path(run_dir)
    config = run_dir / "config_resolved.yaml"
    if not config.is_file():
        raise RecommendError(f"--run {run_dir}: no config_resolved.yaml (not a run directory?)")
    cfg = OmegaConf.load(config)
    if not trust_config:
        check_targets(cfg, config)
    if "backbone" not in cfg.task and "model" not in cfg.task:  # a run saved before task configs named their model part
        cfg.task.backbone = cfg.model.backbone
    path = Path(ckpt) if ckpt else _best_checkpoint(run_dir)
    datamodule, system = build_datamodule_and_system(cfg)
    if not isinstance(system, (*SCORING_SYSTEMS, *EMBEDDING_SYSTEMS)):
        raise RecommendError(
            f"--run {run_dir}: a {type(system).__name__} run (task_name={cfg.get('task_name')}); the "
            "recommender ranks with runs that score (user, item) prompts (task=ctr or task=rating) "
            "or embed users and items (task=retrieval)"
        )
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    system.on_load_checkpoint(checkpoint)  # as Lightning does: adapter-only checkpoints are completed here
    system.load_state_dict(checkpoint["state_dict"], strict=getattr(system, "strict_loading", True))
    return cfg, datamodule, system.eval()


def _best_checkpoint(run_dir: Path) -> Path:
    path = best_checkpoint(run_dir, last_ok=True)
    if path is not None:
        return path
    raise RecommendError(f"--run {run_dir}: no checkpoint (metrics.json best_checkpoint or checkpoints/last.ckpt)")


@torch.inference_mode()
def score_items(
    datamodule,
    system: L.LightningModule,
    user_id: int,
    item_ids: Sequence[int],
    batch_size: int = 256,
    before: int = ALL_SPLITS,
) -> torch.Tensor:
    """Each item's score for `user_id`: a CTR / rating system's forward on the (user, item) prompt, batched exactly
    like evaluation batches; a retrieval system's cosine similarity (see `_similarities`). The history holds the
    user's interactions in the splits before `before` (default all; `before=TEST` reproduces a loo test event)."""
    if isinstance(system, EMBEDDING_SYSTEMS):
        return _similarities(datamodule, system, user_id, item_ids, batch_size, before)
    collate, rows = datamodule.collate_fn(), datamodule.request_rows(user_id, list(item_ids), before)
    scores = [system(collate(rows[start : start + batch_size])).float() for start in range(0, len(rows), batch_size)]
    return torch.cat(scores) if scores else torch.empty(0)


def _similarities(
    datamodule, system: RetrievalSystem, user_id: int, item_ids: Sequence[int], batch_size: int, before: int
) -> torch.Tensor:
    """Cosine similarity of the user's query embedding (the query evaluation uses) with each item's embedding, items
    embedded `batch_size` at a time (bit-equal to evaluation's `queries @ item_embeddings.T` when batched alike)."""
    collate = datamodule.collate_fn()
    query = collate([{"input_ids": datamodule.encode_query(user_id, before), "item_id": -1, "user_id": user_id}])
    query = system.model.embed_queries(query["input_ids"], query["attention_mask"])
    tokens, items = datamodule.encode_items(item_ids), []
    for start in range(0, len(tokens), batch_size):
        rows = [
            {"input_ids": x, "item_id": i, "user_id": user_id}
            for x, i in zip(tokens[start : start + batch_size], item_ids[start : start + batch_size], strict=True)
        ]
        batch = collate(rows)
        items.append(system.model.embed_items(batch["input_ids"], batch["attention_mask"]))
    return (query @ torch.cat(items).T)[0].float() if items else torch.empty(0)


def recommend(
    datamodule, system, user_id: int, k: int = 10, candidates: Sequence[int] | None = None, include_seen: bool = False
) -> list[tuple[int, str, float]]:
    """Top-k (item id, title, score) for `user_id`: over `candidates`, else the whole catalogue minus every item
    the user has interacted with in any split (unless `include_seen`)."""
    inter, items = datamodule.interactions, datamodule.tables.items
    if user_id not in set(inter["user_id"].tolist()):
        raise RecommendError(f"--user {user_id}: not in the dataset's interactions")
    if candidates is None:
        seen = set() if include_seen else set(inter.loc[(inter["user_id"] == user_id).to_numpy(), "item_id"])
        candidates = [i for i in items["item_id"].tolist() if i not in seen]
    scores = score_items(datamodule, system, user_id, list(candidates))
    top = torch.argsort(scores, descending=True, stable=True)[:k].tolist()
    titles = dict(zip(items["item_id"].tolist(), items["title"].astype(str).tolist(), strict=True))
    return [(int(candidates[j]), titles[candidates[j]], float(scores[j])) for j in top]


def read_candidates(path: str | Path, known: set[int]) -> list[int]:
    """Item ids, one per line (blank lines and # comments skipped); an unknown id names its line."""
    out = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            item = int(text)
        except ValueError:
            raise RecommendError(f"{path}:{n}: not an item id: {text!r}") from None
        if item not in known:
            raise RecommendError(f"{path}:{n}: unknown item id {item}")
        out.append(item)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m m6rec.recommend", description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="a run directory (logs/<task>/runs/<time>)")
    parser.add_argument("--user", required=True, type=int, help="user id as in the dataset")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--candidates", help="file of item ids (one per line) to score instead of the catalogue")
    parser.add_argument("--ckpt", help="checkpoint to load (default: the run's best, else last.ckpt)")
    parser.add_argument("--include-seen", action="store_true", help="rank the items the user has rated too")
    parser.add_argument(
        "--trust-run-config",
        action="store_true",
        help="instantiate the run's config targets even outside " + ", ".join(ALLOWED_TARGETS),
    )
    args = parser.parse_args(argv)
    try:
        _, datamodule, system = load_run(args.run, args.ckpt, args.trust_run_config)
        known = set(datamodule.tables.items["item_id"].tolist())
        candidates = read_candidates(args.candidates, known) if args.candidates else None
        ranked = recommend(datamodule, system, args.user, args.k, candidates, args.include_seen)
    except RecommendError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    table = Table(title=f"Top {len(ranked)} for user {args.user}")
    for name, justify in (("rank", "right"), ("item", "right"), ("title", "left"), ("score", "right")):
        table.add_column(name, justify=justify)
    for rank, (item, title, score) in enumerate(ranked, 1):
        table.add_row(str(rank), str(item), title, f"{score:.4f}")
    Console().print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
