"""The LM-based recipes' rows for benchmarks/quality.py's MODELS table (issue 15): same format, same tuning budget
as the classic row each one extends (SASRec's grid for the SASRec variants, DeepFM's for the text DeepFMs).

    from benchmarks.lm_models import LM_MODELS   # in quality.py: MODELS += LM_MODELS
"""

from __future__ import annotations

SASREC_GRID = {"model.dropout": [0.2, 0.5], "task.optimizer.lr": [1e-3, 2e-3]}
DEEPFM_GRID = {"task.optimizer.lr": [3e-3, 1e-2], "task.optimizer.weight_decay": [0.0, 0.1]}

LM_MODELS: list[dict] = [
    # P1: SASRec whose item vectors read the item's text through MiniLM (+ an ID embedding, or text alone)
    {"protocol": "P1", "model": "sasrec_hybrid", "lm_based": True, "id_tokens": True,
     "overrides": ["experiment=p1_sasrec_hybrid"], "grid": SASREC_GRID},
    {"protocol": "P1", "model": "sasrec_text", "lm_based": True, "id_tokens": False,
     "overrides": ["experiment=p1_sasrec_text"], "grid": SASREC_GRID},
    # P2: DeepFM + MiniLM user / item text fields (+ liked / disliked history-text profiles)
    {"protocol": "P2", "model": "deepfm_text", "lm_based": True, "id_tokens": True,
     "overrides": ["experiment=p2_deepfm_text"], "grid": DEEPFM_GRID},
    {"protocol": "P2", "model": "deepfm_text_profile", "lm_based": True, "id_tokens": True,
     "overrides": ["experiment=p2_deepfm_text_profile"], "grid": DEEPFM_GRID},
    # P3: the text-only SASRec ranks held-out (cold) items it never trained on
    {"protocol": "P3", "model": "sasrec_text", "lm_based": True, "id_tokens": False,
     "overrides": ["experiment=p3_sasrec_text"], "grid": SASREC_GRID},
]  # fmt: skip
