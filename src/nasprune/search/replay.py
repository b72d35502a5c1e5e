"""Exact resume: bring a fresh searcher to the state the interrupted search left it in.

A resumed search proposes exactly what the uninterrupted one would have, so stopping and
resuming a run changes neither its trials nor its pick.
"""

from __future__ import annotations

from collections.abc import Sequence

from nasprune.core.spaces import SearchSpace
from nasprune.search.pareto import normalise
from nasprune.search.searchers.base import Searcher
from nasprune.search.store import Trial


def space_members(space: SearchSpace, subnets) -> set:
    """The sub-networks of ``subnets`` that are points of ``space``."""
    out = set()
    for subnet in subnets:
        try:
            space.index(subnet)
        except ValueError:
            continue  # not of this space (cannot happen with matching meta)
        out.add(subnet)
    return out


def replay(searcher: Searcher, stored: list[Trial], full_trial: Trial,
           objectives: Sequence[str], full: dict, *, exact: bool) -> tuple[list, bool]:
    """Bring a fresh searcher to the state it had when the stored trials were made.

    One job at a time, the search was: tell the full model, then ask, tell, ask, tell...
    so the same seed asked again proposes the stored trials in their order (and, between
    them, the proposals that were answered from the store). Replaying those asks makes a
    resumed search propose exactly what the uninterrupted one would have. Should a
    proposal differ (trials made by several workers at once, another searcher), the
    remaining trials are told as they are. Returns the proposal that replay asked for but
    the store does not answer (the search's next job) and whether replay was exact.
    """
    by_subnet = {t.subnet: t for t in stored}
    searcher.tell(full_trial.subnet, normalise(full_trial.metrics, objectives, full))
    pending = [t for t in stored if t.subnet != full_trial.subnet]
    told = {full_trial.subnet}
    carry: list = []
    position, stale = 0, 0
    while exact and position < len(pending):
        proposal = searcher.ask()
        if proposal in told:  # answered from the store, as the search did then
            searcher.tell(proposal, normalise(by_subnet[proposal].metrics, objectives, full))
            stale += 1
            if stale > 1000:
                exact = False
            continue
        stale = 0
        if proposal == pending[position].subnet:
            searcher.tell(proposal, normalise(pending[position].metrics, objectives, full))
            told.add(proposal)
            position += 1
            continue
        exact = False
        if proposal in by_subnet:  # stored, only later: told below with the rest
            pass
        else:
            carry.append(proposal)
    for t in pending[position:]:
        searcher.tell(t.subnet, normalise(t.metrics, objectives, full))
    return carry, exact
