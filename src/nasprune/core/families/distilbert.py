"""DistilBERT: its own attribute names, and blocks that add the residual before the norm."""

from __future__ import annotations

from nasprune.core.families.base import Adapter
from nasprune.core.structure import DISTILBERT


class DistilBertAdapter(Adapter):
    family = "distilbert"
    layout = DISTILBERT

    @classmethod
    def tiny_config(cls, hidden: int, layers: int, heads: int, ffn: int, common: dict):
        import transformers

        return transformers.DistilBertConfig(dim=hidden, n_layers=layers, n_heads=heads,
                                             hidden_dim=ffn, **common)
