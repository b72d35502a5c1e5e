"""Steady-state NSGA-II, written out here so it needs no optimisation library."""

from __future__ import annotations

from collections.abc import Sequence

from nasprune.core.spaces import SearchSpace
from nasprune.core.subnet import Subnet
from nasprune.search.pareto import crowding_distance, non_dominated_sort
from nasprune.search.searchers.base import Searcher


class NSGA2Searcher(Searcher):
    """Steady-state NSGA-II over the space's index vectors.

    Until ``population`` results are told, proposals are random. Then each ask selects the
    survivors (non-dominated sorting + crowding distance over everything told), picks two
    parents by binary tournament, and returns their uniform crossover mutated per
    dimension (one step up/down with probability ``1/n_dims``, at least one change when
    the child repeats a seen sub-network).
    """

    name = "nsga2"

    def __init__(self, space: SearchSpace, seed: int = 0, *, n_objectives: int = 2,
                 population: int = 20):
        super().__init__(space, seed, n_objectives=n_objectives)
        self.population = population
        self._survivors: list[tuple[Subnet, int, float]] | None = None

    def tell(self, subnet: Subnet, objectives: Sequence[float]) -> None:
        super().tell(subnet, objectives)
        self._survivors = None

    def _select(self) -> list[tuple[Subnet, int, float]]:
        """(subnet, rank, crowding) of the best ``population`` told results."""
        if self._survivors is None:
            subnets = list(self.history)
            points = [self.history[s] for s in subnets]
            chosen: list[tuple[Subnet, int, float]] = []
            for rank, front in enumerate(non_dominated_sort(points)):
                dist = crowding_distance(points, front)
                ordered = sorted(front, key=lambda i: -dist[i])
                for i in ordered:
                    if len(chosen) < self.population:
                        chosen.append((subnets[i], rank, dist[i]))
                if len(chosen) >= self.population:
                    break
            self._survivors = chosen
        return self._survivors

    def _tournament(self, pool: list[tuple[Subnet, int, float]]) -> Subnet:
        a, b = self.rng.choice(pool), self.rng.choice(pool)
        if (a[1], -a[2]) <= (b[1], -b[2]):
            return a[0]
        return b[0]

    def _mutate(self, index: list[int], force: bool) -> list[int]:
        dims = self.space.dims
        rate = 1.0 / len(dims)
        changed = False
        for d, dim in enumerate(dims):
            if len(dim) > 1 and self.rng.random() < rate:
                index[d] = min(len(dim) - 1, max(0, index[d] + self.rng.choice((-1, 1))))
                changed = True
        if force and not changed:
            movable = [d for d, dim in enumerate(dims) if len(dim) > 1]
            if movable:
                d = self.rng.choice(movable)
                step = self.rng.choice((-1, 1))
                if not 0 <= index[d] + step < len(dims[d]):
                    step = -step
                index[d] += step
        return index

    def _propose(self) -> Subnet:
        if len(self.history) < self.population:
            return self._unseen_sample()
        pool = self._select()
        for attempt in range(20):
            p1 = self.space.index(self._tournament(pool))
            p2 = self.space.index(self._tournament(pool))
            child = [a if self.rng.random() < 0.5 else b for a, b in zip(p1, p2)]
            subnet = self.space.from_index(self._mutate(child, force=attempt > 0))
            if subnet not in self.history:
                return subnet
        return self._unseen_sample()
