"""The ask/tell contract every searcher implements, and what they share.

A searcher proposes sub-networks (``ask``) and learns from their objective vectors
(``tell``; every objective minimised, normalised as in :mod:`nasprune.search.pareto`). It
never sees a model, a store or an executor. Every searcher first proposes the full model
and the smallest sub-network so the front always spans the range; results told before (a
resumed run's replay) are not proposed again as initial points.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from nasprune.core.spaces import SearchSpace
from nasprune.core.subnet import Subnet
from nasprune.search.pareto import pareto_front


class Searcher:
    """Base class: initial proposals, the history of told results, the ask/tell contract."""

    name = "abstract"

    def __init__(self, space: SearchSpace, seed: int = 0, *, n_objectives: int = 2):
        self.space = space
        self.seed = seed
        self.n_objectives = n_objectives
        self.rng = random.Random(seed)
        self.history: dict[Subnet, tuple[float, ...]] = {}
        self._initial = [space.full(), space.smallest()]

    def ask(self) -> Subnet:
        """The next sub-network to evaluate (always one of ``space``)."""
        while self._initial:
            subnet = self._initial.pop(0)
            if subnet not in self.history:
                return subnet
        return self._propose()

    def tell(self, subnet: Subnet, objectives: Sequence[float]) -> None:
        """The (normalised, minimised) objectives of ``subnet``; may be told again."""
        self.history[subnet] = tuple(float(v) for v in objectives)

    # -- for subclasses
    def _propose(self) -> Subnet:
        raise NotImplementedError

    def _front(self) -> list[Subnet]:
        subnets = list(self.history)
        points = [self.history[s] for s in subnets]
        return [subnets[i] for i in pareto_front(points)]

    def _unseen_sample(self, draw: Callable[[], Subnet] | None = None,
                       draw_tries: int = 20, tries: int = 100) -> Subnet:
        """A random sub-network not told yet: from ``draw`` when given (``draw_tries``
        attempts), else uniform over the space; a seen one if the space looks exhausted."""
        for _ in range(draw_tries if draw is not None else 0):
            subnet = draw()
            if subnet not in self.history:
                return subnet
        subnet = self.space.sample(self.rng)
        for _ in range(tries):
            if subnet not in self.history:
                break
            subnet = self.space.sample(self.rng)
        return subnet
