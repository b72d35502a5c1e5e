"""The trial store and the runner: persistence, duplicates, resume (also after SIGKILL),
multi-fidelity, retries, and a parallel executor through the executor interface."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

import pytest

from nasprune.core.spaces import make_space
from nasprune.core.subnet import ModelShape, Subnet, encoder_params
from nasprune.errors import NaspruneError
from nasprune.rundir import RunDir
from nasprune.search.executors.base import Done
from nasprune.search.runner import run_search
from nasprune.search.searchers import make_searcher
from nasprune.search.store import TrialStore

SHAPE = ModelShape(num_layers=4, num_heads=4, head_dim=8, hidden=32, ffn=64)
WEIGHTS = (0.4, 0.3, 0.2, 0.1)


def toy_metrics(subnet, fidelity=1.0):
    capacity = sum(
        w * (h / SHAPE.num_heads + u / SHAPE.ffn) / 2 for w, (h, u) in zip(WEIGHTS, subnet.layers)
    )
    # the low-fidelity look is a slightly pessimistic estimate of the full-set error
    error = 0.05 + 0.6 * (1 - capacity) ** 2 + (0.02 if fidelity < 1 else 0.0)
    return {"error": error, "metric": 1 - error, "params": encoder_params(subnet, SHAPE),
            "flops": 2.0 * encoder_params(subnet, SHAPE)}


class CountingEvaluate:
    """The toy objective, remembering every call."""

    def __init__(self):
        self.calls: list[tuple[Subnet, float]] = []

    def __call__(self, subnet, fidelity):
        self.calls.append((subnet, fidelity))
        return toy_metrics(subnet, fidelity)


def layerwise():
    return make_space("layerwise", SHAPE, unit_step=16)


# ----------------------------------------------------------------------------- store


def test_store_round_trip_and_reopen(tmp_path):
    store = TrialStore.for_run(tmp_path)
    assert store.path == RunDir(tmp_path).store
    s = Subnet(((2, 32), (0, 0)))
    t = store.add(s, {"error": 0.2, "params": 10}, wall_s=0.5, searcher="random",
                  fidelity=0.25, low_metrics={"error": 0.2}, low_fidelity=0.25, promoted=False)
    assert t.id == 1 and t.metrics == {"error": 0.2, "params": 10.0} and not t.is_full_fidelity
    store.set_meta("objectives", ["error", "params"])
    with pytest.raises(ValueError, match="already in the store"):
        store.add(s, {"error": 0.3})
    store.close()

    again = TrialStore.open_existing(tmp_path)
    assert len(again) == 1 and s in again and Subnet(((1, 1), (0, 0))) not in again
    got = again.get(s)
    assert got == t
    assert got.promoted is False and got.low_fidelity == 0.25
    assert again.by_id(1) == t and again.by_id(2) is None
    assert again.get_meta("objectives") == ["error", "params"]
    assert again.trials(full_fidelity_only=True) == []
    mode = sqlite3.connect(again.path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_open_existing_requires_a_search(tmp_path):
    with pytest.raises(NaspruneError, match="no search results"):
        TrialStore.open_existing(tmp_path)


# ----------------------------------------------------------------------------- runner


def test_duplicates_are_looked_up_not_rerun(tmp_path):
    # the tutorial's space is small: random search repeats itself
    space = make_space("small", SHAPE, unit_step=16)  # 4 x 3 x 4 = 48 sub-networks
    evaluate = CountingEvaluate()
    store = TrialStore.for_run(tmp_path)
    result = run_search(space, make_searcher("random", space, seed=0), evaluate, store, 30,
                        progress=False)
    subnets = [s for s, _ in evaluate.calls]
    assert len(subnets) == len(set(subnets)) == 30 == len(store)
    assert result.reused > 0 and result.evaluated == 30
    assert store.trials()[0].subnet == space.full()
    assert store.trials()[1].subnet == space.smallest()
    assert store.get_meta("objectives") == ["error", "params"]
    assert Subnet.from_json(store.get_meta("full_subnet")) == space.full()


def test_exhausted_space_stops(tmp_path):
    space = make_space("layer", SHAPE)  # 16 sub-networks
    evaluate = CountingEvaluate()
    result = run_search(space, make_searcher("random", space, seed=0), evaluate,
                        TrialStore.for_run(tmp_path), 100, progress=False)
    assert len(result.trials) == 16 == len(evaluate.calls)


@pytest.mark.parametrize("name", ["random", "nsga2", "local", "optuna-tpe"])
def test_resume_in_process_continues_without_reevaluating(tmp_path, name):
    space = layerwise()
    first = CountingEvaluate()
    store = TrialStore.for_run(tmp_path)
    run_search(space, make_searcher(name, space, seed=0), first, store, 12, progress=False)
    store.close()

    second = CountingEvaluate()
    store = TrialStore.for_run(tmp_path)
    result = run_search(space, make_searcher(name, space, seed=0), second, store, 25,
                        progress=False)
    before = {s for s, _ in first.calls}
    after = [s for s, _ in second.calls]
    assert len(after) == 13 and not before & set(after) and len(set(after)) == 13
    assert len(result.trials) == 25
    # a third call with the same target evaluates nothing
    third = CountingEvaluate()
    again = run_search(space, make_searcher(name, space, seed=0), third, store, 25,
                       progress=False)
    assert third.calls == [] and again.hypervolume == pytest.approx(result.hypervolume)


@pytest.mark.parametrize("name", ["random", "nsga2", "local", "optuna-tpe", "optuna-nsga2"])
@pytest.mark.parametrize("low_fidelity", [None, 0.5])
def test_a_resumed_search_is_the_search_that_would_have_run(tmp_path, name, low_fidelity):
    """Stopped at 21 of 30 trials (as a kill leaves the store), then resumed with a fresh
    searcher: the 30 sub-networks are those of an uninterrupted run, in the same order."""
    space = layerwise()

    def search(path, counts):
        store = TrialStore.for_run(path)
        for n in counts:
            result = run_search(space, make_searcher(name, space, seed=3), toy_metrics, store,
                                n, progress=False, low_fidelity=low_fidelity)
        order = [str(t.subnet) for t in store.trials()]
        store.close()
        return order, result

    whole, _ = search(tmp_path / "whole", [30])
    resumed, result = search(tmp_path / "resumed", [21, 30])
    assert len(whole) == 30 and resumed == whole
    assert result.replay_exact


def test_other_space_in_the_same_store_is_refused(tmp_path):
    store = TrialStore.for_run(tmp_path)
    space = layerwise()
    run_search(space, make_searcher("random", space), CountingEvaluate(), store, 3,
               progress=False)
    other = make_space("small", SHAPE, unit_step=16)
    with pytest.raises(NaspruneError, match="new run directory"):
        run_search(other, make_searcher("random", other), CountingEvaluate(), store, 5,
                   progress=False)


def test_missing_objective_is_a_clear_error(tmp_path):
    space = layerwise()
    with pytest.raises(NaspruneError, match="latency"):
        run_search(space, make_searcher("random", space), CountingEvaluate(),
                   TrialStore.for_run(tmp_path), 5, objectives=("error", "latency"),
                   progress=False)


def test_three_objectives(tmp_path):
    space = layerwise()
    result = run_search(space, make_searcher("nsga2", space, n_objectives=3),
                        CountingEvaluate(), TrialStore.for_run(tmp_path), 20,
                        objectives=("error", "params", "flops"), progress=False)
    assert 0 < result.hypervolume < 1.1**3 and result.objectives == ("error", "params", "flops")


def test_multi_fidelity_records_both_looks(tmp_path):
    space = layerwise()
    evaluate = CountingEvaluate()
    store = TrialStore.for_run(tmp_path)
    result = run_search(space, make_searcher("random", space, seed=2), evaluate, store, 30,
                        low_fidelity=0.25, progress=False)
    trials = store.trials()
    assert len(trials) == 30
    full_model = trials[0]
    assert full_model.subnet == space.full() and full_model.promoted is None
    assert full_model.fidelity == 1.0
    promoted = [t for t in trials if t.promoted]
    dropped = [t for t in trials if t.promoted is False]
    assert promoted and dropped and len(promoted) + len(dropped) == 29
    assert result.promoted == len(promoted)
    for t in promoted:
        assert t.fidelity == 1.0 and t.low_fidelity == 0.25
        assert t.low_metrics["error"] == pytest.approx(t.metrics["error"] + 0.02)
    for t in dropped:
        assert t.fidelity == 0.25 and t.metrics == t.low_metrics
    # every candidate seen once at low fidelity, promoted ones once more at full
    lows = [s for s, f in evaluate.calls if f == 0.25]
    fulls = [s for s, f in evaluate.calls if f == 1.0]
    assert len(lows) == len(set(lows)) == 29
    assert sorted(map(str, fulls)) == sorted(str(t.subnet) for t in [full_model, *promoted])
    # only full-fidelity trials reach the front
    assert all(t.is_full_fidelity for t in result.front)


def test_failed_evaluation_is_retried_then_raised(tmp_path):
    space = layerwise()
    failed = []

    def flaky(subnet, fidelity):
        if subnet == space.smallest() and not failed:
            failed.append(subnet)
            raise RuntimeError("worker lost")
        return toy_metrics(subnet, fidelity)

    store = TrialStore.for_run(tmp_path / "a")
    run_search(space, make_searcher("random", space), flaky, store, 5, progress=False)
    assert failed and len(store) == 5 and store.get(space.smallest()) is not None

    def broken(subnet, fidelity):
        if subnet != space.full():
            raise RuntimeError("always")
        return toy_metrics(subnet, fidelity)

    with pytest.raises(RuntimeError, match="always"):
        run_search(space, make_searcher("random", space), broken,
                   TrialStore.for_run(tmp_path / "b"), 5, progress=False)


class ThreadExecutor:
    """A parallel executor built on the interface (the shape a Ray backend has)."""

    def __init__(self, evaluate, slots=3):
        self.slots = slots
        self.evaluate = evaluate
        self.pool = ThreadPoolExecutor(slots)
        self.futures = {}

    def submit(self, job):
        start = time.perf_counter()
        self.futures[self.pool.submit(self.evaluate, job.subnet, job.fidelity)] = (job, start)

    def results(self):
        done, _ = wait(list(self.futures), return_when=FIRST_COMPLETED)
        out = []
        for f in done:
            job, start = self.futures.pop(f)
            exc = f.exception()
            out.append(Done(job, None if exc else f.result(), time.perf_counter() - start, exc))
        return out

    def close(self):
        self.pool.shutdown()


def test_parallel_executor_keeps_several_in_flight(tmp_path):
    space = layerwise()
    lock = threading.Lock()
    active, peak, calls = [0], [0], []

    def slow(subnet, fidelity):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            calls.append(subnet)
        time.sleep(0.02)
        with lock:
            active[0] -= 1
        return toy_metrics(subnet, fidelity)

    executor = ThreadExecutor(slow, slots=3)
    result = run_search(space, make_searcher("random", space, seed=4), None,
                        TrialStore.for_run(tmp_path), 20, executor=executor,
                        low_fidelity=0.5, progress=False)
    executor.close()
    assert len(result.trials) == 20 and peak[0] >= 2
    assert len(result.trials) == len({t.subnet for t in result.trials})
    assert len(calls) == 20 + result.promoted  # low looks for all, full for promoted ones


# ----------------------------------------------------------------------------- kill + resume

SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from nasprune.search.runner import run_search
    from nasprune.search.searchers import make_searcher
    from nasprune.search.store import TrialStore
    from nasprune.core.spaces import make_space
    from nasprune.core.subnet import ModelShape, encoder_params

    run_dir, log = Path(sys.argv[1]), Path(sys.argv[2])
    n, delay = int(sys.argv[3]), float(sys.argv[4])
    shape = ModelShape(num_layers=4, num_heads=4, head_dim=8, hidden=32, ffn=64)
    space = make_space("layerwise", shape, unit_step=16)

    def evaluate(subnet, fidelity):
        time.sleep(delay)
        with open(log, "a") as f:
            f.write(subnet.to_json() + "\\n")
        cap = sum(w * (h / 4 + u / 64) / 2 for w, (h, u) in zip((.4, .3, .2, .1), subnet.layers))
        return {"error": 0.05 + 0.6 * (1 - cap) ** 2, "params": encoder_params(subnet, shape)}

    store = TrialStore.for_run(run_dir)
    run_search(space, make_searcher("nsga2", space, seed=0), evaluate, store, n, progress=False)
    """
)


def test_resume_after_killed_process(tmp_path):
    script = tmp_path / "search.py"
    script.write_text(SCRIPT)
    log = tmp_path / "evaluated.log"
    run_dir = tmp_path / "run"
    n = 30
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(script), str(run_dir), str(log), str(n), "0.1"],
                            env=env)
    db = RunDir(run_dir).store
    deadline = time.time() + 120
    stored = 0
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                stored = sqlite3.connect(db).execute("SELECT COUNT(*) FROM trials").fetchone()[0]
            except sqlite3.OperationalError:
                stored = 0
            if stored >= 8:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "the search finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    store = TrialStore.for_run(run_dir)
    finished = {t.subnet for t in store.trials()}
    assert 8 <= len(finished) < n
    first_log = log.read_text().splitlines()
    store.close()

    subprocess.run([sys.executable, str(script), str(run_dir), str(log), str(n), "0"],
                   env=env, check=True, timeout=120)
    second_log = log.read_text().splitlines()[len(first_log):]
    resumed = [Subnet.from_json(line) for line in second_log]
    # nothing finished before the kill is evaluated again, nothing twice after it
    assert not finished & set(resumed)
    assert len(resumed) == len(set(resumed))
    store = TrialStore.for_run(run_dir)
    trials = store.trials()
    assert len(trials) == n and len({t.subnet for t in trials}) == n
    # at most the one candidate in flight at the kill was evaluated twice in total
    everything = [json.loads(line)["layers"] for line in first_log + second_log]
    assert len(everything) - len({json.dumps(x) for x in everything}) <= 1
    assert len(everything) <= n + 1
