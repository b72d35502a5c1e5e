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
    """A removed layer (0 heads, 0 units): returns its input hidden states."""

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


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
    """Where one encoder layout keeps its parts, and how it removes a block.

    ``paths`` are dotted paths inside one layer (``query``, ``key``, ``value``,
    ``attn_out``, ``attn_norm``, ``ffn_in``, ``ffn_out``, ``ffn_norm``);
    ``attention_path`` is the module holding the head-count attributes. Families with the
    same layout (BERT, RoBERTa, XLM-R, ELECTRA) share one instance.
    """

    layers_path = "encoder.layer"  # relative to the base model
    paths: dict[str, str] = {}
    attention_path = ""

    def layers(self, model: nn.Module) -> nn.ModuleList:
        """The encoder layers of a task model or a bare base model."""
        return getattr(model, "base_model", model).get_submodule(self.layers_path)

    def dims(self, config) -> tuple[int, int, int, int, int]:
        """``(layers, heads, head_dim, hidden, ffn)`` of the full model, from its config."""
        raise NotImplementedError

    def skip_attention(self, layer: nn.Module) -> list[Edit]:
        raise NotImplementedError

    def skip_ffn(self, layer: nn.Module) -> list[Edit]:
        raise NotImplementedError

    def head_attrs(self, heads: int, head_dim: int) -> dict[str, int]:
        """Attribute values of the attention module that describe ``heads`` heads."""
        raise NotImplementedError


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

    def dims(self, config) -> tuple[int, int, int, int, int]:
        heads = config.num_attention_heads
        return (config.num_hidden_layers, heads, int(config.hidden_size / heads),
                config.hidden_size, config.intermediate_size)

    def skip_attention(self, layer: nn.Module) -> list[Edit]:
        return [(layer, "attention", SkipAttention())]

    def skip_ffn(self, layer: nn.Module) -> list[Edit]:
        return [(layer, "intermediate", nn.Identity()), (layer, "output", PassResidual())]

    def head_attrs(self, heads: int, head_dim: int) -> dict[str, int]:
        return {"num_attention_heads": heads, "all_head_size": heads * head_dim}


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

    def dims(self, config) -> tuple[int, int, int, int, int]:
        return (config.n_layers, config.n_heads, config.dim // config.n_heads, config.dim,
                config.hidden_dim)

    def skip_attention(self, layer: nn.Module) -> list[Edit]:
        return [(layer, "attention", ZeroBranch(pair=True)),
                (layer, "sa_layer_norm", nn.Identity())]

    def skip_ffn(self, layer: nn.Module) -> list[Edit]:
        return [(layer, "ffn", ZeroBranch()), (layer, "output_layer_norm", nn.Identity())]

    def head_attrs(self, heads: int, head_dim: int) -> dict[str, int]:
        return {"n_heads": heads, "dim": heads * head_dim}


BERT = BertLayout()
DISTILBERT = DistilBertLayout()


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
    for i, (h, u) in enumerate(subnet):
        layer = layers[i]
        if h == 0 and u == 0:
            layers[i] = SkipLayer()
            continue
        if h == 0:
            for parent, name, new in layout.skip_attention(layer):
                setattr(parent, name, new)
        elif h < num_heads:
            for role in ("query", "key", "value"):
                _resize(layer, layout.paths[role], rows=h * d)
            _resize(layer, layout.paths["attn_out"], cols=h * d)
            set_attrs(layer.get_submodule(layout.attention_path), layout.head_attrs(h, d))
        if u == 0:
            for parent, name, new in layout.skip_ffn(layer):
                setattr(parent, name, new)
        elif u < ffn:
            _resize(layer, layout.paths["ffn_in"], rows=u)
            _resize(layer, layout.paths["ffn_out"], cols=u)
    return model


def _resize(layer: nn.Module, path: str, *, rows: int | None = None,
            cols: int | None = None) -> None:
    """Replace the linear layer at ``path`` by a fresh one with ``rows`` outputs or ``cols``
    inputs."""
    old = layer.get_submodule(path)
    parent, name = parent_of(layer, path)
    setattr(parent, name, small_linear(old, old.in_features if cols is None else cols,
                                       old.out_features if rows is None else rows))
