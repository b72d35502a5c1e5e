"""The module structure of a sub-network: parameter-free stand-ins for removed blocks, where
each encoder layout keeps its parts, and ``shrink`` (a full model rebuilt with the module
shapes of a sub-network).

The one implementation, used by nasprune (``families``, ``supernet``, ``extract``) and by
the remote-code class of exports: ``modeling_nasprune.py`` imports this file, and the
export writer ships it next to it, so it must import only torch (users load those exports
without nasprune installed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

#: The config key of an extracted model's sub-network, ``[[heads, units], ...]``.
SUBNET_KEY = "nasprune_subnet"

# ----------------------------------------------------------------- parameter-free stand-ins
# They replace removed blocks in both ``use()`` and extracted models, so a removed block
# costs nothing and an extracted model's state dict keeps the original parameter names.


class SkipLayer(nn.Module):
    """A removed layer (0 heads, 0 units): returns its input hidden states (as a 1-tuple in
    layouts whose layers return tuples)."""

    def __init__(self, as_tuple: bool = False):
        super().__init__()
        self.as_tuple = as_tuple

    def forward(self, hidden_states, *args, **kwargs):
        return (hidden_states,) if self.as_tuple else hidden_states


class SkipAttention(nn.Module):
    """A removed attention block incl. its residual LayerNorm: ``(input, no weights)``."""

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states, None


class PassResidual(nn.Module):
    """Stands in for an FFN output block ``f(h, residual)`` and returns the residual."""

    def forward(self, hidden_states, input_tensor):
        return input_tensor


class ZeroBranch(nn.Module):
    """A removed residual branch (``x + branch(x)`` becomes ``x``) in pre-summed layouts.

    Returns a 0-d zero, which broadcasts in the residual sum at no matmul cost.
    ``pair=True`` mimics attention modules that return ``(output, weights)``.
    """

    def __init__(self, pair: bool = False):
        super().__init__()
        self.pair = pair

    def forward(self, hidden_states, *args, **kwargs):
        zero = hidden_states.new_zeros(())
        return (zero, None) if self.pair else zero


Edit = tuple[nn.Module, str, nn.Module]  # (parent, attribute, replacement)


def parent_of(root: nn.Module, path: str) -> tuple[nn.Module, str]:
    """``(parent, attribute)`` of the module at dotted ``path`` under ``root``."""
    head, _, name = path.rpartition(".")
    return (root.get_submodule(head) if head else root), name


def set_attrs(obj: Any, values: Mapping[str, Any]) -> dict[str, Any]:
    """Set those ``values`` that ``obj`` has as attributes; return their previous values."""
    old = {key: getattr(obj, key) for key in values if hasattr(obj, key)}
    for key in old:
        setattr(obj, key, values[key])
    return old


# ------------------------------------------------------------------------------ layouts


class Layout:
    """Where one encoder family keeps its parts, what its config calls them, and how it
    removes a block: the one home of a family's names (like Optimum's normalised configs).

    ``prefix`` is the family's class-name prefix in transformers (``Bert`` ->
    ``BertConfig``, ``BertForSequenceClassification``); ``paths`` are dotted paths inside
    one layer (``query``, ``key``, ``value``, ``attn_out``, ``attn_norm``, ``ffn_in``,
    ``ffn_out``, ``ffn_norm``); ``attention_path`` is the module holding the head-count
    attributes ``head_attr_names``; ``fields`` name the config's ``layers``, ``heads``,
    ``hidden`` and ``ffn`` sizes.
    """

    layers_path = "encoder.layer"  # relative to the base model
    paths: dict[str, str] = {}
    attention_path = ""
    head_attr_names = ("num_attention_heads", "all_head_size")
    fields = {"layers": "num_hidden_layers", "heads": "num_attention_heads",
              "hidden": "hidden_size", "ffn": "intermediate_size"}
    tuple_layers = False  # a layer returns a tuple, not a tensor

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


def _bias_of_kept_heads(module: nn.Module, args: tuple, kwargs: dict):
    """Forward pre-hook: MPNet's shared position bias gathered for this layer's heads."""
    index = module.nasprune_heads[: module.num_attention_heads]
    if len(args) > 2 and args[2] is not None:
        args = (*args[:2], args[2].index_select(1, index), *args[3:])
    elif kwargs.get("position_bias") is not None:
        kwargs = {**kwargs, "position_bias": kwargs["position_bias"].index_select(1, index)}
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
        import torch

        order = getattr(model.config, HEAD_ORDER_KEY, None)
        heads = self.size(model.config, "heads")
        for i, layer in enumerate(self.layers(model)):
            if isinstance(layer, SkipLayer) or isinstance(layer.attention, SkipAttention):
                continue
            attn = layer.get_submodule(self.attention_path)
            wanted = list(order[i]) if order else list(range(heads))
            if getattr(attn, "nasprune_heads", torch.empty(0)).tolist() != wanted:
                device = layer.get_submodule(self.paths["query"]).weight.device
                attn.register_buffer("nasprune_heads", torch.tensor(wanted, device=device),
                                     persistent=False)
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


def layer_plan(subnet: Sequence[tuple[int, int]], num_heads: int,
               ffn: int) -> list[tuple[int, str, int]]:
    """``(layer, part, count)`` per change of ``subnet``, for ``use()`` and ``shrink``: part
    ``layer``/``attention``/``ffn`` (removed) or ``heads``/``units`` (first ``count`` kept)."""
    plan = []
    for i, (h, u) in enumerate(subnet):
        if h == 0 and u == 0:
            plan.append((i, "layer", 0))
            continue
        if h == 0:
            plan.append((i, "attention", 0))
        elif h < num_heads:
            plan.append((i, "heads", h))
        if u == 0:
            plan.append((i, "ffn", 0))
        elif u < ffn:
            plan.append((i, "units", u))
    return plan


# ---------------------------------------------------------------------------- shrinking


def small_linear(old: nn.Linear, in_features: int, out_features: int) -> nn.Linear:
    """A fresh linear layer of the given size, on ``old``'s device and dtype."""
    return nn.Linear(in_features, out_features, bias=old.bias is not None,
                     device=old.weight.device, dtype=old.weight.dtype)


def shrink(model: nn.Module, layout: Layout, subnet: Sequence[tuple[int, int]]) -> nn.Module:
    """Rebuild ``model`` in place with the module shapes of ``subnet`` (per layer
    ``(heads, units)``, already checked against the model); return it.

    Only counts are used: new linear layers are freshly initialised, removed blocks become
    parameter-free stand-ins (parameter names of what is kept do not change). ``model``
    must have the full structure its config describes.
    """
    layers = layout.layers(model)
    _, num_heads, d, _, ffn = layout.dims(model.config)
    for i, part, n in layer_plan(subnet, num_heads, ffn):
        layer = layers[i]
        if part in ("layer", "attention", "ffn"):
            edits = (layout.skip_layer(layers, i) if part == "layer" else
                     layout.skip_attention(layer) if part == "attention" else
                     layout.skip_ffn(layer))
            for parent, name, new in edits:
                setattr(parent, name, new)
        elif part == "heads":
            for role in ("query", "key", "value"):
                _resize(layer, layout.paths[role], rows=n * d)
            _resize(layer, layout.paths["attn_out"], cols=n * d)
            set_attrs(layer.get_submodule(layout.attention_path), layout.head_attrs(n, d))
        else:
            _resize(layer, layout.paths["ffn_in"], rows=n)
            _resize(layer, layout.paths["ffn_out"], cols=n)
    layout.bind(model)
    return model


def _resize(layer: nn.Module, path: str, *, rows: int | None = None,
            cols: int | None = None) -> None:
    """Replace the linear layer at ``path`` by a fresh one with ``rows`` outputs or ``cols``
    inputs."""
    old = layer.get_submodule(path)
    parent, name = parent_of(layer, path)
    setattr(parent, name, small_linear(old, old.in_features if cols is None else cols,
                                       old.out_features if rows is None else rows))
