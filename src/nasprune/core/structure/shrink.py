"""``shrink``: a full model rebuilt in place with the module shapes of a sub-network, by the
same per-layer plan (``layer_plan``) that ``Supernet.use()`` follows. Shipped with
exports: imports only torch.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from .layouts import Layout
from .stand_ins import parent_of, set_attrs


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
