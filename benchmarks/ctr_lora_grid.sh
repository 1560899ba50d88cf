#!/usr/bin/env bash
# The ctr_lora recipe search of docs/lm_recipes.md: 13 one-change variants of session 4's recipe (64-d blocks), seed 0,
# each chosen by its best validation AUC (test AUC reported after the fact). Session 5 ran it on one GPU, 15 at once:
#   bash benchmarks/ctr_lora_grid.sh trainer=gpu trainer.precision=32-true      # extra overrides go to every run
# Runs go to logs/ctr_lora_grid/<name>; the table is printed at the end (benchmarks/results/ctr_lora_grid.json).
set -euo pipefail
cd "$(dirname "$0")/.."
BASE="experiment=ctr_lora model.backbone.config.n_embd=64 seed=0 logger=csv"
declare -A GRID=(
  [base]=""
  [lr3e-3]="task.optimizer.lr=3e-3"
  [e128]="model.backbone.config.n_embd=128"
  [e128_lr2e-3]="model.backbone.config.n_embd=128 task.optimizer.lr=2e-3"
  [layers4]="model.backbone.config.n_layer=4"
  [embdrop]="model.backbone.config.embd_pdrop=0.1"
  [embdrop_ep5]="model.backbone.config.embd_pdrop=0.1 trainer.max_epochs=5"
  [r64]="peft.r=64 peft.lora_alpha=128"
  [fullft]="peft=none"
  [hist20]="data.history_len=20 data.max_length=128"
  [mean]="task.pooling=mean"
  [wd0.1_ep5]="task.optimizer.weight_decay=0.1 trainer.max_epochs=5"
  [b256_lr3e-3_ep6]="data.batch_size=256 task.optimizer.lr=3e-3 trainer.max_epochs=6"
)
for name in "${!GRID[@]}"; do
  # shellcheck disable=SC2086  # the overrides are words
  python run.py $BASE ${GRID[$name]} "$@" hydra.run.dir="logs/ctr_lora_grid/$name"
done
python - <<'PY'
import json, pathlib
rows = [(json.loads(p.read_text()), p.parent.name) for p in pathlib.Path("logs/ctr_lora_grid").glob("*/metrics.json")]
print("| variant | val AUC | test AUC |\n|---|---:|---:|")
for m, name in sorted(rows, key=lambda r: -r[0]["val/auc"]):
    print(f"| {name} | {m['val/auc']:.4f} | {m['test/auc']:.4f} |")
PY
