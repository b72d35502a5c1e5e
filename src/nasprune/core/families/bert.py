"""BERT and the families with its layer layout: RoBERTa, XLM-RoBERTa, ELECTRA."""

from __future__ import annotations

from nasprune.core.families.base import Adapter
from nasprune.core.structure import BERT


class BertAdapter(Adapter):
    """BERT and BERT-shaped checkpoints such as MiniLM."""

    family = "bert"
    layout = BERT
    config_class = "BertConfig"  # in transformers, for tiny_config

    @classmethod
    def tiny_config(cls, hidden: int, layers: int, heads: int, ffn: int, common: dict):
        import transformers

        return getattr(transformers, cls.config_class)(
            hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
            intermediate_size=ffn, **common)


class RobertaAdapter(BertAdapter):
    family = "roberta"
    config_class = "RobertaConfig"


class XLMRobertaAdapter(RobertaAdapter):
    family = "xlm-roberta"
    config_class = "XLMRobertaConfig"


class ElectraAdapter(BertAdapter):
    """ELECTRA discriminators; ``embeddings_project`` (if any) is a fixed, non-encoder part."""

    family = "electra"
    config_class = "ElectraConfig"

    @classmethod
    def tiny_config(cls, hidden: int, layers: int, heads: int, ffn: int, common: dict):
        return super().tiny_config(hidden, layers, heads, ffn,
                                   {"embedding_size": max(8, hidden // 2), **common})
