"""Uniform random search: the baseline every other searcher is measured against."""

from __future__ import annotations

from nasprune.core.subnet import Subnet
from nasprune.search.searchers.base import Searcher


class RandomSearcher(Searcher):
    """Uniform sampling of the space: the tutorial's method (repeats are looked up)."""

    name = "random"

    def _propose(self) -> Subnet:
        return self.space.sample(self.rng)
