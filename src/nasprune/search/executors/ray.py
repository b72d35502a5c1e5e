"""Ray actors, on this machine or a cluster; Ray is optional and imported only here."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable

from nasprune.errors import NaspruneError, require
from nasprune.search.executors.base import Evaluate, Job
from nasprune.search.executors.pool import (
    WorkerDied,
    WorkerPool,
    set_threads,
    timed,
    worker_threads,
)
from nasprune.search.executors.spec import EvaluatorSpec


class _EvalActor:
    """A Ray actor holding one evaluator; made remote lazily so Ray stays optional."""

    def __init__(self, factory: Callable[[], Evaluate], threads: int, use_gpu: bool):
        set_threads(threads)
        if isinstance(factory, EvaluatorSpec):
            self.evaluate = factory.build("cuda" if use_gpu else "cpu")
        else:
            self.evaluate = factory()

    def ready(self) -> dict:
        """Where this actor runs: process id and torch threads (also: construction done)."""
        import torch

        return {"pid": os.getpid(), "threads": torch.get_num_threads()}

    def run(self, job: Job) -> tuple[dict, float]:
        return timed(self.evaluate, job)


class RayExecutor(WorkerPool):
    """Ray actors, each building the evaluator once from a factory put in the object store.

    ``address=None`` starts a private local Ray (``num_cpus = workers * cpus_per_worker``, no
    dashboard; shut down on ``close``) unless Ray is already initialised in this process;
    ``"auto"`` (this machine's ``ray start`` cluster, or ``RAY_ADDRESS``), ``"host:6379"`` or
    ``"ray://host:10001"`` (Ray Client) joins a running cluster. Each actor reserves
    ``cpus_per_worker`` CPUs and ``gpus_per_worker`` GPUs and uses that many torch threads.
    A dead actor (``ray.kill``, a lost node) fails its in-flight job and is replaced.
    """

    def __init__(self, factory: Callable[[], Evaluate], workers: int = 2, *,
                 address: str | None = None, cpus_per_worker: float = 1,
                 gpus_per_worker: float = 0, max_replacements: int | None = None,
                 start_timeout: float | None = 600, init_kwargs: dict | None = None):
        super().__init__(workers, max_replacements)
        ray = require("ray", "ray")
        self._ray = ray
        self._owns_ray = False
        if not ray.is_initialized():
            if address:  # join a cluster: its resources and settings are the cluster's
                ray.init(address=address, **(init_kwargs or {}))
            else:  # "local": a new instance, even if `ray start` or RAY_ADDRESS name one
                ray.init(address="local", num_cpus=max(1, math.ceil(workers * cpus_per_worker)),
                         **{"include_dashboard": False, "logging_level": logging.WARNING,
                            **(init_kwargs or {})})
            self._owns_ray = True
        self.cpus_per_worker, self.gpus_per_worker = cpus_per_worker, gpus_per_worker
        self._actor_class = ray.remote(_EvalActor)
        started = time.perf_counter()
        self._factory_ref = ray.put(factory)  # shipped once; every actor reads this object
        self._idle.extend(self._new_worker() for _ in range(workers))
        try:
            ray.get([a.ready.remote() for a in self._idle], timeout=start_timeout)
        except ray.exceptions.GetTimeoutError as exc:
            resources = ray.available_resources()
            self.close()
            raise NaspruneError(
                f"Ray could not start {workers} workers with {cpus_per_worker} CPU(s) and "
                f"{gpus_per_worker} GPU(s) each within {start_timeout:.0f}s; available: "
                f"{resources}") from exc
        except ray.exceptions.RayActorError as exc:
            self.close()
            raise NaspruneError(f"a Ray search worker could not build its evaluator: {exc}") \
                from exc
        self.startup_s = time.perf_counter() - started

    @property
    def actors(self) -> list:
        """Every live actor handle (idle or busy)."""
        return [*self._idle, *(w for w, _, _ in self._running.values())]

    def _new_worker(self):
        options = {"num_cpus": self.cpus_per_worker, "max_restarts": 0}
        if self.gpus_per_worker:
            options["num_gpus"] = self.gpus_per_worker
        return self._actor_class.options(**options).remote(
            self._factory_ref, worker_threads(self.cpus_per_worker), self.gpus_per_worker > 0)

    def _start(self, worker, job: Job):
        return worker.run.remote(job)

    def _wait(self, handles: list) -> list:
        ray = self._ray
        ready, rest = ray.wait(handles, num_returns=1)
        if rest:  # collect whatever else has finished too
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        return ready

    def _fetch(self, handle) -> tuple[dict, float]:
        exceptions = self._ray.exceptions
        try:
            return self._ray.get(handle)
        except exceptions.RayActorError as exc:  # died, was killed, or its node is gone
            raise WorkerDied(f"Ray search worker died: {exc}") from exc
        except exceptions.RayTaskError as exc:  # the evaluation raised: re-raise its type
            raise exc.as_instanceof_cause() from None

    def _discard(self, worker) -> None:
        self._kill_all([worker])

    def _kill_all(self, actors: list) -> None:
        for actor in actors:
            try:
                self._ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone
                pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.clear()
        self._kill_all(self.actors)
        self._idle.clear()
        self._running.clear()
        self._factory_ref = None
        if self._owns_ray:
            self._ray.shutdown()
