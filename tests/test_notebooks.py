"""Every notebook executes top to bottom (on the fixture dataset), so none can rot."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.helpers import ROOT

NOTEBOOKS = [ROOT / "notebooks" / "behaviour_as_text.ipynb"]  # ablation_analysis: test_ablation_notebook.py


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, ml100k_dir: Path, monkeypatch, tmp_path: Path):
    monkeypatch.setenv("M6REC_NOTEBOOK_DATA_ROOT", str(ml100k_dir))
    monkeypatch.setenv("M6REC_DATA", str(tmp_path))
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "label=" in printed and "Will" in printed
