"""The search loop: ask -> evaluate (through an executor) -> store -> tell; resumable.

Executors (:mod:`nasprune.search.executors`) decide *where* evaluations run, in process or
in parallel workers, through the same three methods. The driver alone talks to the
searcher and the store, so resume, duplicates and the Pareto front behave the same on
every backend.

Resume: results already in the store are replayed into the searcher
(:mod:`nasprune.search.replay`) before it is asked anything; a proposal that is already
stored is looked up and told again, never re-evaluated, and does not count as a new
trial. The search stops when the store holds ``n_trials`` candidates (or the space is
exhausted).

Multi-fidelity (``low_fidelity=f``): each candidate is first evaluated on fraction ``f``
of the search split and promoted to the full set only if that result is not dominated
by the current full-fidelity front. Every trial records both looks and whether it was
promoted; trials never promoted do not enter the front, the hypervolume or picks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from nasprune.core.spaces import SearchSpace
from nasprune.core.subnet import Subnet
from nasprune.errors import NaspruneError
from nasprune.progress import ProgressBar
from nasprune.search.executors.base import Done, Evaluate, Executor, Job
from nasprune.search.executors.local import LocalExecutor
from nasprune.search.pareto import (
    dominates,
    front_of,
    hypervolume,
    normalise,
    reference_point,
)
from nasprune.search.replay import replay, space_members
from nasprune.search.searchers.base import Searcher
from nasprune.search.store import Trial, TrialStore

# --------------------------------------------------------------------------- result


@dataclass
class SearchResult:
    """What a (possibly resumed) search ended with; ``trials`` are all stored trials."""

    trials: list[Trial]
    front: list[Trial]
    hypervolume: float
    objectives: tuple[str, ...]
    full: dict[str, float]
    evaluated: int = 0  # candidates evaluated by this call
    reused: int = 0  # proposals answered from the store
    promoted: int = 0  # multi-fidelity: candidates that went on to the full set
    replay_exact: bool = True  # a resumed search proposes what the uninterrupted one would
    wall_s: float = 0.0
    history: list[float] = field(default_factory=list)  # hypervolume after each new trial


# --------------------------------------------------------------------------- the loop


def _objectives_of(trial: Trial, objectives: Sequence[str], full: dict) -> tuple[float, ...]:
    return normalise(trial.metrics, objectives, full)


def run_search(
    space: SearchSpace,
    searcher: Searcher,
    evaluate: Evaluate | None,
    store: TrialStore,
    n_trials: int,
    objectives: Sequence[str] = ("error", "params"),
    executor: Executor | None = None,
    progress: bool = True,
    *,
    low_fidelity: float | None = None,
    max_failures: int = 3,
    on_trial: Callable[[Trial], None] | None = None,
) -> SearchResult:
    """Run (or resume) a search until ``store`` holds ``n_trials`` evaluated candidates.

    ``evaluate`` may be ``None`` when ``executor`` brings its own evaluation (e.g. Ray
    actors holding the super-network). The full model is evaluated first, at full
    fidelity: it is the reference every objective is normalised by. A failed evaluation
    is resubmitted; the ``max_failures``-th failure in one call stops the search with that
    error (finished trials stay stored). The store's meta records the space, objectives,
    searcher, target and fidelity of the run.
    """
    objectives = tuple(objectives)
    if n_trials < 1:
        raise NaspruneError("n_trials must be at least 1")
    if not objectives:
        raise NaspruneError("at least one objective is needed")
    if low_fidelity is not None and not 0 < low_fidelity < 1:
        raise NaspruneError(f"low_fidelity must be in (0, 1), got {low_fidelity}")
    own_executor = executor is None
    if executor is None:
        if evaluate is None:
            raise NaspruneError("run_search needs an evaluate function or an executor")
        executor = LocalExecutor(evaluate)
    _check_meta(store, space, objectives)
    target = min(n_trials, space.size())
    started = time.perf_counter()
    name = getattr(searcher, "name", type(searcher).__name__)
    full_subnet = space.full()
    store.set_meta("searcher", name)
    store.set_meta("n_trials", n_trials)
    store.set_meta("low_fidelity", low_fidelity)
    result = SearchResult([], [], 0.0, objectives, {})
    failures = [0]

    def wait() -> list[Done]:
        done = executor.results()
        for d in done:
            if d.error is not None:
                failures[0] += 1
                if failures[0] >= max_failures:
                    raise d.error
                executor.submit(d.job)  # retried; nothing was stored for it
        return [d for d in done if d.error is None]

    bar = ProgressBar(progress, target, 0, f"search ({name})")
    try:
        # 1. the reference: the full model at full fidelity
        full_trial = store.get(full_subnet)
        if full_trial is None or not full_trial.is_full_fidelity:
            if full_trial is not None:
                raise NaspruneError("the stored full model was not evaluated at full fidelity")
            executor.submit(Job(full_subnet, 1.0))
            done: list[Done] = []
            while not done:
                done = wait()
            full_trial = store.add(full_subnet, done[0].metrics, wall_s=done[0].wall_s,
                                   searcher=name)
            result.evaluated += 1
            if on_trial:
                on_trial(full_trial)
        full = dict(full_trial.metrics)
        normalise(full, objectives, full)  # fails early if an objective is not measured
        result.full = full

        # 2. replay the store into the searcher, as the uninterrupted search would have
        front_pts: list[tuple[float, ...]] = []
        trials = store.trials()
        members = space_members(space, [t.subnet for t in trials])
        stored = [t for t in trials if t.subnet in members]
        carry, exact = replay(searcher, stored, full_trial, objectives, full,
                              exact=executor.slots == 1)
        result.replay_exact = exact
        count = len(stored)
        for t in stored:
            if t.is_full_fidelity:
                front_pts = _update_front(front_pts, _objectives_of(t, objectives, full))
        ref = reference_point(len(objectives))
        hv = hypervolume(front_pts, ref)
        bar.update(count, f"HV {hv:.4f}")

        # 3. the loop
        in_flight: dict[Subnet, int] = {}  # subnet -> extra askers waiting for its result
        waiting_full: dict[Subnet, tuple[dict, float]] = {}  # promoted: low look, its time
        stale = 0
        max_stale = 1000 + 20 * target
        while count + len(in_flight) < target or in_flight:
            # fill the executor
            while count + len(in_flight) < target and len(in_flight) < executor.slots:
                subnet = carry.pop() if carry else searcher.ask()
                stored = store.get(subnet)
                if stored is not None:
                    searcher.tell(subnet, _objectives_of(stored, objectives, full))
                    result.reused += 1
                    stale += 1
                elif subnet in in_flight:
                    in_flight[subnet] += 1
                    stale += 1
                else:
                    executor.submit(Job(subnet, low_fidelity or 1.0))
                    in_flight[subnet] = 0
                    stale = 0
                if stale > max_stale:
                    break
            if not in_flight:
                break  # exhausted: the searcher only repeats itself
            for d in wait():
                subnet = d.job.subnet
                pts = normalise(d.metrics, objectives, full)
                if low_fidelity is not None and d.job.fidelity < 1.0:
                    if not any(dominates(f, pts) for f in front_pts):
                        executor.submit(Job(subnet, 1.0))
                        waiting_full[subnet] = (d.metrics, d.wall_s)
                        continue
                    trial = store.add(subnet, d.metrics, fidelity=d.job.fidelity,
                                      low_metrics=d.metrics, low_fidelity=d.job.fidelity,
                                      promoted=False, wall_s=d.wall_s, searcher=name)
                elif low_fidelity is not None:
                    low, low_wall = waiting_full.pop(subnet)
                    trial = store.add(subnet, d.metrics, fidelity=1.0, low_metrics=low,
                                      low_fidelity=low_fidelity, promoted=True,
                                      wall_s=d.wall_s + low_wall, searcher=name)
                    result.promoted += 1
                else:
                    trial = store.add(subnet, d.metrics, wall_s=d.wall_s, searcher=name)
                result.evaluated += 1
                count += 1
                waiters = in_flight.pop(subnet)
                pts = _objectives_of(trial, objectives, full)
                for _ in range(1 + waiters):
                    searcher.tell(subnet, pts)
                if trial.is_full_fidelity:
                    front_pts = _update_front(front_pts, pts)
                    hv = hypervolume(front_pts, ref)
                result.history.append(hv)
                info = f"HV {hv:.4f} front {len(front_pts)}"
                if low_fidelity is not None:
                    info += f" promoted {result.promoted}/{result.evaluated}"
                bar.update(count, info)
                if on_trial:
                    on_trial(trial)
    finally:
        bar.close()
        if own_executor:
            executor.close()

    trials = store.trials()
    full_only = [t for t in trials if t.is_full_fidelity]
    result.trials = trials
    result.front = front_of(full_only, objectives, full)
    result.hypervolume = hypervolume(
        [_objectives_of(t, objectives, full) for t in full_only], reference_point(len(objectives))
    )
    result.wall_s = time.perf_counter() - started
    return result


def _update_front(front: list[tuple[float, ...]], p: tuple[float, ...]) -> list:
    if any(dominates(q, p) or q == p for q in front):
        return front
    return [q for q in front if not dominates(p, q)] + [p]


def _check_meta(store: TrialStore, space: SearchSpace, objectives: tuple[str, ...]) -> None:
    """Refuse to mix searches of different spaces in one store; record what this one is."""
    described = space.describe()
    previous = store.get_meta("space")
    if previous is not None and previous != described and len(store):
        raise NaspruneError(
            f"{store.path} holds a search of space {previous.get('space')!r} with other "
            "dimensions; use a new run directory"
        )
    store.set_meta("space", described)
    store.set_meta("shape", space.shape.to_dict())
    store.set_meta("objectives", list(objectives))
    store.set_meta("full_subnet", space.full().to_json())

