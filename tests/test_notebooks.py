"""Every notebook executes top to bottom (on the fixture dataset), so none can rot; the committed copies carry small
outputs (made by `python notebooks/execute.py` on the real data) so that they show something when opened."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from hydra.utils import instantiate
from nbclient import NotebookClient

from tests.helpers import ROOT, compose_config

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
MAX_OUTPUT_BYTES = 50_000


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_committed_executed_with_small_outputs(path: Path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3" and all(c.get("id") for c in nb.cells)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))  # run once, top to bottom
    assert all(c.outputs for c in code), "every code cell shows its result"
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error" or o.get("name") == "stderr"]
    assert len(json.dumps(outputs)) < MAX_OUTPUT_BYTES
    assert sum("image/png" in o.get("data", {}) for o in outputs) <= 1
    assert "/work/" not in json.dumps(outputs) and "/tmp/" not in json.dumps(outputs)  # repository-relative paths


def test_behaviour_notebook_shows_the_prompts_the_run_trains_on(ml100k_dir: Path, monkeypatch, tmp_path: Path):
    monkeypatch.setenv("M6REC_NOTEBOOK_DATA_ROOT", str(ml100k_dir))
    monkeypatch.setenv("M6REC_DATA", str(tmp_path))
    path = ROOT / "notebooks" / "behaviour_as_text.ipynb"
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))

    cfg = compose_config(["experiment=ctr_lora", f"data.root={ml100k_dir}", f"paths.data_dir={tmp_path}"], tmp_path)
    datamodule = instantiate(cfg.data)  # the tokenizer cached by the notebook's run
    datamodule.setup()
    train = datamodule.datasets["train"]
    for i in range(5):  # the first five training samples, decoded from the ids the model is trained on
        line = f"label={int(train.labels[i])}   {datamodule.tokenizer.decode(train.input_ids[i])}\n"
        assert line in printed
    assert f"vocabulary {len(datamodule.tokenizer)}" in printed
