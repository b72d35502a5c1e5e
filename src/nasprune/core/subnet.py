"""The sub-network value type and its analytic costs.

A sub-network keeps, per encoder layer, a *prefix* of the attention heads and of the FFN
units (the weights are reordered by importance first, see ``importance``), so it is just
counts. Everything here is plain Python: no torch, testable in milliseconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass


class SubnetError(ValueError):
    """A sub-network that does not fit the model or the search space."""


@dataclass(frozen=True)
class ModelShape:
    """The encoder dimensions that sub-networks and costs are expressed in."""

    num_layers: int
    num_heads: int
    head_dim: int
    hidden: int
    ffn: int

    @property
    def full(self) -> Subnet:
        return Subnet(tuple((self.num_heads, self.ffn) for _ in range(self.num_layers)))

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Subnet:
    """Per layer ``(heads, units)``; 0 heads = no attention block, 0 units = no FFN."""

    layers: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        layers = tuple((int(h), int(u)) for h, u in self.layers)
        for i, (h, u) in enumerate(layers):
            if h < 0 or u < 0:
                raise SubnetError(f"layer {i}: negative count (heads={h}, units={u})")
        object.__setattr__(self, "layers", layers)

    @classmethod
    def full(cls, shape: ModelShape) -> Subnet:
        return shape.full

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def kept_layers(self) -> int:
        """Layers that still compute something (a layer with 0 heads and 0 units is gone)."""
        return sum(1 for h, u in self.layers if h or u)

    def validate(self, shape: ModelShape) -> Subnet:
        if self.num_layers != shape.num_layers:
            raise SubnetError(
                f"sub-network has {self.num_layers} layers, the model has {shape.num_layers}"
            )
        for i, (h, u) in enumerate(self.layers):
            if h > shape.num_heads:
                raise SubnetError(f"layer {i}: {h} heads, the model has {shape.num_heads}")
            if u > shape.ffn:
                raise SubnetError(f"layer {i}: {u} FFN units, the model has {shape.ffn}")
        return self

    def to_json(self) -> str:
        return json.dumps({"layers": [list(layer) for layer in self.layers]})

    @classmethod
    def from_json(cls, text: str) -> Subnet:
        try:
            data = json.loads(text)
            return cls(tuple(tuple(layer) for layer in data["layers"]))
        except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
            if isinstance(exc, SubnetError):
                raise
            raise SubnetError(f"not a sub-network JSON object: {text[:80]!r}") from exc

    def __str__(self) -> str:
        return " ".join(f"{h}/{u}" for h, u in self.layers)


# --------------------------------------------------------------------------- costs


def layer_params(heads: int, units: int, shape: ModelShape) -> int:
    """Exact parameter count of one post-LayerNorm encoder layer (BERT family)."""
    d, hidden = shape.head_dim, shape.hidden
    attn = 0
    if heads:
        inner = heads * d
        attn = 3 * (hidden * inner + inner) + inner * hidden + hidden + 2 * hidden
    ffn = 0
    if units:
        ffn = hidden * units + units + units * hidden + hidden + 2 * hidden
    return attn + ffn


def encoder_params(subnet: Subnet, shape: ModelShape) -> int:
    return sum(layer_params(h, u, shape) for h, u in subnet.layers)


def encoder_flops(subnet: Subnet, shape: ModelShape, seq_len: int = 128) -> int:
    """Multiply-accumulates x 2 of the encoder for one sequence (LayerNorm/softmax ignored)."""
    d, hidden, s = shape.head_dim, shape.hidden, seq_len
    total = 0
    for h, u in subnet.layers:
        if h:
            inner = h * d
            total += 2 * s * hidden * 3 * inner  # q, k, v projections
            total += 2 * 2 * s * s * inner  # scores and weighted sum
            total += 2 * s * inner * hidden  # attention output
        if u:
            total += 2 * 2 * s * hidden * u  # FFN in and out
    return total
