"""Wall time of the default ``nasprune run`` on SST-2 (8,000 training examples), stage by
stage, before and after a change of the defaults (issue 24: <= 20 minutes on 2 cores).

Each (label, seed) is one real ``nasprune run`` process with nothing but the task, the data,
the training size, the seed and a run directory given, so it runs exactly the defaults of
the code it is started with: record ``--label before`` with the old defaults and ``--label
after`` with the new ones. A finished (label, seed) is kept in
``results/run_time-stages.json`` and skipped when run again, so the benchmark resumes (a
run stopped midway is started again from nothing: its time must be one run's).
The pick's accuracy on GLUE validation (nothing is chosen on it) is recorded beside the
time, since a faster default must keep it.

    python benchmarks/run_time.py --label before --seeds 0,1
    python benchmarks/run_time.py --label after --seeds 0,1
    python benchmarks/run_time.py --report

Writes ``results/run_time.json``: ``before_s`` and ``after_s`` (mean wall seconds of the
seeds run), ``stages`` (``name``, ``before``, ``after``: mean seconds per stage) and the
per-run rows; and ``results/run_time.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

from common import CHECKPOINTS, DATA, RESULTS, write_results

NAME = "run_time"
STAGES_FILE = RESULTS / f"{NAME}-stages.json"
LABELS = ("before", "after")


def one_run(label: str, seed: int, args) -> dict:
    run_dir = CHECKPOINTS / NAME / f"{label}-s{seed}"
    if run_dir.exists():  # a run stopped midway: its stages would be reused and the time
        print(f"{run_dir} was not finished: starting it again from nothing", flush=True)
        shutil.rmtree(run_dir)  # would not be one run's
    argv = [sys.executable, "-m", "nasprune", "run", "--task", "sst2", "--data-dir",
            str(DATA), "--max-train-examples", str(args.train_examples), "--seed", str(seed),
            "--threads", str(args.threads), "--run-dir", str(run_dir)]
    start = time.perf_counter()
    subprocess.run(argv, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - start
    summary = json.loads((run_dir / "summary.json").read_text())
    metric = summary["metric"]
    return {"label": label, "seed": seed, "wall_s": wall,
            "stages": {k: v for k, v in summary["seconds"].items() if k != "total"},
            "pick": summary["pick"]["text"],
            "encoder_fraction": summary["pick"]["encoder_params_fraction"],
            "validation": summary["exported"]["validation"],
            "unpruned_validation": summary["finetuned"][metric],
            "metric": metric}


def markdown(payload: dict) -> str:
    lines = ["# Default `nasprune run`, SST-2 (8,000 examples), wall time by stage", "",
             "Each row is one `nasprune run` process with the defaults of its code; seconds "
             "are the mean over the seeds run (2 shared CPU cores). Accuracy: GLUE "
             "validation, of the exported pick (chosen on the search split).", "",
             "| stage | before (s) | after (s) |", "|---|---|---|"]
    for stage in payload["stages"]:
        cells = [f"{stage[x]:.0f}" if stage[x] is not None else "-" for x in LABELS]
        lines.append(f"| {stage['name']} | " + " | ".join(cells) + " |")
    total = [f"{payload[f'{x}_s']:.0f}" if payload[f"{x}_s"] else "-" for x in LABELS]
    lines += [f"| **wall** | {total[0]} | {total[1]} |", "",
              "| label | seed | wall (min) | pick | encoder | validation | unpruned |",
              "|---|---|---|---|---|---|---|"]
    for r in payload["runs"]:
        lines.append(f"| {r['label']} | {r['seed']} | {r['wall_s'] / 60:.1f} | `{r['pick']}` | "
                     f"{r['encoder_fraction']:.1%} | {r['validation']:.3f} | "
                     f"{r['unpruned_validation']:.3f} |")
    return "\n".join(lines)


def profile_lines() -> list[str]:
    """The top items of ``profile_run.py``'s profile, when it has been recorded."""
    path = RESULTS / f"{NAME}-profile.json"
    if not path.is_file():
        return ["", "Profile: not recorded yet (`python benchmarks/profile_run.py "
                "--train-examples 8000`)."]
    p = json.loads(path.read_text())
    busy = (f"{p['cores_busy']:.2f} of {p['threads']} cores busy on average"
            if p.get("cores_busy") is not None else "cores busy not measured")
    lines = ["", f"## Where the time goes (py-spy, {p['train_examples']:,} training examples, "
             f"seed {p['seed']}, {p['wall_s'] / 60:.1f} min, {busy})", "",
             "| stage | share of samples | its top activities |", "|---|---|---|"]
    for stage, entry in p["stages"].items():
        top = ", ".join(f"{a} {v:.0%}" for a, v in list(entry["activities"].items())[:4])
        lines.append(f"| {stage} | {entry['share']:.0%} | {top} |")
    lines += ["", "| innermost function | share |", "|---|---|"]
    lines += [f"| `{f['function']}` | {f['share']:.1%} |" for f in p["top_functions"][:10]]
    return lines


def report(done: dict) -> None:
    runs = list(done.values())

    def mean(values):
        values = [v for v in values if v is not None]
        return statistics.mean(values) if values else None

    names = list(dict.fromkeys(k for r in runs for k in r["stages"]))
    stages = [{"name": n, **{x: mean([r["stages"].get(n) for r in runs if r["label"] == x])
                             for x in LABELS}} for n in names]
    payload = {"before_s": mean([r["wall_s"] for r in runs if r["label"] == "before"]),
               "after_s": mean([r["wall_s"] for r in runs if r["label"] == "after"]),
               "stages": stages, "runs": runs}
    write_results(NAME, payload, "\n".join([markdown(payload), *profile_lines()]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", choices=LABELS)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train-examples", type=int, default=8000)
    parser.add_argument("--report", action="store_true", help="only rewrite the result files")
    args = parser.parse_args()
    done = json.loads(STAGES_FILE.read_text()) if STAGES_FILE.is_file() else {}
    if not args.report:
        if args.label is None:
            parser.error("--label before|after (or --report)")
        for seed in (int(s) for s in args.seeds.split(",")):
            key = f"{args.label}-s{seed}"
            if key not in done:
                done[key] = one_run(args.label, seed, args)
                STAGES_FILE.parent.mkdir(parents=True, exist_ok=True)
                STAGES_FILE.write_text(json.dumps(done, indent=1))
    report(done)


if __name__ == "__main__":
    main()
