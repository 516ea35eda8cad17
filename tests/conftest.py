"""Shared fixtures: tiny corpora written per test, and the shared data folder when it is present."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lm_helpers import write_tiny_corpus

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Tiny test models gain nothing from intra-op threads, and spinning threads stall when cores are busy.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path, monkeypatch):
    """Every test runs in its own folder, so logs and caches never collide or leak into the repo."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def tiny_corpus(tmp_path) -> Path:
    return write_tiny_corpus(tmp_path / "corpus.txt")


@pytest.fixture
def shakespeare() -> Path:
    path = SHARED_DATA / "tinyshakespeare.txt"
    if not path.is_file():
        pytest.skip("../shared/data/tinyshakespeare.txt is absent")
    return path
