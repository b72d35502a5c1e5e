"""Worker processes on this machine, without Ray: one spawned process per worker."""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor
from concurrent.futures import wait as wait_futures
from concurrent.futures.process import BrokenProcessPool

from nasprune.errors import NaspruneError
from nasprune.search.executors.base import Evaluate, Job
from nasprune.search.executors.pool import (
    WorkerDied,
    WorkerPool,
    set_threads,
    timed,
    worker_threads,
)

#: This worker process's evaluator, built once by :func:`_init_process`.
_worker_evaluate: Evaluate | None = None


def _init_process(factory: Callable[[], Evaluate], threads: int) -> None:
    """Pool initializer: build the evaluator once for this process."""
    global _worker_evaluate
    set_threads(threads)
    _worker_evaluate = factory()


def _process_pid() -> int:
    return os.getpid()


def _process_evaluate(job: Job) -> tuple[dict, float]:
    assert _worker_evaluate is not None, "worker used before its initializer ran"
    return timed(_worker_evaluate, job)


class ProcessExecutor(WorkerPool):
    """Worker processes on this machine, without Ray.

    Each worker is a one-process ``ProcessPoolExecutor`` (spawn context) whose initializer
    builds the evaluator once; one pool per worker so that a crashed process breaks only
    its own pool (its single in-flight job is reported as failed, the pool replaced).
    ``factory`` is pickled to each process: an :class:`EvaluatorSpec` or any picklable
    zero-argument callable returning an ``evaluate`` function.
    """

    def __init__(self, factory: Callable[[], Evaluate], workers: int = 2, *,
                 cpus_per_worker: float = 1, max_replacements: int | None = None,
                 start_timeout: float | None = 600):
        super().__init__(workers, max_replacements)
        self.factory = factory
        self.threads = worker_threads(cpus_per_worker)
        self._context = multiprocessing.get_context("spawn")
        self.pids: dict[ProcessPoolExecutor, int] = {}  # filled as processes come up
        self._ready: dict[ProcessPoolExecutor, Future] = {}
        started = time.perf_counter()
        pools = [self._new_worker() for _ in range(workers)]
        self._idle.extend(pools)
        try:
            wait_futures(list(self._ready.values()), timeout=start_timeout)
            for pool in pools:
                self._ready.pop(pool).result(timeout=0)
        except (BrokenProcessPool, TimeoutError) as exc:
            self.close()
            raise NaspruneError("a search worker process could not build its evaluator "
                                f"({type(exc).__name__}; see the output above)") from exc
        self.startup_s = time.perf_counter() - started

    def _new_worker(self) -> ProcessPoolExecutor:
        pool = ProcessPoolExecutor(1, mp_context=self._context, initializer=_init_process,
                                   initargs=(self.factory, self.threads))
        ready = pool.submit(_process_pid)  # starts the process, which runs the initializer
        self._ready[pool] = ready

        def record(future: Future) -> None:
            if not future.cancelled() and future.exception() is None:
                self.pids[pool] = future.result()

        ready.add_done_callback(record)
        return pool

    def _start(self, worker: ProcessPoolExecutor, job: Job) -> Future:
        return worker.submit(_process_evaluate, job)

    def _wait(self, handles: list[Future]) -> list[Future]:
        done, _ = wait_futures(handles, return_when=FIRST_COMPLETED)
        return list(done)

    def _fetch(self, handle: Future) -> tuple[dict, float]:
        try:
            return handle.result()
        except BrokenProcessPool as exc:
            raise WorkerDied(f"search worker process died: {exc}") from exc

    def _discard(self, worker: ProcessPoolExecutor) -> None:
        self.pids.pop(worker, None)
        self._ready.pop(worker, None)
        worker.shutdown(wait=False, cancel_futures=True)

    def running(self) -> list[tuple[int | None, Job]]:
        """(process id, job) for every job in flight."""
        return [(self.pids.get(pool), job) for pool, job in super().running()]

    def close(self) -> None:
        self._closed = True
        self._queue.clear()
        for pool in [*self._idle, *(w for w, _, _ in self._running.values())]:
            pool.shutdown(wait=False, cancel_futures=True)
        self._idle.clear()
        self._running.clear()
        self._ready.clear()
