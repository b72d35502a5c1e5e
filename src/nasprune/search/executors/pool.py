"""Dispatch bookkeeping shared by the parallel executors (worker processes, Ray actors).

Failure model: a job is owned by exactly one worker until that worker answers. A worker
that dies (killed actor, lost node, crashed process) yields an error ``Done`` for its one
in-flight job, which the runner resubmits to another worker, and is replaced by a fresh
worker; other workers' jobs are untouched. A finished job is reported once, so no result is
lost or doubled.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any

from nasprune.errors import NaspruneError
from nasprune.search.executors.base import Done, Evaluate, Job


class WorkerDied(RuntimeError):
    """The worker holding a job disappeared before answering; the job was not evaluated."""


def worker_threads(cpus: float) -> int:
    """The torch threads of a worker that reserves ``cpus`` CPUs (at least one)."""
    return max(1, math.floor(cpus))


def set_threads(n: int) -> None:
    """In a worker: ``n`` intra-op torch threads, one inter-op thread."""
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass


def timed(evaluate: Evaluate, job: Job) -> tuple[dict, float]:
    """In a worker: the job's metrics and the seconds its evaluation took."""
    start = time.perf_counter()
    metrics = evaluate(job.subnet, job.fidelity)
    return dict(metrics), time.perf_counter() - start


class WorkerPool:
    """Dispatch bookkeeping shared by the parallel backends: idle workers, a queue, jobs in flight.

    Subclasses start a worker, start a job on it, wait for handles and fetch a handle's
    result, raising :class:`WorkerDied` when the worker is gone.
    """

    def __init__(self, workers: int, max_replacements: int | None):
        if workers < 1:
            raise NaspruneError(f"workers must be at least 1, got {workers}")
        self.slots = workers
        self.max_replacements = 3 * workers if max_replacements is None else max_replacements
        self.replaced = 0
        self.deaths = 0
        self._idle: deque = deque()
        self._queue: deque[Job] = deque()
        self._running: dict[Any, tuple[Any, Job, float]] = {}  # handle -> (worker, job, t0)
        self._closed = False

    # -- subclass hooks
    def _new_worker(self): ...
    def _start(self, worker, job: Job): ...
    def _wait(self, handles: list) -> list: ...
    def _fetch(self, handle) -> tuple[dict, float]: ...
    def _discard(self, worker) -> None: ...

    # -- the protocol
    def submit(self, job: Job) -> None:
        if self._closed:
            raise NaspruneError("this executor is closed")
        self._queue.append(job)
        self._dispatch()

    def results(self) -> list[Done]:
        self._dispatch()
        if not self._running:
            if self._queue:
                raise NaspruneError("no workers left to run the search (all of them died)")
            return []
        out: list[Done] = []
        for handle in self._wait(list(self._running)):
            worker, job, started = self._running.pop(handle)
            try:
                metrics, wall_s = self._fetch(handle)
            except WorkerDied as exc:
                out.append(Done(job, None, time.perf_counter() - started, exc))
                self._lost(worker)
                continue
            except Exception as exc:  # noqa: BLE001 - the evaluation failed; worker is fine
                out.append(Done(job, None, time.perf_counter() - started, exc))
            else:
                out.append(Done(job, metrics, wall_s))
            self._idle.append(worker)
        self._dispatch()
        return out

    def running(self) -> list[tuple[Any, Job]]:
        """(worker, job) for every job in flight: which worker holds which candidate."""
        return [(worker, job) for worker, job, _ in self._running.values()]

    # -- internals
    def _dispatch(self) -> None:
        while self._idle and self._queue:
            worker = self._idle.popleft()
            job = self._queue.popleft()
            self._running[self._start(worker, job)] = (worker, job, time.perf_counter())

    def _lost(self, worker) -> None:
        """Drop a dead worker and, within the replacement budget, start a fresh one."""
        self.deaths += 1
        self._discard(worker)
        if self.replaced < self.max_replacements:
            self.replaced += 1
            self._idle.append(self._new_worker())
