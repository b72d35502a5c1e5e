"""Parameter-free stand-ins for removed blocks and layers, and the edits that swap them in.

They replace removed blocks in both ``use()`` and extracted models, so a removed block
costs nothing and an extracted model's state dict keeps the original parameter names.
Shipped with exports: imports only torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn


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
