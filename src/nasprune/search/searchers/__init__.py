"""Searchers: the methods that propose sub-networks to evaluate, behind one ask/tell
contract (:class:`~nasprune.search.searchers.base.Searcher`). The search loop drives them;
add one with a file here and a line in :data:`SEARCHERS`, and ``tests/test_searchers.py``
runs its contract tests over it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nasprune.registry import Registry

if TYPE_CHECKING:
    from nasprune.core.spaces import SearchSpace
    from nasprune.search.searchers.base import Searcher

#: name -> factory(space, seed, *, n_objectives, **options) of a searcher.
SEARCHERS = Registry("searcher", {
    "random": "nasprune.search.searchers.random:RandomSearcher",
    "nsga2": "nasprune.search.searchers.nsga2:NSGA2Searcher",
    "local": "nasprune.search.searchers.local:LocalSearcher",
    "optuna-tpe": "nasprune.search.searchers.optuna:OptunaSearcher",
    "optuna": "nasprune.search.searchers.optuna:OptunaSearcher",
    "optuna-nsga2": "nasprune.search.searchers.optuna:optuna_nsga2",
}, about={
    "random": "uniform samples (the tutorial's)",
    "nsga2": "evolution of the front (crossover, mutation, crowding)",
    "local": "mutates the front where its widest gap is",
    "optuna-tpe": "Optuna's multi-objective TPE",
    "optuna": "the same as optuna-tpe",
    "optuna-nsga2": "Optuna's NSGA-II",
})


def make_searcher(name: str, space: SearchSpace, seed: int = 0, *, n_objectives: int = 2,
                  **options) -> Searcher:
    """A searcher by registry name, e.g. ``make_searcher("local", space, seed=1)``."""
    return SEARCHERS[name](space, seed, n_objectives=n_objectives, **options)
