"""Multi-objective local search that spends its proposals where the front is thinnest."""

from __future__ import annotations

import math

from nasprune.core.spaces import SearchSpace
from nasprune.core.subnet import Subnet
from nasprune.search.searchers.base import Searcher


class LocalSearcher(Searcher):
    """Multi-objective local search, spread along the Pareto front.

    The first ``n_random`` proposals after the full model and the smallest sub-network are
    drawn at evenly spaced sizes (``SearchSpace.sample_near``), so the walk starts across
    the whole range. Afterwards each proposal is, with probability ``fill``, a child of the
    two adjacent front members with the widest gap between them (every dimension drawn
    between the parents' values): it lands where the front is thinnest. Otherwise it is a
    one-step neighbour (``SearchSpace.neighbours``) of a front member chosen in proportion
    to the gap around it. With probability ``restart``, or when nothing new turns up, a
    random unseen sub-network is proposed, so the search cannot get stuck.
    """

    name = "local"

    def __init__(self, space: SearchSpace, seed: int = 0, *, n_objectives: int = 2,
                 restart: float = 0.05, n_random: int = 10, fill: float = 0.5):
        super().__init__(space, seed, n_objectives=n_objectives)
        self.restart = restart
        self.fill = fill
        self.n_random = n_random
        sizes = [(i + self.rng.random()) / n_random for i in range(n_random)]
        self.rng.shuffle(sizes)
        self._start_sizes = sizes

    def _propose(self) -> Subnet:
        if self._start_sizes and len(self.history) < self.n_random + 2:  # not on resume
            size = self._start_sizes.pop()
            return self._unseen_sample(lambda: self.space.sample_near(self.rng, size))
        if self.rng.random() >= self.restart:
            front = self._front_by_cost()
            if len(front) >= 2:
                gaps = self._gaps(front)
                if self.rng.random() < self.fill:
                    widest = max(range(len(gaps)), key=gaps.__getitem__)
                    child = self._between(front[widest], front[widest + 1])
                    if child not in self.history:
                        return child
                weights = [a + b for a, b in zip([0.0, *gaps], [*gaps, 0.0])]
                order = self.rng.choices(range(len(front)), weights=weights, k=len(front))
                for i in dict.fromkeys([*order, *range(len(front))]):  # each member once
                    candidates = [n for n in self.space.neighbours(front[i])
                                  if n not in self.history]
                    if candidates:
                        return self.rng.choice(candidates)
        return self._unseen_sample()

    def _front_by_cost(self) -> list[Subnet]:
        """The front ordered by cost (the mean of the objectives after the error)."""
        return sorted(self._front(), key=lambda s: sum(self.history[s][1:]))

    def _gaps(self, front: list[Subnet]) -> list[float]:
        """Distance in normalised objective space between neighbours on the front."""
        points = [self.history[s] for s in front]
        return [math.dist(a, b) + 1e-12 for a, b in zip(points, points[1:])]

    def _between(self, a: Subnet, b: Subnet) -> Subnet:
        ia, ib = self.space.index(a), self.space.index(b)
        return self.space.from_index(
            [self.rng.randint(min(x, y), max(x, y)) for x, y in zip(ia, ib)])
