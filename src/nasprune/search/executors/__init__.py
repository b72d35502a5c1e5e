"""Executors: where the search loop's evaluations run, in process (``local``), in worker
processes on this machine (``process``) or in Ray actors (``ray``). All implement the
:class:`~nasprune.search.executors.base.Executor` protocol, so the driver keeps the
searcher, the trial store and the front exactly as in process; only *where* ``evaluate``
runs changes. Add one with a file here and a line in :data:`EXECUTORS`.
"""

from __future__ import annotations

from nasprune.errors import NaspruneError
from nasprune.registry import Registry
from nasprune.search.executors.spec import EvaluatorSpec

#: name -> executor class; a parallel one is built as ``cls(factory, workers, ...)``.
EXECUTORS = Registry("executor", {
    "local": "nasprune.search.executors.local:LocalExecutor",
    "process": "nasprune.search.executors.process:ProcessExecutor",
    "ray": "nasprune.search.executors.ray:RayExecutor",
}, about={
    "local": "in this process",
    "process": "worker processes on this machine",
    "ray": "Ray actors (needs nasprune[ray]), local or on a cluster",
})


def make_executor(backend: str, evaluator, *, workers: int = 1, address: str | None = None,
                  cpus_per_worker: float = 1, gpus_per_worker: float = 0, **options):
    """The executor for ``backend`` (local, process, ray) around ``evaluator``.

    ``evaluator`` is a ``SubnetEvaluator`` (turned into an :class:`EvaluatorSpec` for the
    parallel backends), an :class:`EvaluatorSpec`, or — for the parallel backends — any
    picklable zero-argument callable that returns an ``evaluate`` function.
    """
    if backend not in EXECUTORS:
        raise NaspruneError(f"unknown backend {backend!r}; choose one of {', '.join(EXECUTORS)}")
    if backend != "ray" and (address or gpus_per_worker):
        raise NaspruneError("--address and --gpus-per-worker need --backend ray")
    if backend == "local":
        return EXECUTORS["local"](evaluator.build() if isinstance(evaluator, EvaluatorSpec)
                                  else evaluator)
    from nasprune.search.objective import SubnetEvaluator

    factory = (EvaluatorSpec.from_evaluator(evaluator)
               if isinstance(evaluator, SubnetEvaluator) else evaluator)
    if backend == "ray":
        options.update(address=address, gpus_per_worker=gpus_per_worker)
    return EXECUTORS[backend](factory, workers, cpus_per_worker=cpus_per_worker, **options)
