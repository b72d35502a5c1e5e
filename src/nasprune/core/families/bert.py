"""BERT and the families with its layer layout: RoBERTa, XLM-RoBERTa, ELECTRA."""

from __future__ import annotations

from nasprune.core.families.base import Adapter
from nasprune.core.structure import LAYOUTS


class BertAdapter(Adapter):
    """BERT and BERT-shaped checkpoints such as MiniLM."""

    family = "bert"
    layout = LAYOUTS["bert"]


class RobertaAdapter(BertAdapter):
    family = "roberta"
    layout = LAYOUTS["roberta"]


class XLMRobertaAdapter(BertAdapter):
    family = "xlm-roberta"
    layout = LAYOUTS["xlm-roberta"]


class ElectraAdapter(BertAdapter):
    """ELECTRA discriminators; ``embeddings_project`` (if any) is a fixed, non-encoder part."""

    family = "electra"
    layout = LAYOUTS["electra"]

    @classmethod
    def tiny_config(cls, hidden: int, layers: int, heads: int, ffn: int, common: dict):
        return super().tiny_config(hidden, layers, heads, ffn,
                                   {"embedding_size": max(8, hidden // 2), **common})


class MPNetAdapter(BertAdapter):
    """MPNet (e.g. all-mpnet-base-v2): BERT's blocks under other names, plus a relative
    position bias shared by all layers, which ``structure.MPNetLayout`` gathers per layer
    in its head order so that reordering and cutting heads keep the function exact."""

    family = "mpnet"
    layout = LAYOUTS["mpnet"]
