"""Search spaces: the sub-networks a search may visit, as points of a product of dimensions.

Searchers see only a space's ``dims`` (the allowed values per dimension) and index vectors;
each point maps to one ``Subnet``. Plain Python, no torch. The spaces are listed in
``nasprune.core.SPACES``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from nasprune.core import SPACES
from nasprune.core.subnet import ModelShape, Subnet, SubnetError, encoder_params


def _halvings(n: int) -> tuple[int, ...]:
    """n, n/2, n/4, ... while integral, plus 1: for 12 heads 1, 3, 6, 12 (the tutorial's)."""
    values = {1}
    while n >= 1:
        values.add(n)
        if n % 2:
            break
        n //= 2
    return tuple(sorted(values))


def _steps(total: int, step: int, *, zero: bool) -> tuple[int, ...]:
    values = list(range(step, total, step)) + [total]
    return tuple(([0] if zero else []) + values)


class SearchSpace:
    """A product of discrete dimensions; each point maps to one ``Subnet``.

    Searchers see only ``dims`` (the allowed values per dimension) and index vectors, so a
    new space needs ``dims`` plus ``to_subnet``/``from_subnet``, and one line in ``SPACES``.
    ``options`` names the keyword arguments of ``make_space`` its constructor takes.
    """

    name = "abstract"
    options: tuple[str, ...] = ()

    def __init__(self, shape: ModelShape):
        self.shape = shape

    dims: tuple[tuple[int, ...], ...] = ()
    dim_names: tuple[str, ...] = ()

    def to_subnet(self, values: Sequence[int]) -> Subnet:
        raise NotImplementedError

    def from_subnet(self, subnet: Subnet) -> tuple[int, ...]:
        raise NotImplementedError

    # -- derived helpers shared by every space
    def index(self, subnet: Subnet) -> tuple[int, ...]:
        values = self.from_subnet(subnet)
        try:
            return tuple(dim.index(v) for dim, v in zip(self.dims, values))
        except ValueError as exc:
            raise SubnetError(f"{subnet} is not in the {self.name!r} space") from exc

    def from_index(self, index: Sequence[int]) -> Subnet:
        return self.to_subnet([dim[i] for dim, i in zip(self.dims, index)])

    def sample(self, rng: random.Random) -> Subnet:
        return self.from_index([rng.randrange(len(dim)) for dim in self.dims])

    def sample_near(self, rng: random.Random, fraction: float, spread: float = 0.2) -> Subnet:
        """A random sub-network whose every dimension sits near ``fraction`` of its range.

        Uniform samples of a many-dimensional space (12 in ``layerwise``) all land near its
        middle; drawing the size first reaches the small and large ends too.
        """
        index = []
        for dim in self.dims:
            x = min(1.0, max(0.0, fraction + rng.uniform(-spread, spread)))
            index.append(round(x * (len(dim) - 1)))
        return self.from_index(index)

    def encoder_fraction(self, subnet: Subnet) -> float:
        """Encoder parameters of ``subnet`` as a fraction of the full encoder's."""
        return encoder_params(subnet, self.shape) / encoder_params(self.full(), self.shape)

    def sample_budget(self, rng: random.Random, fraction: float, band: float = 0.1,
                      tries: int = 200) -> Subnet:
        """A random sub-network whose encoder fraction lies within ``+-band`` (relative) of
        ``fraction``; the closest of ``tries`` draws when none does (a coarse space)."""
        low, high = fraction * (1 - band), fraction * (1 + band)
        best, best_gap = None, math.inf
        for _ in range(tries):
            subnet = self.sample_near(rng, fraction)
            size = self.encoder_fraction(subnet)
            if low <= size <= high:
                return subnet
            gap = min(abs(size - low), abs(size - high))
            if gap < best_gap:
                best, best_gap = subnet, gap
        return best

    def full(self) -> Subnet:
        return self.from_index([len(dim) - 1 for dim in self.dims])

    def smallest(self) -> Subnet:
        return self.from_index([0] * len(self.dims))

    def neighbours(self, subnet: Subnet) -> list[Subnet]:
        """Sub-networks one step away in exactly one dimension."""
        index = self.index(subnet)
        out = []
        for d, dim in enumerate(self.dims):
            for step in (-1, 1):
                j = index[d] + step
                if 0 <= j < len(dim):
                    out.append(self.from_index(index[:d] + (j,) + index[d + 1 :]))
        return out

    def encode(self, subnet: Subnet) -> list[float]:
        """Each dimension scaled to [0, 1], for model-based searchers."""
        return [i / max(1, len(dim) - 1) for i, dim in zip(self.index(subnet), self.dims)]

    def size(self) -> int:
        n = 1
        for dim in self.dims:
            n *= len(dim)
        return n

    def describe(self) -> dict:
        return {"space": self.name, "dims": dict(zip(self.dim_names, map(list, self.dims)))}


class SmallSpace(SearchSpace):
    """The tutorial's space: one (layers L, heads H, units U) for all layers, first L kept."""

    name = "small"
    options = ("any_heads", "unit_step")

    def __init__(self, shape: ModelShape, *, any_heads: bool = False, unit_step: int = 64):
        super().__init__(shape)
        heads = tuple(range(1, shape.num_heads + 1)) if any_heads else _halvings(shape.num_heads)
        self.dims = (
            tuple(range(1, shape.num_layers + 1)),
            heads,
            _steps(shape.ffn, unit_step, zero=False),
        )
        self.dim_names = ("layers", "heads", "units")

    def to_subnet(self, values: Sequence[int]) -> Subnet:
        n, h, u = values
        return Subnet(tuple((h, u) if i < n else (0, 0) for i in range(self.shape.num_layers)))

    def from_subnet(self, subnet: Subnet) -> tuple[int, ...]:
        kept = [layer for layer in subnet.layers if layer != (0, 0)]
        n = len(kept)
        if not kept or len(set(kept)) != 1 or any(layer != (0, 0) for layer in subnet.layers[n:]):
            raise SubnetError(f"{subnet} is not in the 'small' space")
        return (n, kept[0][0], kept[0][1])


class LayerSpace(SearchSpace):
    """Keep or drop each whole layer."""

    name = "layer"

    def __init__(self, shape: ModelShape):
        super().__init__(shape)
        self.dims = tuple((0, 1) for _ in range(shape.num_layers))
        self.dim_names = tuple(f"keep{i}" for i in range(shape.num_layers))

    def to_subnet(self, values: Sequence[int]) -> Subnet:
        full = (self.shape.num_heads, self.shape.ffn)
        return Subnet(tuple(full if v else (0, 0) for v in values))

    def from_subnet(self, subnet: Subnet) -> tuple[int, ...]:
        full = (self.shape.num_heads, self.shape.ffn)
        if any(layer not in (full, (0, 0)) for layer in subnet.layers):
            raise SubnetError(f"{subnet} is not in the 'layer' space")
        return tuple(int(layer == full) for layer in subnet.layers)


class LayerwiseSpace(SearchSpace):
    """Independent (heads, units) per layer; units in steps so candidates stay distinct."""

    name = "layerwise"
    options = ("unit_step",)

    def __init__(self, shape: ModelShape, *, unit_step: int = 64):
        super().__init__(shape)
        heads = tuple(range(shape.num_heads + 1))
        units = _steps(shape.ffn, unit_step, zero=True)
        self.dims = tuple(d for _ in range(shape.num_layers) for d in (heads, units))
        self.dim_names = tuple(
            n for i in range(shape.num_layers) for n in (f"heads{i}", f"units{i}")
        )

    def to_subnet(self, values: Sequence[int]) -> Subnet:
        it = iter(values)
        return Subnet(tuple(zip(it, it)))

    def from_subnet(self, subnet: Subnet) -> tuple[int, ...]:
        return tuple(v for layer in subnet.layers for v in layer)


class UniformSpace(SearchSpace):
    """Sub-networks that export as a stock transformers config (no remote code): the first
    L layers, each with **all** heads and the same U FFN units; the other layers removed.

    Heads are not searched because a stock BERT-family config derives the head size from
    ``hidden_size / num_attention_heads``: fewer heads of the original size have no stock
    form (see ``nasprune.deploy.export.vanilla``). Layers and FFN width are what remains.
    """

    name = "uniform"
    options = ("unit_step",)

    def __init__(self, shape: ModelShape, *, unit_step: int = 64):
        super().__init__(shape)
        self.dims = (tuple(range(1, shape.num_layers + 1)),
                     _steps(shape.ffn, unit_step, zero=False))
        self.dim_names = ("layers", "units")

    def to_subnet(self, values: Sequence[int]) -> Subnet:
        n, u = values
        heads = self.shape.num_heads
        return Subnet(tuple((heads, u) if i < n else (0, 0) for i in range(self.shape.num_layers)))

    def from_subnet(self, subnet: Subnet) -> tuple[int, ...]:
        n = subnet.kept_layers
        kept = set(subnet.layers[:n])
        if (n == 0 or len(kept) != 1 or next(iter(kept))[0] != self.shape.num_heads
                or any(layer != (0, 0) for layer in subnet.layers[n:])):
            raise SubnetError(f"{subnet} is not in the 'uniform' space")
        return (n, subnet.layers[0][1])


def make_space(name: str, shape: ModelShape, *, any_heads: bool = False,
               unit_step: int = 64) -> SearchSpace:
    """The space ``name`` of ``SPACES`` for ``shape``, with the options it takes."""
    if name not in SPACES:
        raise SubnetError(f"unknown search space {name!r}; choose one of {', '.join(SPACES)}")
    cls = SPACES[name]
    given = {"any_heads": any_heads, "unit_step": unit_step}
    return cls(shape, **{option: given[option] for option in cls.options})
