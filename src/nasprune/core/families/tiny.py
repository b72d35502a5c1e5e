"""Tiny randomly initialised models of every family, for tests and examples."""

from __future__ import annotations

import torch
from torch import nn

from nasprune.core.structure.layouts import LAYOUTS
from nasprune.errors import NaspruneError

#: Config values a family needs beyond its layout's sizes to build a small model.
TINY_EXTRA = {"electra": lambda hidden: {"embedding_size": max(8, hidden // 2)}}


def tiny_config(family: str, *, hidden: int, layers: int, heads: int, ffn: int, **common):
    """A small config of ``family``, named by its layout (``Layout.prefix``, ``fields``)."""
    import transformers

    layout = LAYOUTS[family]
    sizes = {"layers": layers, "heads": heads, "hidden": hidden, "ffn": ffn}
    extra = TINY_EXTRA.get(family, lambda _: {})(hidden)
    return getattr(transformers, layout.prefix + "Config")(
        **{layout.fields[k]: v for k, v in sizes.items()}, **extra, **common)


def tiny_model(family: str = "bert", *, layers: int = 2, heads: int = 4, head_dim: int = 8,
               ffn: int = 64, num_labels: int = 2, vocab: int = 100, seed: int = 0) -> nn.Module:
    """A small randomly initialised sequence classifier of one family (tests, examples)."""
    import transformers as tf

    if family not in LAYOUTS:
        raise NaspruneError(f"unknown family {family!r}; choose one of {', '.join(LAYOUTS)}")
    torch.manual_seed(seed)
    config = tiny_config(family, hidden=heads * head_dim, layers=layers, heads=heads, ffn=ffn,
                         vocab_size=vocab, num_labels=num_labels, max_position_embeddings=64)
    model = tf.AutoModelForSequenceClassification.from_config(config)
    return model.eval()
