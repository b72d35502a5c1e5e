"""Forward pre-hooks that multiply head outputs and FFN units by masks.

Used for importance scores (per-example ones-masks that require grad) and for the masking
baseline (zero-one masks, full-size compute) that ``Supernet.use()`` replaces.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Callable

import torch

if TYPE_CHECKING:
    from nasprune.core.supernet import Supernet


class Masks:
    """Within the block, every layer's attention output sees its heads multiplied by
    ``make("heads", layer, x)`` and its FFN output its units by ``make("units", layer, x)``
    (shape ``(batch or 1, count)``); ``created`` records each mask made."""

    def __init__(self, supernet: Supernet,
                 make: Callable[[str, int, torch.Tensor], torch.Tensor]):
        self.sn, self.make = supernet, make
        self.handles: list = []
        self.created: list[tuple[str, int, torch.Tensor]] = []

    def __enter__(self):
        a, s = self.sn.adapter, self.sn.shape
        for i in range(s.num_layers):
            self.handles.append(a.attn_out(i).register_forward_pre_hook(partial(self._heads, i)))
            self.handles.append(a.ffn_out(i).register_forward_pre_hook(partial(self._units, i)))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def _heads(self, layer, module, args):
        x = args[0]
        s = self.sn.shape
        m = self.make("heads", layer, x)
        self.created.append(("heads", layer, m))
        lead = x.shape[:-1]
        m = m.view(m.shape[0], *([1] * (x.dim() - 2)), s.num_heads, 1)
        return ((x.view(*lead, s.num_heads, s.head_dim) * m).view_as(x), *args[1:])

    def _units(self, layer, module, args):
        x = args[0]
        m = self.make("units", layer, x)
        self.created.append(("units", layer, m))
        return (x * m.view(m.shape[0], *([1] * (x.dim() - 2)), x.shape[-1]), *args[1:])
