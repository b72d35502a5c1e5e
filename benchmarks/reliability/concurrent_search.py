"""6. concurrent search: a second ``nasprune search`` on a run directory in use is refused
at once with one line naming the holder."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from benchmarks.reliability.shared import (
    NASPRUNE,
    env,
    tracebacks,
)


def finished_run(work: Path) -> Path:
    """A finished tiny run (fine-tune, search, export), as tests/test_rundir.py builds it."""
    from tests.cases import SHARED_DATA, tiny_bert, tiny_tokenizer
    from tests.test_pipeline import tiny_run_config

    from nasprune.pipeline import run

    model_dir = work / "tiny-bert"
    model = tiny_bert()
    model.config.id2label = {0: "negative", 1: "positive"}
    model.config.label2id = {"negative": 0, "positive": 1}
    model.save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    cfg = tiny_run_config(model_dir, SHARED_DATA)
    cfg.recover = "none"
    run_dir = work / "finished-run"
    run(cfg, run_dir, progress=False)
    return run_dir


def two_searches(run_dir: Path, trials: int = 16) -> dict:
    """Start ``nasprune search RUN``; once it holds the lock, pause it (SIGSTOP, so that
    it surely holds the lock for as long as the check takes), start a second one, then let
    the first go on. Returns what the second did and how the first ended."""
    lock = run_dir / ".lock"
    first = subprocess.Popen([NASPRUNE, "search", str(run_dir), "--trials", str(trials)],
                             env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    deadline = time.monotonic() + 300
    try:
        while not (lock.is_file() and lock.read_text().strip() == str(first.pid)):
            if first.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the first search never took the lock: "
                                   f"{first.communicate()}")
            time.sleep(0.01)
        first.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        second = subprocess.run([NASPRUNE, "search", str(run_dir), "--trials", str(trials)],
                                env=env(), capture_output=True, text=True, timeout=300)
        took = time.monotonic() - started
    finally:
        first.send_signal(signal.SIGCONT)
    out, err = first.communicate(timeout=600)
    return {"first_pid": first.pid, "first_exit": first.returncode,
            "first_tracebacks": tracebacks(out + err), "second_exit": second.returncode,
            "second_stderr": second.stderr.strip(), "second_stdout": second.stdout.strip(),
            "second_took_s": round(took, 2)}


def run_concurrent(run_dir: Path) -> tuple[dict, dict]:
    detail = two_searches(run_dir)
    lines = detail["second_stderr"].splitlines()
    refused = (detail["second_exit"] == 2 and len(lines) == 1
               and f"PID {detail['first_pid']}" in lines[0] and "Traceback" not in lines[0]
               and not detail["second_stdout"])
    from nasprune.search.store import TrialStore

    with TrialStore.open_existing(run_dir) as store:
        subnets = [str(t.subnet) for t in store.trials()]
    detail["trials_after"] = len(subnets)
    detail["distinct_after"] = len(set(subnets))
    return {"second_refused": refused}, detail
