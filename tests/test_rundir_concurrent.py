"""One writer per run directory, with real processes (issue 17, finding 5).

Two ``nasprune search`` on one run directory: the second fails at once (exit 2, one line
naming the holder's PID) instead of evaluating the same proposals; and two processes
filling one token cache (``NASPRUNE_CACHE``) with the same texts at the same moment both
succeed (each writes under a temporary name of its own).
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from test_pipeline import tiny_run_config

from nasprune.pipeline import run
from nasprune.search.store import TrialStore

from conftest import REPO


def _env(**extra) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_COLOR": "1", **extra}
    env.pop("NASPRUNE_TOKEN", None)
    return env


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_model_dir, toy_glue):
    """A finished tiny run (fine-tune, search, export), as in tests/test_rundir.py."""
    run_dir = tmp_path_factory.mktemp("finished")
    cfg = tiny_run_config(tiny_model_dir, toy_glue)
    cfg.recover = "none"
    run(cfg, run_dir, progress=False)
    return run_dir


def test_a_second_search_on_a_run_directory_in_use_fails_at_once(finished):
    """Finding 5: nothing stopped the second search; both evaluated the same proposals.

    The first search is paused (SIGSTOP) as soon as it holds the lock, so it surely holds
    it while the second runs; a second that waited for the lock would never finish.
    """
    command = [sys.executable, "-m", "nasprune", "search", str(finished), "--trials", "16"]
    lock = finished / ".lock"
    first = subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (lock.is_file() and lock.read_text().strip() == str(first.pid)):
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first search never took the lock"
            time.sleep(0.01)
        first.send_signal(signal.SIGSTOP)
        try:
            second = subprocess.run(command, env=_env(), capture_output=True, text=True,
                                    timeout=120)
        finally:
            first.send_signal(signal.SIGCONT)
        out, err = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert second.returncode == 2, second.stdout + second.stderr
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), second.stderr
    assert f"is in use by nasprune (PID {first.pid})" in lines[0]
    assert "Traceback" not in second.stderr + second.stdout
    # the first went on undisturbed and alone: every trial once
    assert first.returncode == 0, out + err
    assert "Traceback" not in out + err
    with TrialStore.open_existing(finished) as store:
        subnets = [str(t.subnet) for t in store.trials()]
    assert len(subnets) == len(set(subnets)) == 16
    assert lock.read_text().strip() == str(first.pid)  # released by exit, not deleted


ENCODER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path

    sys.path.insert(0, sys.argv[1])
    import numpy as np

    import nasprune.data.encode as data
    from conftest import tiny_tokenizer

    barrier, me, other, rounds = Path(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
    writes = [0]
    savez = np.savez

    def counting_savez(*args, **kwargs):
        writes[0] += 1
        return savez(*args, **kwargs)

    data.np.savez = counting_savez

    class Texts:  # what encode reads of a TaskData
        def __init__(self, rows):
            self.rows = rows

        def texts(self, split):
            return self.rows

        def labels(self, split):
            return np.zeros(len(self.rows), dtype=np.int64)

    tokenizer = tiny_tokenizer()
    for r in range(rounds):  # both processes encode round r's texts at the same moment
        (barrier / f"{me}-{r}").touch()
        waited = time.monotonic()
        while not (barrier / f"{other}-{r}").exists():
            if time.monotonic() - waited > 60:
                sys.exit(f"the other process did not reach round {r}")
            time.sleep(0.0002)
        rows = [(f"good movie {r} {i}", "the plot") for i in range(300)]
        encoded = data.encode(tokenizer, Texts(rows), "train", max_length=16)
        assert len(encoded) == 300 and len(encoded.input_ids[0]) > 3
    print(writes[0])
    """
)


def test_two_processes_filling_one_token_cache_at_once_both_succeed(tmp_path):
    """Finding 5: both wrote the shared temporary ``<hash>.tmp.npz``; one crashed."""
    script = tmp_path / "encode.py"
    script.write_text(ENCODER)
    cache, barrier = tmp_path / "cache", tmp_path / "barrier"
    barrier.mkdir()
    rounds = 40
    procs = [subprocess.Popen([sys.executable, str(script), str(REPO / "tests"), str(barrier),
                               me, other, str(rounds)],
                              env=_env(NASPRUNE_CACHE=str(cache)), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for me, other in (("a", "b"), ("b", "a"))]
    try:
        results = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for proc, (_, err) in zip(procs, results):
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    writes = [int(out.split()[-1]) for out, _ in results]
    # the same entry was written by both processes at once, not only read by the later one
    assert sum(writes) > rounds, writes
    entries = list((cache / "tokens").iterdir())
    assert len(entries) == rounds, sorted(p.name for p in entries)  # no temporary left
    assert all(p.suffix == ".npz" and not p.name.startswith(".") for p in entries)
