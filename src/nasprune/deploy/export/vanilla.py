"""Sub-networks that a stock transformers config describes: exported without remote code.

The rule (``plan``), from transformers' own modelling code: BERT, RoBERTa, XLM-R, ELECTRA
and MPNet compute ``attention_head_size = int(hidden_size / num_attention_heads)`` and
DistilBERT ``dim // n_heads``; none of their configs takes an explicit head size. Keeping ``h`` of
``H`` heads of size ``d`` would need ``num_attention_heads = h`` with head size ``d``, and
that config would give heads of size ``hidden / h`` instead. So a sub-network has a stock
("vanilla") form exactly when

- at least one layer is kept, and every removed layer is removed whole (``(0, 0)``): a
  stock layer always has both an attention block and an FFN;
- every kept layer keeps **all** heads: fewer heads of the original size cannot be
  expressed, whatever the count;
- every kept layer keeps the **same** number of FFN units ``U > 0``: one
  ``intermediate_size``.

The vanilla model then has ``num_hidden_layers`` (``n_layers``) = the kept layers,
renumbered 0..K-1 in their original order, ``intermediate_size`` (``hidden_dim``) = ``U``,
and everything else of the original config. Its weights are the extracted ones under
renumbered names, and ``build`` checks that it computes what the extraction computes.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

from nasprune.core.structure.layouts import HEAD_ORDER_KEY, LAYOUTS, SUBNET_KEY, Layout
from nasprune.core.subnet import ModelShape, Subnet
from nasprune.errors import NaspruneError

#: Config attributes that carry the sub-network, never written into a vanilla config.
NASPRUNE_ONLY = (SUBNET_KEY, HEAD_ORDER_KEY, "auto_map")


@dataclass(frozen=True)
class VanillaPlan:
    """Kept layer indices of the original model (in order) and the common FFN width."""

    kept: tuple[int, ...]
    units: int


def plan(subnet: Subnet, shape: ModelShape) -> VanillaPlan | str:
    """The vanilla form of ``subnet``, or a one-line reason why it has none."""
    kept = tuple(i for i, (h, u) in enumerate(subnet.layers) if h or u)
    if not kept:
        return "the sub-network keeps no layer"
    for i in kept:
        h, u = subnet.layers[i]
        if h == 0:
            return (f"layer {i} keeps {u} FFN units but no attention block (a stock layer "
                    "has both)")
        if u == 0:
            return (f"layer {i} keeps {h} heads but no FFN block (a stock layer has both)")
        if h != shape.num_heads:
            return (f"layer {i} keeps {h} of {shape.num_heads} heads: stock configs derive "
                    f"the head size from the hidden size / the head count, so fewer heads of "
                    f"size {shape.head_dim} cannot be expressed")
    units = sorted({subnet.layers[i][1] for i in kept})
    if len(units) > 1:
        return ("the kept layers keep different FFN widths ("
                + ", ".join(map(str, units)) + " units); a stock config has one")
    return VanillaPlan(kept, units[0])


def _layout(config) -> Layout:
    return LAYOUTS[config.model_type]


def vanilla_config(config, how: VanillaPlan):
    """A copy of the (full-size) ``config`` with the kept layers and units."""
    out = copy.deepcopy(config)
    for name in NASPRUNE_ONLY:
        if hasattr(out, name):
            delattr(out, name)
    fields = _layout(out).fields
    setattr(out, fields["layers"], len(how.kept))
    setattr(out, fields["ffn"], how.units)
    out.nasprune_kept_layers = list(how.kept)
    return out


def renumber(state: dict, config, how: VanillaPlan) -> dict:
    """``state`` of the extracted model with layer ``kept[j]`` renamed to layer ``j``, and
    each kept layer's heads back in their original order where the layout records one (a
    stock model shares MPNet's position bias across layers in that order)."""
    layout = _layout(config)
    layers = layout.layers_path
    pattern = re.compile(rf"^(|.*\.){re.escape(layers)}\.(\d+)\.(.*)$")
    new_index = {old: new for new, old in enumerate(how.kept)}
    head_order = getattr(config, HEAD_ORDER_KEY, None)
    out = {}
    for key, value in state.items():
        match = pattern.match(key)
        if match:
            old = int(match.group(2))
            if old not in new_index:
                raise NaspruneError(f"removed layer {old} still has a tensor ({key})")
            if head_order is not None:
                value = _original_head_order(layout, config, match.group(3), value,
                                             head_order[old])
            key = f"{match.group(1)}{layers}.{new_index[old]}.{match.group(3)}"
        out[key] = value
    return out


def _original_head_order(layout: Layout, config, name: str, value, order):
    """``value`` (one layer's tensor ``name``) with its head blocks put back in order."""
    import torch

    _, heads, head_dim, _, _ = layout.dims(config)
    inverse = torch.argsort(torch.tensor(order))
    index = (inverse[:, None] * head_dim + torch.arange(head_dim)).flatten()
    part = name.rpartition(".")[0]
    if part in (layout.paths[r] for r in ("query", "key", "value")):
        return value[index]
    if part == layout.paths["attn_out"] and name.endswith("weight"):
        return value[:, index]
    return value


def build(small, how: VanillaPlan, config, example: dict):
    """The stock model equal to ``small`` (the extraction); ``config`` is ``small``'s config
    with the export's labels and keys. Raises when the two differ on ``example``."""
    import torch
    from transformers import AutoModelForSequenceClassification

    stock = vanilla_config(config, how)
    model = AutoModelForSequenceClassification.from_config(stock)
    try:
        model.load_state_dict(renumber(small.state_dict(), config, how), strict=True)
    except RuntimeError as exc:
        raise NaspruneError("the stock model does not match the extraction: "
                            f"{str(exc).splitlines()[0]}") from exc
    model.eval()
    with torch.no_grad():
        diff = float((model(**example).logits - small(**example).logits).abs().max())
    if not diff <= 1e-4:
        raise NaspruneError(f"the stock model differs from the extraction by {diff:.3g}")
    return model


def check(subnet: Subnet, config, where: str = "") -> None:
    """A vanilla export's ``config.json`` describes its ``subnet.json``."""
    layout = _layout(config)
    layers, heads, units = (layout.size(config, k) for k in ("layers", "heads", "ffn"))
    kept = [layer for layer in subnet.layers if layer != (0, 0)]
    if len(kept) != layers or any(layer != (heads, units) for layer in kept):
        raise NaspruneError(f"{where}config.json ({layers} layers of {heads} heads and {units} "
                            f"units) does not describe subnet.json ({subnet})")
