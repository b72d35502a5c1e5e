"""Tiny randomly initialised models of every family, for tests and examples."""

from __future__ import annotations

import torch
from torch import nn

from nasprune.core.families import ADAPTERS
from nasprune.errors import NaspruneError


def tiny_model(family: str = "bert", *, layers: int = 2, heads: int = 4, head_dim: int = 8,
               ffn: int = 64, num_labels: int = 2, vocab: int = 100, seed: int = 0) -> nn.Module:
    """A small randomly initialised sequence classifier of one family (tests, examples)."""
    import transformers as tf

    if family not in ADAPTERS:
        raise NaspruneError(f"unknown family {family!r}; choose one of {', '.join(ADAPTERS)}")
    hidden = heads * head_dim
    common = dict(vocab_size=vocab, num_labels=num_labels, max_position_embeddings=64)
    torch.manual_seed(seed)
    config = ADAPTERS[family].tiny_config(hidden, layers, heads, ffn, common)
    model = tf.AutoModelForSequenceClassification.from_config(config)
    return model.eval()
