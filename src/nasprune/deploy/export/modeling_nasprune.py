"""Pruned encoders exported by nasprune, loadable with ``trust_remote_code=True``.

A nasprune export keeps, per encoder layer, a different number of attention heads and FFN
units (``config.nasprune_subnet``: ``[[heads, units], ...]``), which the stock configs
cannot express. The classes here are the stock ``...ForSequenceClassification`` classes
that, after building the full structure from the config, replace every pruned linear
layer by a smaller one and every removed block by a parameter-free stand-in. The
parameter names are the stock ones, so the checkpoint is an ordinary safetensors file.

This file is copied into each export directory and must import only ``torch`` and
``transformers`` (users load it without nasprune installed). ``nasprune.load`` uses the
same classes from the installed package and never runs code from the directory.

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

SUBNET_KEY = "nasprune_subnet"

_BERT_PATHS = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attn_out": "attention.output.dense",
    "ffn_in": "intermediate.dense",
    "ffn_out": "output.dense",
}
_DISTILBERT_PATHS = {
    "query": "attention.q_lin",
    "key": "attention.k_lin",
    "value": "attention.v_lin",
    "attn_out": "attention.out_lin",
    "ffn_in": "ffn.lin1",
    "ffn_out": "ffn.lin2",
}


# --------------------------------------------------------------- parameter-free stand-ins


class SkipLayer(nn.Module):
    """A removed layer (0 heads, 0 units): returns its input hidden states."""

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


class SkipAttention(nn.Module):
    """A removed BERT-style attention block incl. its residual LayerNorm."""

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states, None


class PassResidual(nn.Module):
    """Stands in for a BERT-style FFN output block ``f(h, residual)``: the residual."""

    def forward(self, hidden_states, input_tensor):
        return input_tensor


class ZeroBranch(nn.Module):
    """A removed residual branch in DistilBERT's ``norm(branch(x) + x)`` layout."""

    def __init__(self, pair: bool = False):
        super().__init__()
        self.pair = pair

    def forward(self, hidden_states, *args, **kwargs):
        zero = hidden_states.new_zeros(())
        return (zero, None) if self.pair else zero


# ------------------------------------------------------------------------ the shrinking


def _family(config) -> str:
    """``distilbert`` or ``bert`` (the layout of every other family), from a stock or a
    ``nasprune_<family>`` model type."""
    return "distilbert" if config.model_type.endswith("distilbert") else "bert"


def _dims(config) -> tuple[int, int, int]:
    """(heads, head_dim, ffn) of the full model."""
    if _family(config) == "distilbert":
        return config.n_heads, config.dim // config.n_heads, config.hidden_dim
    heads = config.num_attention_heads
    return heads, int(config.hidden_size / heads), config.intermediate_size


def _layers(model: nn.Module) -> nn.ModuleList:
    base = getattr(model, "base_model", model)
    path = "transformer.layer" if _family(model.config) == "distilbert" else "encoder.layer"
    return base.get_submodule(path)


def _replace(root: nn.Module, path: str, new: nn.Module) -> None:
    head, _, name = path.rpartition(".")
    setattr(root.get_submodule(head) if head else root, name, new)


def _smaller(old: nn.Linear, in_features: int, out_features: int) -> nn.Linear:
    return nn.Linear(in_features, out_features, bias=old.bias is not None,
                     device=old.weight.device, dtype=old.weight.dtype)


def apply_subnet(model: nn.Module, subnet=None) -> nn.Module:
    """Give ``model`` (full structure) the module shapes of its sub-network, in place."""
    config = model.config
    subnet = subnet if subnet is not None else getattr(config, SUBNET_KEY, None)
    if subnet is None:
        return model
    layers = _layers(model)
    if len(subnet) != len(layers):
        raise ValueError(f"{SUBNET_KEY} has {len(subnet)} layers, the model {len(layers)}")
    num_heads, d, ffn = _dims(config)
    distil = _family(config) == "distilbert"
    paths = _DISTILBERT_PATHS if distil else _BERT_PATHS
    for i, (h, u) in enumerate(subnet):
        h, u = int(h), int(u)
        if not (0 <= h <= num_heads and 0 <= u <= ffn):
            raise ValueError(f"layer {i}: {h} heads / {u} units do not fit the config")
        layer = layers[i]
        if h == 0 and u == 0:
            layers[i] = SkipLayer()
            continue
        if h == 0:
            if distil:
                layer.attention, layer.sa_layer_norm = ZeroBranch(pair=True), nn.Identity()
            else:
                layer.attention = SkipAttention()
        elif h < num_heads:
            for role in ("query", "key", "value"):
                old = layer.get_submodule(paths[role])
                _replace(layer, paths[role], _smaller(old, old.in_features, h * d))
            old = layer.get_submodule(paths["attn_out"])
            _replace(layer, paths["attn_out"], _smaller(old, h * d, old.out_features))
            if distil:
                layer.attention.n_heads, layer.attention.dim = h, h * d
            else:
                attention = layer.attention.self
                attention.num_attention_heads, attention.all_head_size = h, h * d
        if u == 0:
            if distil:
                layer.ffn, layer.output_layer_norm = ZeroBranch(), nn.Identity()
            else:
                layer.intermediate, layer.output = nn.Identity(), PassResidual()
        elif u < ffn:
            old = layer.get_submodule(paths["ffn_in"])
            _replace(layer, paths["ffn_in"], _smaller(old, old.in_features, u))
            old = layer.get_submodule(paths["ffn_out"])
            _replace(layer, paths["ffn_out"], _smaller(old, u, old.out_features))
    return model


class _Pruned:
    """Mixin: build the stock model, then shrink it to ``config.nasprune_subnet``."""

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        apply_subnet(self)


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


#: Stock ``model_type`` -> the pruned model class.
CLASSES = {
    "bert": NaspruneBertForSequenceClassification,
    "roberta": NaspruneRobertaForSequenceClassification,
    "xlm-roberta": NaspruneXLMRobertaForSequenceClassification,
    "electra": NaspruneElectraForSequenceClassification,
    "distilbert": NaspruneDistilBertForSequenceClassification,
}
#: Stock ``model_type`` -> the config class of its pruned exports.
CONFIGS = {family: cls.config_class for family, cls in CLASSES.items()}
