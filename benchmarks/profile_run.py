"""Where the default ``nasprune run`` spends its time: one real run on SST-2 under py-spy
(a sampling profiler outside the process: it changes nothing in the run), stage by stage.

Every sample is the Python stack of the run's main thread; time inside a PyTorch operator
counts for the Python line that called it. A sample is put in a stage by the pipeline
function on its stack (fine-tuning, super-network distillation, search, export with the
pick's recovery) and in an activity by the innermost frame that names one (backward,
optimizer step, the teacher's forward, the student's forward, padding and collation,
evaluation, writing checkpoints, tokenization). Beside it, the cores the run kept busy
(CPU seconds of the process and its threads over wall seconds; 2.0 is both cores). The raw
samples stay in ``$NASPRUNE_BENCH_HOME/profile/`` (``--from-raw`` classifies them again).

    python benchmarks/profile_run.py                          # SST-2, 2,000 training examples
    python benchmarks/profile_run.py --train-examples 8000    # the full-size default run

Writes ``results/run_time-profile.json``; ``run_time.py`` puts its top items into
``run_time.md``. Needs ``py-spy`` (``pip install py-spy``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from common import CHECKPOINTS, DATA, RESULTS, machine

OUT = RESULTS / "run_time-profile.json"
#: (stage, a function on the stack that puts a sample in it); the innermost match wins.
STAGES = (("fine-tuning", "finetune_stage"), ("super-network distillation", "supertrain_stage"),
          ("importance ordering", "reorder_by_importance"), ("search", "search_stage"),
          ("export and recovery", "export_stage"))
#: A frame's function, as py-spy names it: a method with its class (``Adam.step``), nested
#: functions with their ``<locals>`` path.
FN = r"^(?:[\w<>]+\.)*"
#: (activity, pattern on one frame "function (file:line)"), in priority order: a sample is
#: the first activity any of its frames matches (the teacher's forward before the forward).
ACTIVITIES = (
    ("tokenization", FN + r"\w+ \(.*(nasprune/data/encode\.py|tokenization_utils)"),
    ("writing checkpoints", FN + r"(save_pretrained|save_state|save_file|save_model) \("),
    ("teacher forward", FN + r"targets \(.*losses\.py|^teacher predict$"),
    ("backward", FN + r"(backward|_engine_run_backward|run_backward) \(.*torch/"),
    ("optimizer step", FN + r"step \(.*torch/optim"),
    ("gradient clipping", FN + r"clip_grad_norm_ \("),
    ("evaluation", FN + r"(predict|evaluate) \(.*nasprune/train/evaluation\.py"),
    ("padding and collation", FN + r"collate \("),
    ("forward", FN + r"forward \("),
)


def classify(stack: list[str]) -> tuple[str, str]:
    """(stage, activity) of one sample, its frames outermost first. Recovery computes the
    teacher's logits once with ``predict`` called straight from ``distill``."""
    stage = next((name for frame in reversed(stack) for name, fn in STAGES
                  if re.match(FN + fn + r" \(", frame)), "set-up and other")
    frames = list(stack)
    for outer, inner in zip(stack, stack[1:]):
        if outer.startswith("distill (") and inner.startswith("predict ("):
            frames.append("teacher predict")
    activity = next((name for name, pattern in ACTIVITIES
                     if any(re.search(pattern, frame) for frame in frames)), "other Python")
    return stage, activity


def read_samples(raw: Path) -> Counter:
    counts: Counter = Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            counts[classify(stack.split(";"))] += int(n)
    return counts


def self_time(raw: Path, top: int = 15) -> list[dict]:
    """The innermost Python functions by share of samples (what a flame graph's top shows)."""
    counts: Counter = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            frame = re.sub(r":\d+\)$", ")", stack.split(";")[-1])
            counts[frame] += int(n)
            total += int(n)
    return [{"function": f, "share": round(c / total, 4)} for f, c in counts.most_common(top)]


def profile(args) -> dict:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        raise SystemExit("py-spy is not installed: pip install py-spy")
    work = Path(tempfile.mkdtemp(prefix="nasprune-profile-"))
    raw = CHECKPOINTS / "profile" / f"sst2-{args.train_examples}-s{args.seed}.txt"
    raw.parent.mkdir(parents=True, exist_ok=True)
    run_dir = work / "run"
    argv = [sys.executable, "-m", "nasprune", "run", "--task", "sst2", "--data-dir",
            str(DATA), "--max-train-examples", str(args.train_examples), "--seed",
            str(args.seed), "--threads", str(args.threads), "--run-dir", str(run_dir)]
    # the run is this process's child and py-spy attaches to it, so the run's own CPU time
    # is known when it is waited for (a grandchild under `py-spy record -- CMD` is not)
    start, cpu0 = time.perf_counter(), os.times()
    run = subprocess.Popen(argv, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    spy_run = subprocess.Popen([spy, "record", "--rate", str(args.rate), "--format", "raw",
                                "--output", str(raw), "--pid", str(run.pid)])
    code = run.wait()
    wall, cpu1 = time.perf_counter() - start, os.times()
    spy_run.wait()
    if code:
        raise SystemExit(f"the profiled run exited with {code}")
    cores = (cpu1.children_user + cpu1.children_system - cpu0.children_user
             - cpu0.children_system) / wall
    summary = json.loads((run_dir / "summary.json").read_text())
    shutil.rmtree(work, ignore_errors=True)
    return {"train_examples": args.train_examples, "seed": args.seed,
            "threads": args.threads, "rate_hz": args.rate, "wall_s": round(wall, 1),
            "cores_busy": round(cores, 2), "raw": raw.name,
            "stage_seconds": {k: v for k, v in summary["seconds"].items() if k != "total"},
            "machine": machine(), **breakdown(raw)}


def breakdown(raw: Path) -> dict:
    """Shares of the samples by stage and activity, and the top functions."""
    counts = read_samples(raw)
    total = sum(counts.values())
    stages: dict = {}
    for (stage, activity), n in counts.items():
        entry = stages.setdefault(stage, {"share": 0.0, "activities": {}})
        entry["share"] += n / total
        entry["activities"][activity] = round(n / total, 4)
    for entry in stages.values():
        entry["share"] = round(entry["share"], 4)
        entry["activities"] = dict(sorted(entry["activities"].items(), key=lambda kv: -kv[1]))
    return {"samples": total,
            "stages": dict(sorted(stages.items(), key=lambda kv: -kv[1]["share"])),
            "top_functions": self_time(raw)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-examples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rate", type=int, default=20, help="samples per second")
    parser.add_argument("--from-raw", action="store_true",
                        help="classify the recorded samples again (no new run)")
    args = parser.parse_args()
    if args.from_raw:
        result = json.loads(OUT.read_text())
        result.update(breakdown(CHECKPOINTS / "profile" / result["raw"]))
    else:
        result = profile(args)
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("wall_s", "cores_busy", "stages")}, indent=1))
    subprocess.run([sys.executable, str(Path(__file__).with_name("run_time.py")), "--report"],
                   check=True)  # run_time.md shows the profile's top items


if __name__ == "__main__":
    main()
