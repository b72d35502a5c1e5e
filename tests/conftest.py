"""Shared fixtures: the shared real data, and tiny random models that build in milliseconds
(their builders live in ``cases``, which the benchmarks import too)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cases import REPO, SHARED_DATA, WORDS, tiny_bert, tiny_tokenizer  # noqa: F401

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A saved tiny random BERT classifier with its tokenizer (an HF directory)."""
    directory = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = tiny_tokenizer()
    model = tiny_bert()
    model.config.id2label = {0: "negative", 1: "positive"}
    model.config.label2id = {"negative": 0, "positive": 1}
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA
