"""Shared fixtures: tiny corpora written per test, and the shared data folder when it is present."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

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
    """About 20k characters of varied English-like text."""
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "a",
        "lazy",
        "dog",
        "while",
        "seven",
        "wizards",
        "quietly",
        "hex",
        "jolly",
        "kings",
    ]
    lines = []
    for i in range(600):
        lines.append(" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(5 + i % 4)) + f" {i % 13}.")
        if i % 50 == 0:
            lines.append("ROMEO: def main(): return 0")  # the sample prompts of the shipped configs
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def shakespeare() -> Path:
    path = SHARED_DATA / "tinyshakespeare.txt"
    if not path.is_file():
        pytest.skip("../shared/data/tinyshakespeare.txt is absent")
    return path
