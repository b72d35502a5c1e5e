"""A physically smaller dense model of a sub-network, in two halves reusable by export:
``shrink_structure`` (the module shapes, from counts alone) and ``load_prefix_weights``
(the leading block of every full weight)."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from nasprune.core.families.base import Adapter, get_adapter
from nasprune.core.structure.layouts import SUBNET_KEY
from nasprune.core.structure.shrink import shrink
from nasprune.core.subnet import Subnet
from nasprune.errors import NaspruneError


def shrink_structure(model: nn.Module, subnet: Subnet, adapter: Adapter | None = None) -> nn.Module:
    """Rebuild ``model`` in place with the module shapes of ``subnet``; return it.

    Only counts are used: new linear layers are freshly initialised, removed blocks become
    parameter-free stand-ins (parameter names of what is kept do not change). ``model``
    must have the full structure its config describes, e.g. ``from_config(saved_config)``;
    load weights afterwards with ``load_prefix_weights`` or ``load_state_dict``. The
    sub-network is stored as ``config.nasprune_subnet`` (the config keeps the full sizes).
    """
    adapter = adapter or get_adapter(model)
    subnet.validate(adapter.shape)
    shrink(model, adapter.layout, subnet.layers)
    setattr(model.config, SUBNET_KEY, [list(layer) for layer in subnet.layers])
    return model


@torch.no_grad()
def load_prefix_weights(small: nn.Module, full_state: Mapping[str, torch.Tensor]) -> None:
    """Fill ``small`` from a full state dict, taking the leading block of every tensor.

    Works because every kept head/unit is a prefix: a 4-head query weight is the first
    ``4 * head_dim`` rows of the full one, an output weight the first columns, and so on.
    """
    for name, tensor in small.state_dict(keep_vars=True).items():
        if name not in full_state:
            raise NaspruneError(f"weight {name!r} missing from the full model")
        src = full_state[name]
        if src.dim() != tensor.dim() or any(s < t for s, t in zip(src.shape, tensor.shape)):
            raise NaspruneError(
                f"weight {name!r}: {tuple(src.shape)} cannot hold {tuple(tensor.shape)}")
        tensor.copy_(src[tuple(slice(0, n) for n in tensor.shape)])


def subnet_of(model: nn.Module) -> Subnet | None:
    """The sub-network an extracted model was built for (from its config), if any."""
    layers = getattr(model.config, SUBNET_KEY, None)
    return None if layers is None else Subnet(tuple(tuple(layer) for layer in layers))
