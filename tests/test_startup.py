"""Startup stays lean: `run.py --help` composes and prints help without importing Lightning, peft or transformers."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import ROOT

HEAVY = ("lightning", "peft", "transformers", "wandb", "optuna", "matplotlib")


@pytest.mark.slow
def test_help_imports_no_heavy_module():
    probe = (
        "import runpy, sys\n"
        "sys.argv = ['run.py', '--help']\n"
        "try:\n    runpy.run_path('run.py', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "== Config ==" in proc.stdout or "Powered by Hydra" in proc.stdout  # the help itself was printed
    assert proc.stdout.strip().splitlines()[-1] == "[]"
