"""Multi-objective search over sub-networks: searchers, the loop, the store, the front."""

from nasprune.search.pareto import (
    REFERENCE,
    dominates,
    front_of,
    full_reference,
    hypervolume,
    hypervolume_trace,
    normalise,
    pareto_front,
    pick,
    trials_hypervolume,
)
from nasprune.search.runner import (
    Done,
    Executor,
    Job,
    LocalExecutor,
    SearchResult,
    run_search,
)
from nasprune.search.searchers import SEARCHERS, Searcher, make_searcher
from nasprune.search.store import STORE_RELPATH, Trial, TrialStore

__all__ = [
    "REFERENCE",
    "SEARCHERS",
    "STORE_RELPATH",
    "Done",
    "Executor",
    "Job",
    "LocalExecutor",
    "SearchResult",
    "Searcher",
    "Trial",
    "TrialStore",
    "dominates",
    "front_of",
    "full_reference",
    "hypervolume",
    "hypervolume_trace",
    "make_searcher",
    "normalise",
    "pareto_front",
    "pick",
    "run_search",
    "trials_hypervolume",
]
