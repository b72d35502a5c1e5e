"""5. kill/resume: a search SIGKILLed at random moments and resumed loses and doubles
nothing and ends with the trials of an uninterrupted run."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.reliability.shared import (
    env,
)


def run_kill_resume(work: Path, kills: int, trials: int, seed: int) -> tuple[dict, dict]:
    """``tests/test_store_resume.py``'s search script (nsga2, seed 0, toy objective slowed
    to 0.1 s per candidate), SIGKILLed ``kills`` times at random points and resumed."""
    from tests.test_store_resume import SCRIPT

    from nasprune.rundir import RunDir

    rng = random.Random(seed)
    script = work / "search.py"
    script.write_text(SCRIPT)

    def launch(run_dir: Path, log: Path, delay: float):
        return subprocess.Popen([sys.executable, str(script), str(run_dir), str(log),
                                 str(trials), str(delay)], env=env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def stored(run_dir: Path) -> list[str]:
        db = RunDir(run_dir).store
        if not db.exists():
            return []
        try:
            with sqlite3.connect(db) as con:
                rows = con.execute("SELECT subnet FROM trials ORDER BY id").fetchall()
        except sqlite3.OperationalError:
            return []
        return [json.dumps(json.loads(r[0])) for r in rows]

    reference_dir = work / "uninterrupted"
    proc = launch(reference_dir, work / "uninterrupted.log", 0.0)
    _, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"the uninterrupted search failed:\n{err}")
    reference = stored(reference_dir)

    run_dir, log = work / "killed", work / "killed.log"
    targets = sorted(rng.sample(range(2, trials - 3), kills))
    done_before_kill: set[str] = set()
    moments = []
    for target in targets:
        proc = launch(run_dir, log, 0.1)
        while len(stored(run_dir)) < target and proc.poll() is None:
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.1))  # a random moment within an evaluation or a write
        if proc.poll() is not None:
            raise RuntimeError(f"the search finished before kill at {target}: {proc.stderr}")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        after = stored(run_dir)
        done_before_kill |= set(after)
        moments.append(len(after))
    proc = launch(run_dir, log, 0.0)
    _, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"the resumed search failed:\n{err}")
    final = stored(run_dir)
    evaluated = [json.dumps(json.loads(line)) for line in log.read_text().splitlines()]
    figures = {"kills": kills, "trials": len(final),
               "lost": len(done_before_kill - set(final)),
               "doubled": len(final) - len(set(final)),
               "same_as_uninterrupted": final == reference}
    matching_prefix = next((i for i, (a, b) in enumerate(zip(final, reference)) if a != b),
                           min(len(final), len(reference)))
    detail = {"stored_at_each_kill": moments, "reference_trials": len(reference),
              "evaluations": len(evaluated),
              "evaluated_twice": len(evaluated) - len(set(evaluated)),
              "same_prefix": matching_prefix, "searcher": "nsga2", "seed": 0}
    return figures, detail
