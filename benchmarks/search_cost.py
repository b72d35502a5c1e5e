"""Search cost: 100 candidates the tutorial's way vs. nasprune's way, on one fine-tuned model.

Arms, in one process on the same checkpoint (runs/bench/finetune-<task>/model from
benchmarks/finetune_speed.py, or fine-tuned here if missing):

- tutorial: `small` space, random search, every candidate evaluated by masking the full
  model (zeroed heads/units, full-size compute), original weight order;
- nasprune: importance-reordered weights, the default space and searcher, every candidate
  evaluated through `Supernet.use()` (prefix slices, skipped layers);
- the same with multi-fidelity (`--low-fidelity 0.25`): each candidate first on a quarter
  of the validation set, on all of it only when not dominated by the front so far.

Hypervolume: error vs. parameters, both arms normalised by the same full model.

    python benchmarks/search_cost.py [--tasks rte,sst2] [--trials 100]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from nasprune.config import SearchConfig, TrainConfig
from nasprune.core.models import quiet_libraries
from nasprune.core.spaces import make_space
from nasprune.core.supernet import Supernet
from nasprune.data.encode import encode
from nasprune.data.tasks import DataConfig, load_task_data
from nasprune.pipeline.stages import reorder_on_calibration
from nasprune.search.objective import SubnetEvaluator
from nasprune.search.runner import run_search
from nasprune.search.searchers import make_searcher
from nasprune.search.store import TrialStore
from nasprune.train.finetune import finetune

from common import CHECKPOINTS, DATA, SETTINGS, write_results


def checkpoint(task: str, data) -> Path:
    path = CHECKPOINTS / f"finetune-{task}" / "model"
    if not (path / "config.json").is_file():
        finetune("minilm-l6", data, TrainConfig(epochs=SETTINGS[task]["epochs"], seed=0),
                 path.parent)
    return path


def prepare(task: str):
    """The task's data, the plain and the importance-reordered super-network, and the
    encoded validation set; the reordering's wall time is returned too."""
    from transformers import AutoTokenizer

    data = load_task_data(DataConfig(task=task, data_dir=str(DATA),
                                     max_train_examples=SETTINGS[task]["max_train_examples"]))
    path = checkpoint(task, data)
    plain = Supernet.from_pretrained(path)
    plain.model.eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    pad = tokenizer.pad_token_id or 0
    validation = encode(tokenizer, data, "validation")
    reordered = Supernet.from_pretrained(path)
    start = time.perf_counter()
    reorder_on_calibration(reordered, encode(tokenizer, data, "train"),
                           SearchConfig().calibration_examples, pad)
    reorder_seconds = time.perf_counter() - start
    reordered.model.eval()
    return data, plain, reordered, validation, pad, reorder_seconds


def arm(name, supernet, space, searcher, validation, preset, trials, *, masked, pad_id,
        seed=0, low_fidelity=None, **options):
    evaluator = SubnetEvaluator(supernet, validation, preset, pad_id=pad_id, masked=masked)
    with tempfile.TemporaryDirectory() as tmp, TrialStore(Path(tmp) / "trials.db") as store:
        start = time.perf_counter()
        result = run_search(space, make_searcher(searcher, space, seed, **options), evaluator,
                            store, trials, progress=True, low_fidelity=low_fidelity)
        wall = time.perf_counter() - start
    sub = [t for t in result.trials if t.subnet != space.full() and t.is_full_fidelity]
    half = [t.metrics["metric"] for t in sub
            if t.metrics["encoder_params"] <= 0.5 * result.full["encoder_params"]]
    flops = [t.metrics["flops"] / result.full["flops"] for t in result.trials]
    return {"arm": name, "space": space.name, "searcher": searcher, "seed": seed,
            "options": options,
            "evaluation": ("masking" if masked else "use() slicing")
            + (f", multi-fidelity {low_fidelity:g}" if low_fidelity else ""),
            "promoted": result.promoted if low_fidelity else None,
            "trials": len(result.trials), "wall_seconds": wall,
            "seconds_per_candidate": wall / len(result.trials),
            "mean_flops_fraction": sum(flops) / len(flops),
            "hypervolume": result.hypervolume, "full_metric": result.full["metric"],
            "best_metric_at_half_encoder": max(half) if half else None,
            "front_size": len(result.front)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", default="rte,sst2")
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    quiet_libraries()
    defaults = SearchConfig()
    results = {}
    for task in args.tasks.split(","):
        data, plain, reordered, validation, pad, reorder_seconds = prepare(task)
        rows = [arm("tutorial", plain, make_space("small", plain.shape), "random", validation,
                    data.preset, args.trials, masked=True, pad_id=pad)]
        rows.append(arm("tutorial space, use()", reordered, make_space("small", plain.shape),
                        "random", validation, data.preset, args.trials, masked=False, pad_id=pad))
        rows.append(arm("nasprune defaults", reordered,
                        make_space(defaults.space, plain.shape), defaults.searcher, validation,
                        data.preset, args.trials, masked=False, pad_id=pad))
        rows[-1]["reorder_seconds"] = reorder_seconds
        rows.append(arm("nasprune defaults + --low-fidelity 0.25", reordered,
                        make_space(defaults.space, plain.shape), defaults.searcher, validation,
                        data.preset, args.trials, masked=False, pad_id=pad, low_fidelity=0.25))
        results[task] = rows

    lines = [f"# Search: {args.trials} candidates, MiniLM-L6 (standard fine-tuning)", "",
             "| task | arm | space | searcher | evaluation | wall | s/candidate | vs tutorial "
             "| mean FLOPs of candidates | hypervolume | best acc. at <= 50 % encoder |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for task, rows in results.items():
        base = rows[0]["wall_seconds"]
        for r in rows:
            best = r["best_metric_at_half_encoder"]
            lines.append(
                f"| {task} | {r['arm']} | {r['space']} | {r['searcher']} | {r['evaluation']} | "
                f"{r['wall_seconds']:.0f} s | {r['seconds_per_candidate']:.2f} | "
                f"{r['wall_seconds'] / base:.2f} | {r['mean_flops_fraction']:.2f} | "
                f"{r['hypervolume']:.4f} | "
                f"{'-' if best is None else f'{best:.3f}'} |")
    lines += ["", "Target: nasprune's 100 candidates in <= 1/3 of the masked evaluation's time. "
              "Importance reordering (once per model) is listed separately in the JSON "
              "(`reorder_seconds`)."]
    write_results("search", {"trials": args.trials, "results": results}, "\n".join(lines))


if __name__ == "__main__":
    main()
