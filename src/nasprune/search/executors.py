"""Parallel executors for the search loop: worker processes on one machine, or Ray actors.

Both implement the runner's ``Executor`` protocol (``slots``, ``submit``, ``results``,
``close``), so the driver keeps the searcher, the trial store and the front exactly as with
:class:`~nasprune.search.runner.LocalExecutor`; only *where* ``evaluate`` runs changes.

A worker builds its evaluator **once** from a picklable factory (usually an
:class:`EvaluatorSpec`: the super-network's weights, config and tokenised validation set)
and then evaluates one candidate at a time. Ray ships the factory once through the object
store (``ray.put``); every actor reads it from there instead of re-reading checkpoints.

Failure model: a job is owned by exactly one worker until that worker answers. A worker
that dies (killed actor, lost node, crashed process) yields an error ``Done`` for its one
in-flight job, which the runner resubmits to another worker, and is replaced by a fresh
worker; other workers' jobs are untouched. A finished job is reported once, so no result is
lost or doubled.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import time
import warnings
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor
from concurrent.futures import wait as wait_futures
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

from nasprune.errors import NaspruneError, require
from nasprune.search.runner import Done, Evaluate, Job, LocalExecutor

BACKENDS = ("local", "process", "ray")


class WorkerDied(RuntimeError):
    """The worker holding a job disappeared before answering; the job was not evaluated."""


# --------------------------------------------------------------------------- the spec


@dataclass
class EvaluatorSpec:
    """Everything a worker needs to rebuild a ``SubnetEvaluator``; picklable, no file paths.

    Weights are numpy arrays so that Ray can map them straight from its object store
    (one copy per node, not per actor). Calling the spec builds the evaluator.
    """

    model_class: type
    config: Any  # the model's PretrainedConfig
    weights: dict[str, Any]  # name -> numpy array (or a CPU tensor for dtypes numpy lacks)
    order: dict | None
    validation: Any  # nasprune.data.tasks.Encoded
    preset: Any  # nasprune.data.tasks.TaskPreset
    seq_len: int = 128
    latency_repeats: int = 10
    latency_warmup: int = 2
    batch_size: int = 64
    pad_id: int = 0
    latency: bool = False
    latency_batch_size: int = 1
    seed: int = 0
    masked: bool = False
    device: str = "cpu"

    @classmethod
    def from_evaluator(cls, evaluator) -> EvaluatorSpec:
        """The spec of an in-process ``SubnetEvaluator`` (weights copied to CPU)."""
        import torch

        supernet = evaluator.supernet
        with supernet._full():  # the full module tree, whatever use() block is open
            state = supernet.model.state_dict()
        weights = {}
        for name, tensor in state.items():
            tensor = tensor.detach().to("cpu")
            try:
                weights[name] = tensor.numpy()
            except TypeError:  # bfloat16 and friends: keep the tensor
                weights[name] = tensor.clone()
        device = next(supernet.model.parameters(), torch.empty(0)).device
        return cls(
            model_class=type(supernet.model), config=supernet.model.config, weights=weights,
            order=supernet.order, validation=evaluator.validation, preset=evaluator.preset,
            seq_len=evaluator.cost.seq_len, latency_repeats=evaluator.cost.repeats,
            latency_warmup=evaluator.cost.warmup, batch_size=evaluator.batch_size,
            pad_id=evaluator.pad_id, latency=evaluator.latency,
            latency_batch_size=evaluator.latency_batch_size, seed=evaluator.seed,
            masked=evaluator.masked, device=device.type)

    def build(self, device: str | None = None):
        """A ``SubnetEvaluator`` over a fresh copy of the super-network on ``device``."""
        import torch

        from nasprune.core.cost import CostModel
        from nasprune.core.supernet import Supernet
        from nasprune.search.objective import SubnetEvaluator

        model = self.model_class(self.config)
        state = {}
        with warnings.catch_warnings():  # object-store arrays are read-only; they are copied
            warnings.simplefilter("ignore", UserWarning)
            for name, value in self.weights.items():
                state[name] = value if torch.is_tensor(value) else torch.from_numpy(value)
        model.load_state_dict(state, strict=True)
        del state
        model.to(device or self.device).eval()
        supernet = Supernet(model)
        supernet.order = self.order
        cost = CostModel(supernet, self.seq_len, repeats=self.latency_repeats,
                         warmup=self.latency_warmup)
        return SubnetEvaluator(
            supernet, self.validation, self.preset, cost=cost, batch_size=self.batch_size,
            pad_id=self.pad_id, latency=self.latency,
            latency_batch_size=self.latency_batch_size, seed=self.seed, masked=self.masked)

    def __call__(self):
        return self.build()


def _threads(cpus: float) -> int:
    return max(1, math.floor(cpus))


def _set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass


def _timed(evaluate: Evaluate, job: Job) -> tuple[dict, float]:
    start = time.perf_counter()
    metrics = evaluate(job.subnet, job.fidelity)
    return dict(metrics), time.perf_counter() - start


# --------------------------------------------------------------------------- the pool


class _WorkerPool:
    """Dispatch bookkeeping shared by both backends: idle workers, a queue, jobs in flight.

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


# --------------------------------------------------------------------------- processes


_worker_evaluate: Evaluate | None = None


def _init_process(factory: Callable[[], Evaluate], threads: int) -> None:
    """Pool initializer: build the evaluator once for this process."""
    global _worker_evaluate
    _set_threads(threads)
    _worker_evaluate = factory()


def _process_pid() -> int:
    return os.getpid()


def _process_evaluate(job: Job) -> tuple[dict, float]:
    assert _worker_evaluate is not None, "worker used before its initializer ran"
    return _timed(_worker_evaluate, job)


class ProcessExecutor(_WorkerPool):
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
        self.threads = _threads(cpus_per_worker)
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


# --------------------------------------------------------------------------- Ray


class _EvalActor:
    """A Ray actor holding one evaluator; made remote lazily so Ray stays optional."""

    def __init__(self, factory: Callable[[], Evaluate], threads: int, use_gpu: bool):
        _set_threads(threads)
        if isinstance(factory, EvaluatorSpec):
            self.evaluate = factory.build("cuda" if use_gpu else "cpu")
        else:
            self.evaluate = factory()

    def ready(self) -> dict:
        """Where this actor runs: process id and torch threads (also: construction done)."""
        import torch

        return {"pid": os.getpid(), "threads": torch.get_num_threads()}

    def run(self, job: Job) -> tuple[dict, float]:
        return _timed(self.evaluate, job)


class RayExecutor(_WorkerPool):
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
            self._factory_ref, _threads(self.cpus_per_worker), self.gpus_per_worker > 0)

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


# --------------------------------------------------------------------------- factory


def make_executor(backend: str, evaluator, *, workers: int = 1, address: str | None = None,
                  cpus_per_worker: float = 1, gpus_per_worker: float = 0, **options):
    """The executor for ``backend`` (local, process, ray) around ``evaluator``.

    ``evaluator`` is a ``SubnetEvaluator`` (turned into an :class:`EvaluatorSpec` for the
    parallel backends), an :class:`EvaluatorSpec`, or — for the parallel backends — any
    picklable zero-argument callable that returns an ``evaluate`` function.
    """
    if backend not in BACKENDS:
        raise NaspruneError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend != "ray" and (address or gpus_per_worker):
        raise NaspruneError("--address and --gpus-per-worker need --backend ray")
    if backend == "local":
        return LocalExecutor(evaluator.build() if isinstance(evaluator, EvaluatorSpec)
                             else evaluator)
    from nasprune.search.objective import SubnetEvaluator

    factory = (EvaluatorSpec.from_evaluator(evaluator)
               if isinstance(evaluator, SubnetEvaluator) else evaluator)
    if backend == "process":
        return ProcessExecutor(factory, workers, cpus_per_worker=cpus_per_worker, **options)
    return RayExecutor(factory, workers, address=address, cpus_per_worker=cpus_per_worker,
                       gpus_per_worker=gpus_per_worker, **options)
