from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.fixtures import make_log, write_grouplens

ROOT = Path(__file__).resolve().parents[1]
os.environ["WANDB_MODE"] = "disabled"
os.environ["M6REC_ROOT"] = str(ROOT)


@pytest.fixture(scope="session")
def ml100k_dir(tmp_path_factory) -> Path:
    """A small dataset in the exact GroupLens ML-100K format."""
    return write_grouplens(tmp_path_factory.mktemp("ml-100k"), make_log())


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest, and steadiest on a shared 2-core CPU, on one intra-op thread (`pytestmark =
    pytest.mark.usefixtures("one_thread")` in a test module)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
