"""In-process evaluation, one job at a time: the default, and the reference the parallel
executors must match."""

from __future__ import annotations

import time
from collections import deque

from nasprune.search.executors.base import Done, Evaluate, Job


class LocalExecutor:
    """In-process, one job at a time: ``results`` runs the oldest submitted job."""

    slots = 1

    def __init__(self, evaluate: Evaluate):
        self.evaluate = evaluate
        self._queue: deque[Job] = deque()

    def submit(self, job: Job) -> None:
        self._queue.append(job)

    def results(self) -> list[Done]:
        if not self._queue:
            return []
        job = self._queue.popleft()
        start = time.perf_counter()
        try:
            metrics = self.evaluate(job.subnet, job.fidelity)
        except Exception as exc:  # noqa: BLE001 - reported to the driver, which decides
            return [Done(job, None, time.perf_counter() - start, exc)]
        return [Done(job, dict(metrics), time.perf_counter() - start)]

    def close(self) -> None:
        self._queue.clear()
