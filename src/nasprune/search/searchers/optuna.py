"""Optuna's multi-objective samplers (TPE, NSGA-II) behind the ask/tell contract.

Optuna is an optional dependency, imported when such a searcher is made.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from nasprune.core.spaces import SearchSpace
from nasprune.core.subnet import Subnet
from nasprune.errors import NaspruneError
from nasprune.search.searchers.base import Searcher


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


def optuna_nsga2(space: SearchSpace, seed: int = 0, **kw) -> OptunaSearcher:
    """``optuna-nsga2``: the Optuna searcher with Optuna's NSGA-II sampler."""
    searcher = OptunaSearcher(space, seed, sampler="nsga2", **kw)
    searcher.name = "optuna-nsga2"
    return searcher
