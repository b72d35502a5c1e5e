"""Searchers behind one ask/tell interface.

A searcher proposes sub-networks (``ask``) and learns from their objective vectors
(``tell``; every objective minimised, normalised as in :mod:`nasprune.search.pareto`). It
never sees a model, a store or an executor, so a new method is one class added to
:data:`SEARCHERS`. Every searcher first proposes the full model and the smallest
sub-network so the front always spans the range; results told before (a resumed run's
replay) are not proposed again as initial points.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Callable, Sequence

from nasprune.core.subnet import SearchSpace, Subnet
from nasprune.errors import NaspruneError
from nasprune.search.pareto import crowding_distance, non_dominated_sort, pareto_front


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


class RandomSearcher(Searcher):
    """Uniform sampling of the space: the tutorial's method (repeats are looked up)."""

    name = "random"

    def _propose(self) -> Subnet:
        return self.space.sample(self.rng)


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


class OptunaSearcher(Searcher):
    """Model-based search with an Optuna multi-objective sampler (TPE by default).

    Each dimension is an integer index parameter (ordinal, which suits TPE). Results of
    sub-networks the study did not propose (initial points, a resumed run's replay) are
    added as finished trials so the sampler learns from them too.
    """

    name = "optuna-tpe"
    max_repeats = 5

    def __init__(self, space: SearchSpace, seed: int = 0, *, n_objectives: int = 2,
                 sampler: str = "tpe", n_startup_trials: int = 10):
        super().__init__(space, seed, n_objectives=n_objectives)
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._optuna = optuna
        if sampler == "tpe":
            s = optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)
        elif sampler == "nsga2":
            s = optuna.samplers.NSGAIISampler(seed=seed, population_size=20)
        else:
            raise NaspruneError(f"unknown optuna sampler {sampler!r} (tpe, nsga2)")
        self.study = optuna.create_study(directions=["minimize"] * n_objectives, sampler=s)
        self._dists = {
            f"d{i}": optuna.distributions.IntDistribution(0, len(dim) - 1)
            for i, dim in enumerate(space.dims)
        }
        self._pending: dict[Subnet, list] = {}

    def _propose(self) -> Subnet:
        # A proposal already evaluated is answered from the history at once (the sampler
        # learns it is a repeat) and the study is asked again; after a few repeats a random
        # unseen sub-network is proposed instead, so a converged sampler does not stall.
        for _ in range(self.max_repeats):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                trial = self.study.ask(self._dists)
            index = [trial.params[f"d{i}"] for i in range(len(self.space.dims))]
            subnet = self.space.from_index(index)
            if subnet in self.history:
                self.study.tell(trial, list(self.history[subnet]))
                continue
            self._pending.setdefault(subnet, []).append(trial)
            return subnet
        return self._unseen_sample()

    def tell(self, subnet: Subnet, objectives: Sequence[float]) -> None:
        values = [float(v) for v in objectives]
        pending = self._pending.get(subnet)
        if pending:
            self.study.tell(pending.pop(0), values)
            if not pending:
                del self._pending[subnet]
        elif subnet not in self.history:
            index = self.space.index(subnet)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.study.add_trial(self._optuna.trial.create_trial(
                    params={f"d{i}": v for i, v in enumerate(index)},
                    distributions=self._dists,
                    values=values,
                ))
        super().tell(subnet, objectives)


def _optuna_nsga2(space: SearchSpace, seed: int = 0, **kw) -> OptunaSearcher:
    searcher = OptunaSearcher(space, seed, sampler="nsga2", **kw)
    searcher.name = "optuna-nsga2"
    return searcher


#: name -> factory(space, seed, **options); add a searcher by adding an entry.
SEARCHERS: dict[str, Callable[..., Searcher]] = {
    "random": RandomSearcher,
    "nsga2": NSGA2Searcher,
    "local": LocalSearcher,
    "optuna-tpe": OptunaSearcher,
    "optuna": OptunaSearcher,
    "optuna-nsga2": _optuna_nsga2,
}


def make_searcher(name: str, space: SearchSpace, seed: int = 0, *, n_objectives: int = 2,
                  **options) -> Searcher:
    """A searcher by registry name, e.g. ``make_searcher("local", space, seed=1)``."""
    if name not in SEARCHERS:
        raise NaspruneError(f"unknown searcher {name!r}; choose one of {', '.join(SEARCHERS)}")
    return SEARCHERS[name](space, seed, n_objectives=n_objectives, **options)
