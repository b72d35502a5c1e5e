"""``python -m benchmarks.quality``: run the tasks, seeds and arms asked for, or only
rewrite the result files (``--report``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from benchmarks.common import RESULTS
from benchmarks.quality import __doc__ as DOC
from benchmarks.quality.report import report
from benchmarks.quality.seed import run_seed
from benchmarks.quality.settings import DEFAULT_MODEL, MODELS, PLACE, run_name

from nasprune.core.models import quiet_libraries


def main() -> None:
    parser = argparse.ArgumentParser(description=DOC,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="sst2,rte")
    parser.add_argument("--seeds", default="sst2:0,1;rte:0",
                        help="per task, e.g. 'sst2:0,1;rte:0', or '0,1' for every task")
    parser.add_argument("--arms", default="b,c,a,d,e", help="in the order to run them")
    parser.add_argument("--model", default=DEFAULT_MODEL, choices=sorted(MODELS))
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto", help="auto: CUDA when present")
    parser.add_argument("--report", action="store_true", help="only rewrite the result files")
    smoke = parser.add_argument_group("a smaller run, for checking the script only")
    smoke.add_argument("--train-examples", type=int, default=None)
    smoke.add_argument("--eval-examples", type=int, default=None)
    smoke.add_argument("--epochs", type=float, default=None)
    smoke.add_argument("--root", type=Path, default=None, help="stage folder")
    smoke.add_argument("--name", default="quality", help="results file name")
    args = parser.parse_args()
    if args.root is not None:
        PLACE.root, PLACE.unlabeled = args.root, 500
    PLACE.name = args.name
    args.arms = [a for a in args.arms.split(",") if a]
    tasks = [t for t in args.tasks.split(",") if t]
    if ":" in args.seeds:
        per = dict(part.split(":") for part in args.seeds.split(";"))
        seeds = {t: [int(s) for s in per.get(t, "0").split(",")] for t in tasks}
    else:
        seeds = {t: [int(s) for s in args.seeds.split(",")] for t in tasks}
    torch.set_num_threads(args.threads)
    quiet_libraries()
    if args.report:
        report()
        return
    # seed 0 of every task first, so a stopped benchmark has one of each
    order = sorted(((t, s) for t in tasks for s in seeds[t]), key=lambda x: (x[1], x[0]))
    rows_file = RESULTS / f"{PLACE.name}-stages" / "rows.json"
    done_rows = json.loads(rows_file.read_text()) if rows_file.is_file() else {}
    for task, seed in order:
        name = run_name(args.model, task, seed)
        rows = run_seed(task, seed, args)
        ran = {r["arm"] for r in rows}  # rows of arms run in other calls are kept
        done_rows[name] = [r for r in done_rows.get(name, []) if r["arm"] not in ran] + rows
        rows_file.parent.mkdir(parents=True, exist_ok=True)
        rows_file.write_text(json.dumps(done_rows, indent=1))
        report([r for v in done_rows.values() for r in v])


if __name__ == "__main__":
    main()

