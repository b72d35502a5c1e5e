"""Pruned encoders exported by nasprune, loadable with ``trust_remote_code=True``.

A nasprune export keeps, per encoder layer, a different number of attention heads and FFN
units (``config.nasprune_subnet``: ``[[heads, units], ...]``), which the stock configs
cannot express. The classes here are the stock ``...ForSequenceClassification`` classes
that, after building the full structure from the config, replace every pruned linear
layer by a smaller one and every removed block by a parameter-free stand-in
(``nasprune.core.structure``, the shrinking nasprune's own extraction uses). The
parameter names are the stock ones, so the checkpoint is an ordinary safetensors file.

This file and ``structure.py`` are copied into each export directory and must import only
``torch`` and ``transformers`` (users load them without nasprune installed; transformers
copies the relatively imported ``structure.py`` along and skips imports inside ``try``
when it checks the requirements). ``nasprune.load`` uses the same classes from the
installed package and never runs code from the directory.

The configs of such exports carry their own ``model_type`` (``nasprune_bert``, ...), which
stock transformers does not know: ``AutoModelForSequenceClassification.from_pretrained``
without ``trust_remote_code=True`` refuses the directory (asking for
``trust_remote_code=True``) instead of building the full stock structure and silently
filling pruned or dropped layers with random weights. Sub-networks that a stock config
can describe are exported without this file (see ``nasprune.deploy.export.vanilla``).
"""

from __future__ import annotations

import transformers
from torch import nn

try:  # in an export directory: the copy of nasprune.core.structure shipped next to this file
    from .structure import BERT, DISTILBERT, SUBNET_KEY, Layout, shrink
except ImportError:  # the installed package (nasprune.load, the export writer)
    from nasprune.core.structure import BERT, DISTILBERT, SUBNET_KEY, Layout, shrink


def apply_subnet(model: nn.Module, layout: Layout, subnet=None) -> nn.Module:
    """Give ``model`` (full structure) the module shapes of its sub-network, in place."""
    config = model.config
    subnet = subnet if subnet is not None else getattr(config, SUBNET_KEY, None)
    if subnet is None:
        return model
    layers = layout.layers(model)
    if len(subnet) != len(layers):
        raise ValueError(f"{SUBNET_KEY} has {len(subnet)} layers, the model {len(layers)}")
    _, num_heads, _, _, ffn = layout.dims(config)
    counts = [(int(h), int(u)) for h, u in subnet]
    for i, (h, u) in enumerate(counts):
        if not (0 <= h <= num_heads and 0 <= u <= ffn):
            raise ValueError(f"layer {i}: {h} heads / {u} units do not fit the config")
    return shrink(model, layout, counts)


class _Pruned:
    """Mixin: build the stock model, then shrink it to ``config.nasprune_subnet``."""

    nasprune_layout: Layout = BERT  # where the layers keep their parts

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        apply_subnet(self, self.nasprune_layout)


#: The ``model_type`` of a pruned export of each stock family.
PREFIX = "nasprune_"


class NaspruneBertConfig(transformers.BertConfig):
    model_type = PREFIX + "bert"


class NaspruneRobertaConfig(transformers.RobertaConfig):
    model_type = PREFIX + "roberta"


class NaspruneXLMRobertaConfig(transformers.XLMRobertaConfig):
    model_type = PREFIX + "xlm-roberta"


class NaspruneElectraConfig(transformers.ElectraConfig):
    model_type = PREFIX + "electra"


class NaspruneDistilBertConfig(transformers.DistilBertConfig):
    model_type = PREFIX + "distilbert"


class NaspruneBertForSequenceClassification(
        _Pruned, transformers.BertForSequenceClassification):
    config_class = NaspruneBertConfig


class NaspruneRobertaForSequenceClassification(
        _Pruned, transformers.RobertaForSequenceClassification):
    config_class = NaspruneRobertaConfig


class NaspruneXLMRobertaForSequenceClassification(
        _Pruned, transformers.XLMRobertaForSequenceClassification):
    config_class = NaspruneXLMRobertaConfig


class NaspruneElectraForSequenceClassification(
        _Pruned, transformers.ElectraForSequenceClassification):
    config_class = NaspruneElectraConfig


class NaspruneDistilBertForSequenceClassification(
        _Pruned, transformers.DistilBertForSequenceClassification):
    config_class = NaspruneDistilBertConfig
    nasprune_layout = DISTILBERT


# The encoders without the classifier (``AutoModel``): the same shrinking, the same weights.
class NaspruneBertModel(_Pruned, transformers.BertModel):
    config_class = NaspruneBertConfig


class NaspruneRobertaModel(_Pruned, transformers.RobertaModel):
    config_class = NaspruneRobertaConfig


class NaspruneXLMRobertaModel(_Pruned, transformers.XLMRobertaModel):
    config_class = NaspruneXLMRobertaConfig


class NaspruneElectraModel(_Pruned, transformers.ElectraModel):
    config_class = NaspruneElectraConfig


class NaspruneDistilBertModel(_Pruned, transformers.DistilBertModel):
    config_class = NaspruneDistilBertConfig
    nasprune_layout = DISTILBERT


#: Stock ``model_type`` -> the pruned model class.
CLASSES = {
    "bert": NaspruneBertForSequenceClassification,
    "roberta": NaspruneRobertaForSequenceClassification,
    "xlm-roberta": NaspruneXLMRobertaForSequenceClassification,
    "electra": NaspruneElectraForSequenceClassification,
    "distilbert": NaspruneDistilBertForSequenceClassification,
}
#: Stock ``model_type`` -> the pruned encoder without its head (``auto_map`` ``AutoModel``).
ENCODERS = {
    "bert": NaspruneBertModel,
    "roberta": NaspruneRobertaModel,
    "xlm-roberta": NaspruneXLMRobertaModel,
    "electra": NaspruneElectraModel,
    "distilbert": NaspruneDistilBertModel,
}
#: Stock ``model_type`` -> the config class of its pruned exports.
CONFIGS = {family: cls.config_class for family, cls in CLASSES.items()}
