"""Which searcher and space should be the default? Every searcher, same budget, same model.

On the importance-reordered MiniLM-L6 of one task (checkpoint from benchmarks/finetune_speed.py),
each searcher evaluates the same number of candidates through `Supernet.use()` in the
tutorial's `small` space and in `layerwise`, for one or more seeds. Reported: hypervolume
(error vs. parameters), the best accuracy at <= 50 % of the encoder, wall time and the
mean FLOPs of the evaluated candidates (what the wall time follows).

    python benchmarks/searcher_choice.py [--task rte] [--trials 100] [--seeds 0,1]
"""

from __future__ import annotations

import argparse
import statistics

import torch
from search import arm, prepare

from nasprune.config import SearchConfig
from nasprune.core.models import quiet_libraries
from nasprune.core.spaces import make_space

from common import write_results

SEARCHERS = ("random", "local", "nsga2", "optuna-tpe")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--task", default="rte")
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--searchers", default=",".join(SEARCHERS))
    parser.add_argument("--spaces", default="small,layerwise")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    quiet_libraries()
    data, plain, reordered, validation, pad, _ = prepare(args.task)
    arms = [(name, space, name, {}) for space in args.spaces.split(",")
            for name in args.searchers.split(",")]
    arms.append(("local, one-step moves only", SearchConfig().space, "local", {"fill": 0.0}))
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for label, space, searcher, options in arms:
            rows.append(arm(label, reordered, make_space(space, plain.shape), searcher,
                            validation, data.preset, args.trials, masked=False, pad_id=pad,
                            seed=seed, **options))

    lines = [f"# Searchers: {args.trials} candidates, MiniLM-L6 on {args.task} "
             f"(seeds {args.seeds})", "",
             "| arm | space | hypervolume | best acc. at <= 50 % encoder | wall | "
             "mean FLOPs of candidates | front size |", "|---|---|---|---|---|---|---|"]
    for label, space, _, _ in arms:
        mine = [r for r in rows if r["arm"] == label and r["space"] == space]
        best = [r["best_metric_at_half_encoder"] for r in mine
                if r["best_metric_at_half_encoder"] is not None]
        lines.append(
            f"| {label} | {space} | {statistics.mean(r['hypervolume'] for r in mine):.4f} | "
            f"{f'{statistics.mean(best):.3f}' if best else '-'} | "
            f"{statistics.mean(r['wall_seconds'] for r in mine):.0f} s | "
            f"{statistics.mean(r['mean_flops_fraction'] for r in mine):.2f} | "
            f"{statistics.mean(r['front_size'] for r in mine):.1f} |")
    lines += ["", "Means over seeds. Hypervolume: normalised error vs. parameters, reference "
              "point as in docs/search.md."]
    write_results(f"searchers-{args.task}", {"task": args.task, "trials": args.trials,
                                             "seeds": args.seeds, "results": rows},
                  "\n".join(lines))


if __name__ == "__main__":
    main()
