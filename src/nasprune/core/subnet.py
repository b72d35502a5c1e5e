"""The sub-network value type and its analytic costs.

A sub-network keeps, per encoder layer, a *prefix* of the attention heads and of the FFN
units (the weights are reordered by importance first, see ``importance``), so it is just
counts. Everything here is plain Python: no torch, testable in milliseconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from nasprune.core.structure.blocks import POST_NORM, Block


class SubnetError(ValueError):
    """A sub-network that does not fit the model or the search space."""


@dataclass(frozen=True)
class ModelShape:
    """The encoder dimensions that sub-networks and costs are expressed in, and the shape of
    a layer's blocks (the family layout's ``block``), which gives its costs."""

    num_layers: int
    num_heads: int
    head_dim: int
    hidden: int
    ffn: int
    block: Block = field(default=POST_NORM, compare=False, repr=False)

    @property
    def full(self) -> Subnet:
        return Subnet(tuple((self.num_heads, self.ffn) for _ in range(self.num_layers)))

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "block"}


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


def encoder_params(subnet: Subnet, shape: ModelShape) -> int:
    """Exact parameter count of the encoder layers (``shape.block``'s formula)."""
    return sum(shape.block.params(h, u, shape.head_dim, shape.hidden) for h, u in subnet.layers)


def encoder_flops(subnet: Subnet, shape: ModelShape, seq_len: int = 128) -> int:
    """Multiply-accumulates x 2 of the encoder for one sequence (LayerNorm/softmax ignored)."""
    return sum(shape.block.flops(h, u, shape.head_dim, shape.hidden, seq_len)
               for h, u in subnet.layers)
