"""Where each encoder family keeps its parts, what its config calls them, how it removes a
block and what a layer costs: ``LAYOUTS`` (by ``config.model_type``) is the one
registration of a family; the adapters, the shrinking, the stock export and the
remote-code classes are derived from it. Shipped with exports: imports only torch.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .blocks import POST_NORM, Block
from .stand_ins import Edit, PassResidual, SkipAttention, SkipLayer, ZeroBranch

#: The config key of an extracted model's sub-network, ``[[heads, units], ...]``.
SUBNET_KEY = "nasprune_subnet"


class Layout:
    """Where one encoder family keeps its parts, what its config calls them, and how it
    removes a block: the one home of a family's names (like Optimum's normalised configs).

    ``prefix`` is the family's class-name prefix in transformers (``Bert`` ->
    ``BertConfig``, ``BertForSequenceClassification``); ``paths`` are dotted paths inside
    one layer (``query``, ``key``, ``value``, ``attn_out``, ``attn_norm``, ``ffn_in``,
    ``ffn_out``, ``ffn_norm``); ``attention_path`` is the module holding the head-count
    attributes ``head_attr_names``; ``fields`` name the config's ``layers``, ``heads``,
    ``hidden`` and ``ffn`` sizes; ``block`` gives a layer's parameters and FLOPs.
    """

    layers_path = "encoder.layer"  # relative to the base model
    paths: dict[str, str] = {}
    attention_path = ""
    head_attr_names = ("num_attention_heads", "all_head_size")
    fields = {"layers": "num_hidden_layers", "heads": "num_attention_heads",
              "hidden": "hidden_size", "ffn": "intermediate_size"}
    tuple_layers = False  # a layer returns a tuple, not a tensor
    block: Block = POST_NORM

    def __init__(self, prefix: str):
        self.prefix = prefix

    def layers(self, model: nn.Module) -> nn.ModuleList:
        """The encoder layers of a task model or a bare base model."""
        return getattr(model, "base_model", model).get_submodule(self.layers_path)

    def size(self, config, name: str) -> int:
        """The config's value of a normalised size (``layers``, ``heads``, ``hidden``, ``ffn``)."""
        return getattr(config, self.fields[name])

    def dims(self, config) -> tuple[int, int, int, int, int]:
        """``(layers, heads, head_dim, hidden, ffn)`` of the full model, from its config."""
        heads, hidden = self.size(config, "heads"), self.size(config, "hidden")
        return (self.size(config, "layers"), heads, int(hidden / heads), hidden,
                self.size(config, "ffn"))

    def skip_layer(self, layers: nn.ModuleList, index: int) -> list[Edit]:
        return [(layers, str(index), SkipLayer(as_tuple=self.tuple_layers))]

    def skip_attention(self, layer: nn.Module) -> list[Edit]:
        raise NotImplementedError

    def skip_ffn(self, layer: nn.Module) -> list[Edit]:
        raise NotImplementedError

    def head_attrs(self, heads: int, head_dim: int) -> dict[str, int]:
        """Attribute values of the attention module that describe ``heads`` heads."""
        count, size = self.head_attr_names
        return {count: heads, size: heads * head_dim}

    # Only layouts whose layers share a per-head input (MPNet) use the head order.
    def bind(self, model: nn.Module) -> None:
        """Install what the layout needs beyond the weights (from the config); idempotent."""

    def set_head_order(self, model: nn.Module, order: Sequence[Sequence[int]]) -> None:
        """Record each layer's head order (original head index per position)."""


class BertLayout(Layout):
    """Post-LayerNorm layers whose blocks take and add the residual themselves."""

    paths = {
        "query": "attention.self.query",
        "key": "attention.self.key",
        "value": "attention.self.value",
        "attn_out": "attention.output.dense",
        "attn_norm": "attention.output.LayerNorm",
        "ffn_in": "intermediate.dense",
        "ffn_out": "output.dense",
        "ffn_norm": "output.LayerNorm",
    }
    attention_path = "attention.self"

    def skip_attention(self, layer: nn.Module) -> list[Edit]:
        return [(layer, "attention", SkipAttention())]

    def skip_ffn(self, layer: nn.Module) -> list[Edit]:
        return [(layer, "intermediate", nn.Identity()), (layer, "output", PassResidual())]


class DistilBertLayout(Layout):
    """Each block computes ``norm(branch(x) + x)``: a zero branch and an identity norm give x."""

    layers_path = "transformer.layer"
    paths = {
        "query": "attention.q_lin",
        "key": "attention.k_lin",
        "value": "attention.v_lin",
        "attn_out": "attention.out_lin",
        "attn_norm": "sa_layer_norm",
        "ffn_in": "ffn.lin1",
        "ffn_out": "ffn.lin2",
        "ffn_norm": "output_layer_norm",
    }
    attention_path = "attention"
    head_attr_names = ("n_heads", "dim")
    fields = {"layers": "n_layers", "heads": "n_heads", "hidden": "dim", "ffn": "hidden_dim"}

    def skip_attention(self, layer: nn.Module) -> list[Edit]:
        return [(layer, "attention", ZeroBranch(pair=True)),
                (layer, "sa_layer_norm", nn.Identity())]

    def skip_ffn(self, layer: nn.Module) -> list[Edit]:
        return [(layer, "ffn", ZeroBranch()), (layer, "output_layer_norm", nn.Identity())]


#: The config key of each layer's head order in MPNet-style layouts: ``[[original head
#: index at position 0, ...], ...]``, written by importance reordering.
HEAD_ORDER_KEY = "nasprune_head_order"


def _head_index(module: nn.Module, device):
    """This layer's head order as an index tensor on ``device``, made on first use there:
    the order itself is plain ints, so binding works on any device, also transformers'
    meta device while ``from_pretrained`` builds the model."""
    import torch

    index = module.__dict__.get("_nasprune_index")
    if index is None or index.device != device:
        index = torch.tensor(module.nasprune_heads, device=device)
        module.__dict__["_nasprune_index"] = index
    return index[: module.num_attention_heads]


def _bias_of_kept_heads(module: nn.Module, args: tuple, kwargs: dict):
    """Forward pre-hook: MPNet's shared position bias gathered for this layer's heads."""
    if len(args) > 2 and args[2] is not None:
        args = (*args[:2], args[2].index_select(1, _head_index(module, args[2].device)),
                *args[3:])
    elif kwargs.get("position_bias") is not None:
        bias = kwargs["position_bias"]
        kwargs = {**kwargs, "position_bias": bias.index_select(1, _head_index(module,
                                                                                bias.device))}
    return args, kwargs


class MPNetLayout(BertLayout):
    """MPNet: BERT's blocks under other names, tuple-returning layers, and a relative
    position bias shared by all layers (so each layer's head order is kept)."""

    paths = {
        "query": "attention.attn.q",
        "key": "attention.attn.k",
        "value": "attention.attn.v",
        "attn_out": "attention.attn.o",
        "attn_norm": "attention.LayerNorm",
        "ffn_in": "intermediate.dense",
        "ffn_out": "output.dense",
        "ffn_norm": "output.LayerNorm",
    }
    attention_path = "attention.attn"
    tuple_layers = True

    def bind(self, model: nn.Module) -> None:
        order = getattr(model.config, HEAD_ORDER_KEY, None)
        heads = self.size(model.config, "heads")
        for i, layer in enumerate(self.layers(model)):
            if isinstance(layer, SkipLayer) or isinstance(layer.attention, SkipAttention):
                continue
            attn = layer.get_submodule(self.attention_path)
            wanted = tuple(map(int, order[i])) if order else tuple(range(heads))
            if getattr(attn, "nasprune_heads", None) != wanted:
                attn.nasprune_heads = wanted
                attn.__dict__.pop("_nasprune_index", None)
            if _bias_of_kept_heads not in attn._forward_pre_hooks.values():
                attn.register_forward_pre_hook(_bias_of_kept_heads, with_kwargs=True)

    def set_head_order(self, model: nn.Module, order: Sequence[Sequence[int]]) -> None:
        setattr(model.config, HEAD_ORDER_KEY, [list(map(int, o)) for o in order])
        self.bind(model)


BERT = BertLayout("Bert")
DISTILBERT = DistilBertLayout("DistilBert")
MPNET = MPNetLayout("MPNet")

#: Stock ``model_type`` -> its layout: what exported remote code needs to rebuild a model.
LAYOUTS: dict[str, Layout] = {
    "bert": BERT,
    "roberta": BertLayout("Roberta"),
    "xlm-roberta": BertLayout("XLMRoberta"),
    "electra": BertLayout("Electra"),
    "distilbert": DISTILBERT,
    "mpnet": MPNET,
}
