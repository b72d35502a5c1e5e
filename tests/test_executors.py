"""Parallel executors (worker processes, Ray actors) through the real search loop.

Every parallel backend must give the same evaluated candidates, metrics and Pareto front
as the in-process one for the same seed and searcher, and lose or double nothing when a
worker is killed mid-search. One contract, run over every backend in ``EXECUTORS``.
"""

from __future__ import annotations

import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from nasprune.core.spaces import make_space
from nasprune.core.supernet import Supernet
from nasprune.data.encode import Encoded
from nasprune.data.presets import PRESETS
from nasprune.errors import NaspruneError
from nasprune.search.executors import make_executor
from nasprune.search.executors.base import Job
from nasprune.search.executors.local import LocalExecutor
from nasprune.search.executors.pool import WorkerDied
from nasprune.search.executors.process import ProcessExecutor
from nasprune.search.executors.ray import RayExecutor
from nasprune.search.executors.spec import EvaluatorSpec
from nasprune.search.objective import SubnetEvaluator
from nasprune.search.runner import run_search
from nasprune.search.searchers import make_searcher
from nasprune.search.store import TrialStore

from conftest import WORDS, tiny_bert, tiny_tokenizer

N_TRIALS = 12
STALL_S = 120  # far longer than the rest of a search; the test kills the stalled worker


def tiny_evaluator(examples: int = 48) -> SubnetEvaluator:
    """A random tiny BERT (2 layers, 4 heads, FFN 64) over synthetic labelled sentences."""
    tokenizer = tiny_tokenizer()
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))
             for _ in range(examples)]
    out = tokenizer(texts, truncation=True, max_length=32, return_token_type_ids=True)
    validation = Encoded([np.asarray(x, dtype=np.int32) for x in out["input_ids"]],
                         [np.asarray(x, dtype=np.int8) for x in out["token_type_ids"]],
                         np.asarray([rng.randint(0, 1) for _ in texts]))
    supernet = Supernet(tiny_bert(layers=2, heads=4, hidden=32, ffn=64, seed=3).eval())
    return SubnetEvaluator(supernet, validation, PRESETS["sst2"], batch_size=16)


def space_of(evaluator):
    return make_space("layerwise", evaluator.supernet.shape, unit_step=16)


def search(evaluator, store_dir, executor=None, on_trial=None, n=N_TRIALS):
    space = space_of(evaluator)
    return run_search(space, make_searcher("random", space, seed=7),
                      evaluator if executor is None else None, TrialStore.for_run(store_dir), n,
                      executor=executor, progress=False, on_trial=on_trial)


@dataclass
class Slowed:
    """A factory whose evaluations take at least ``delay`` s, so jobs are caught in flight.

    With ``stall_dir``, a test can make exactly one later evaluation hang: touching
    ``stall_dir/armed`` lets the next evaluation claim it (an atomic rename, so only one
    worker wins), write its sub-network to ``stall_dir/stalled.pkl`` and sleep until killed.
    That job is then certainly in flight, not finished but still uncollected.
    """

    spec: EvaluatorSpec
    delay: float = 0.0
    fail_on: tuple | None = None  # layers of a sub-network whose evaluation raises
    stall_dir: str | None = None

    def __call__(self):
        evaluate = self.spec.build()

        def slowed(subnet, fidelity):
            time.sleep(self.delay)
            if self.stall_dir is not None and self._claim_stall(subnet):
                time.sleep(STALL_S)
            if self.fail_on is not None and subnet.layers == self.fail_on:
                raise ValueError("this sub-network cannot be evaluated")
            return evaluate(subnet, fidelity)

        return slowed

    def _claim_stall(self, subnet) -> bool:
        stall = Path(self.stall_dir)
        try:
            (stall / "armed").rename(stall / "claimed")
        except FileNotFoundError:
            return False
        (stall / "stalled.tmp").write_bytes(pickle.dumps(subnet))
        (stall / "stalled.tmp").rename(stall / "stalled.pkl")
        return True


class Recording:
    """Wraps an executor and keeps every ``Done`` it hands to the runner."""

    def __init__(self, inner):
        self.inner, self.slots, self.done = inner, inner.slots, []

    def submit(self, job):
        self.inner.submit(job)

    def results(self):
        out = self.inner.results()
        self.done.extend(out)
        return out

    def close(self):
        pass  # the shared pool is closed by its fixture


@pytest.fixture(scope="module")
def evaluator():
    return tiny_evaluator()


@pytest.fixture(scope="module")
def local_result(evaluator, tmp_path_factory):
    return search(evaluator, tmp_path_factory.mktemp("local"))


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    from ray import cloudpickle

    # actors cannot import this test module by name; ship its helpers by value
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING",
             object_store_memory=200 * 1024**2)
    yield ray
    ray.shutdown()
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def _kill(executor, worker) -> None:
    if isinstance(executor, RayExecutor):
        import ray

        ray.kill(worker)
    else:
        os.kill(worker, signal.SIGKILL)


@pytest.fixture(scope="module")
def unseen(evaluator, local_result):
    """A sub-network the seeded search never proposes: its evaluation is made to fail."""
    space, seen = space_of(evaluator), {t.subnet for t in local_result.trials}
    rng = random.Random(99)
    while (subnet := space.sample(rng)) in seen:
        pass
    return subnet


@pytest.fixture(scope="module")
def stall_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("stall")


@pytest.fixture(scope="module", params=["process", pytest.param("ray", marks=pytest.mark.slow)])
def pool(request, evaluator, unseen, stall_dir):
    """Two workers of one backend, shared by the contract tests (workers start slowly).

    Every evaluation takes >= 0.2 s; the kill test stalls one on purpose. Ray is
    marked slow: starting it takes ~10-30 s on a busy 2-core machine.
    """
    if request.param == "ray":
        request.getfixturevalue("ray_session")
    factory = Slowed(EvaluatorSpec.from_evaluator(evaluator), delay=0.2, fail_on=unseen.layers,
                     stall_dir=str(stall_dir))
    executor = make_executor(request.param, factory, workers=2)
    yield executor
    executor.close()


def worker_ids(executor) -> set:
    if isinstance(executor, RayExecutor):
        import ray

        return {info["pid"] for info in ray.get([a.ready.remote() for a in executor.actors])}
    return set(executor.pids.values())


# --------------------------------------------------------------------------- the spec


def test_spec_rebuilds_the_same_evaluator_after_pickling(evaluator):
    spec = pickle.loads(pickle.dumps(EvaluatorSpec.from_evaluator(evaluator)))
    rebuilt = spec()
    assert isinstance(rebuilt, SubnetEvaluator) and rebuilt.supernet.model is not \
        evaluator.supernet.model
    rng = random.Random(1)
    space = space_of(evaluator)
    for subnet in [space.full(), space.smallest(), *(space.sample(rng) for _ in range(4))]:
        for fidelity in (1.0, 0.5):
            assert rebuilt(subnet, fidelity) == pytest.approx(evaluator(subnet, fidelity))


def test_make_executor_checks_its_arguments(evaluator):
    assert isinstance(make_executor("local", evaluator), LocalExecutor)
    with pytest.raises(NaspruneError, match="unknown backend"):
        make_executor("dask", evaluator)
    with pytest.raises(NaspruneError, match="need --backend ray"):
        make_executor("process", evaluator, address="auto")
    with pytest.raises(NaspruneError, match="at least 1"):
        ProcessExecutor(EvaluatorSpec.from_evaluator(evaluator), workers=0)


# --------------------------------------------------------------------------- the contract


def test_same_candidates_and_front_as_in_process(pool, evaluator, local_result, tmp_path):
    workers = worker_ids(pool)
    executor = Recording(pool)
    result = search(evaluator, tmp_path, executor)
    assert result.evaluated == N_TRIALS == len(local_result.trials)
    by_subnet = {t.subnet: t.metrics for t in local_result.trials}
    assert {t.subnet for t in result.trials} == set(by_subnet)
    for trial in result.trials:  # the same numbers, computed in another process
        assert trial.metrics == pytest.approx(by_subnet[trial.subnet])
    assert {t.subnet for t in result.front} == {t.subnet for t in local_result.front}
    assert result.hypervolume == pytest.approx(local_result.hypervolume)
    assert all(d.error is None for d in executor.done)
    assert len(executor.done) == N_TRIALS  # one evaluation per candidate, none repeated
    # the same two workers, each built once, evaluated everything
    assert len(workers) == 2 and os.getpid() not in workers and worker_ids(pool) == workers
    if isinstance(pool, RayExecutor):  # torch threads = cpus_per_worker; the caller's Ray
        import ray

        assert [i["threads"] for i in ray.get([a.ready.remote() for a in pool.actors])] == [1, 1]
        assert not pool._owns_ray


def test_resume_on_another_backend_evaluates_only_new_candidates(pool, evaluator,
                                                                 local_result, tmp_path):
    search(evaluator, tmp_path, n=6)  # in process
    executor = Recording(pool)
    result = search(evaluator, tmp_path, executor)
    assert result.evaluated == N_TRIALS - 6 == len(executor.done)
    assert {t.subnet for t in result.trials} == {t.subnet for t in local_result.trials}


def test_evaluation_error_is_reported_and_the_worker_stays(pool, evaluator, unseen):
    space = space_of(evaluator)
    deaths, workers = pool.deaths, worker_ids(pool)
    pool.submit(Job(unseen))
    pool.submit(Job(space.smallest()))
    done = []
    while len(done) < 2:
        done += pool.results()
    failed = [d for d in done if d.error is not None]
    assert [d.job.subnet for d in failed] == [unseen]
    assert isinstance(failed[0].error, ValueError)  # the evaluation's own exception type
    assert "cannot be evaluated" in str(failed[0].error)
    assert [d.metrics["params"] for d in done if d.error is None] == [
        evaluator.cost.params(space.smallest())]
    assert pool.deaths == deaths and worker_ids(pool) == workers


def test_killed_worker_loses_and_doubles_nothing(pool, evaluator, local_result, tmp_path,
                                                 stall_dir):
    executor = Recording(pool)
    deaths, replaced = pool.deaths, pool.replaced
    killed, armed = [], []
    for leftover in stall_dir.iterdir():  # the directory is shared by every backend's run
        leftover.unlink()
    stalled = stall_dir / "stalled.pkl"

    def kill_the_stalled_job(trial):
        if killed or len(executor.done) < 4:
            return
        if not armed:
            (stall_dir / "armed").touch()  # the next evaluation to start will hang
            armed.append(True)
            return
        if not stalled.exists():
            return
        subnet = pickle.loads(stalled.read_bytes())
        [(worker, job)] = [(w, j) for w, j in pool.running() if j.subnet == subnet]
        _kill(pool, worker)
        killed.append(job.subnet)

    result = search(evaluator, tmp_path, executor, on_trial=kill_the_stalled_job)
    assert killed
    assert pool.deaths == deaths + 1 and pool.replaced == replaced + 1
    assert not pool.running() and len(worker_ids(pool)) == 2  # the replacement works
    failed = [d for d in executor.done if d.error is not None]
    assert [d.job.subnet for d in failed] == killed
    assert isinstance(failed[0].error, WorkerDied)
    finished = [d.job.subnet for d in executor.done if d.error is None]
    assert len(finished) == len(set(finished)) == N_TRIALS  # nothing doubled
    assert set(finished) == {t.subnet for t in result.trials} == \
        {t.subnet for t in local_result.trials}  # nothing lost: the killed one was retried
    assert {t.subnet for t in result.front} == {t.subnet for t in local_result.front}


# --------------------------------------------------------------------------- pipeline + CLI


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "nasprune", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_cli_rejects_an_unknown_backend_in_one_line(tmp_path):
    done = _cli("run", "--task", "sst2", "--run-dir", str(tmp_path), "--backend", "dask")
    assert done.returncode == 2 and "'dask' is not one of 'local', 'process', 'ray'" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["process", "ray"])
def test_cli_search_on_workers_matches_in_process(backend, tmp_path, tiny_model_dir,
                                                  shared_data):
    """The user's path: `nasprune search --backend ...` (for Ray: a private local Ray that
    the command starts and shuts down itself)."""
    from nasprune.config import RunConfig, SearchConfig, TrainConfig
    from nasprune.data.tasks import DataConfig
    from nasprune.pipeline import run
    from nasprune.rundir import RunDir

    local = tmp_path / "local"
    cfg = RunConfig(model=str(tiny_model_dir),
                    data=DataConfig(task="sst2", data_dir=str(shared_data),
                                    max_train_examples=64, max_eval_examples=48),
                    train=TrainConfig(epochs=1, batch_size=16, progress=False),
                    search=SearchConfig(space="layerwise", searcher="random", trials=8,
                                        unit_step=16, calibration_examples=16),
                    force=True)  # a tiny random model: the sanity guard would stop it
    run(cfg, local, progress=False, until="search")
    parallel = tmp_path / "parallel"  # same fine-tuned super-network, search not yet run
    shutil.copytree(local, parallel, ignore=shutil.ignore_patterns("search"))
    done = _cli("search", str(parallel), "--space", "layerwise", "--searcher", "random",
                "--trials", "8", "--unit-step", "16", "--calibration-examples", "16",
                "--backend", backend, "--workers", "2")
    assert done.returncode == 0, done.stderr
    assert RunDir(parallel).config().search.backend == backend
    with TrialStore.for_run(local) as a, TrialStore.for_run(parallel) as b:
        expected = {t.subnet: t.metrics for t in a.trials()}
        got = {t.subnet: t.metrics for t in b.trials()}
    assert set(got) == set(expected) and len(got) == 8
    for subnet, metrics in got.items():
        assert metrics == pytest.approx(expected[subnet])
