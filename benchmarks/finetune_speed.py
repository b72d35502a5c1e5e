"""Fine-tuning MiniLM-L6: validation accuracy and training examples/second.

SST-2: 8,000-example training subset (seed 0), 2 epochs, original validation set (872).
RTE: full training set (2,490), 5 epochs, validation (277).
The best checkpoints are kept in runs/bench/ for the search and serving benchmarks.
A separate speed arm trains on 1,600 SST-2 examples twice in this process: plain random
batches (the reference loop) and nasprune's length-grouped batches; the ratio is the
speed-up, whatever else the machine is doing.

    python benchmarks/finetune_speed.py [--tasks sst2,rte] [--threads 2] [--speed-only]
        [--seed N] [--plain-batches] [--learning-rate X] [--batch-size N] [--max-length N]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import tempfile
import time

import torch

from nasprune.config import TrainConfig
from nasprune.core.models import quiet_libraries
from nasprune.data.tasks import DataConfig, load_task_data
from nasprune.train.finetune import finetune

from common import CHECKPOINTS, DATA, RESULTS, SETTINGS, write_results

#: The reference loop's hyper-parameters (the issue's plain loop); runs that differ say so.
REFERENCE = {"learning_rate": 5e-5, "batch_size": 16, "max_length": 128}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tasks", default="sst2,rte")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--speed-only", action="store_true",
                        help="only the speed arm; keep the accuracy rows of the last run")
    parser.add_argument("--speed-examples", type=int, default=1600)
    parser.add_argument("--plain-batches", action="store_true",
                        help="train on plain random batches (the reference loop) instead of "
                             "length-grouped ones")
    parser.add_argument("--learning-rate", type=float, default=REFERENCE["learning_rate"])
    parser.add_argument("--batch-size", type=int, default=REFERENCE["batch_size"])
    parser.add_argument("--max-length", type=int, default=REFERENCE["max_length"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    quiet_libraries()
    rows = {}
    for task in [] if args.speed_only else args.tasks.split(","):
        setting = SETTINGS[task]
        data = load_task_data(DataConfig(task=task, data_dir=str(DATA), seed=args.seed,
                                         max_train_examples=setting["max_train_examples"]))
        cfg = TrainConfig(epochs=setting["epochs"], batch_size=args.batch_size,
                          learning_rate=args.learning_rate, max_length=args.max_length,
                          seed=args.seed, threads=args.threads,
                          group_by_length=not args.plain_batches)
        name = run_name(task, args)
        start = time.perf_counter()
        result = finetune("minilm-l6", data, cfg, CHECKPOINTS / f"finetune-{name}")
        rows[name] = {
            "batches": "plain random" if args.plain_batches else "length-grouped",
            "seed": args.seed,
            "learning_rate": args.learning_rate,
            "batch_size": args.batch_size,
            "max_length": args.max_length,
            "threads": args.threads,
            "train_examples": result["train_examples"],
            "validation_examples": result["validation_examples"],
            "epochs": setting["epochs"],
            "accuracy": result["best"]["accuracy"],
            "best_epoch": result["best"]["epoch"],
            "history": [h["accuracy"] for h in result["history"]],
            "examples_per_second": result["examples_per_second"],
            "wall_seconds": time.perf_counter() - start,
            "date": time.strftime("%Y-%m-%d %H:%M"),
        }
    # Read the earlier rows only now: another run of this script may have finished meanwhile.
    previous_file = RESULTS / "finetune.json"
    previous = json.loads(previous_file.read_text()) if previous_file.is_file() else {}
    rows = {**previous.get("results", {}), **rows}
    # The speed arm runs with the reference settings only; variants keep its last figures.
    speed = previous.get("speed") if run_name("", args) else None
    if speed is None:
        speed = speed_arm(args.speed_examples, args.threads, args.seed)

    lines = ["# Fine-tuning MiniLM-L6 (AdamW, linear warm-up 10 %, dynamic padding)",
             "", "| run | batches | lr | batch | max len | train ex. | epochs "
             "| val. accuracy (best epoch) | threads | examples/s | wall |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for task, r in rows.items():
        lines.append(f"| {task} | {r.get('batches', 'length-grouped')} | "
                     f"{r.get('learning_rate', REFERENCE['learning_rate']):g} | "
                     f"{r.get('batch_size', REFERENCE['batch_size'])} | "
                     f"{r.get('max_length', REFERENCE['max_length'])} | "
                     f"{r['train_examples']} | {r['epochs']} | {r['accuracy']:.3f} "
                     f"({r['best_epoch']}) | {r.get('threads', 2)} | "
                     f"{r['examples_per_second']:.1f} | {r['wall_seconds'] / 60:.1f} min |")
    lines += ["", "A run's name lists what differs from lr 5e-5, batch 16, max length 128, "
              "length-grouped batches, seed 0. Reference (plain loop, lr 5e-5, batch 16): "
              "SST-2 0.861 in ~8 min, RTE 0.625 in ~19 min, 2 CPU threads. Examples/s of these "
              "long runs depend on what else the shared machine ran meanwhile; the speed arm "
              "below compares loops in one process.", "",
              *across_seeds(rows),
              f"## Speed, same process: {args.speed_examples} SST-2 examples, one epoch each", "",
              "| batches | examples/s | tokens per batch (padded) |", "|---|---|---|"]
    for name, r in speed.items():
        lines.append(f"| {name} | {r['examples_per_second']:.1f} | {r['padded_tokens']:.0f} |")
    ratio = (speed["length-grouped"]["examples_per_second"]
             / speed["plain random"]["examples_per_second"])
    lines.append(f"\nLength-grouped / plain random: **{ratio:.2f}x** examples/s.")
    write_results("finetune", {"seed": args.seed, "results": rows, "speed": speed},
                  "\n".join(lines))


def across_seeds(rows: dict) -> list[str]:
    """Mean and range of the runs that differ only in their seed, next to the standard error
    that the validation set's size alone puts on one run's accuracy."""
    groups: dict[str, list[dict]] = {}
    for name, row in rows.items():
        groups.setdefault(re.sub(r"-seed\d+$", "", name), []).append(row)
    lines = ["## Across seeds", "", "| settings | runs | mean accuracy | range "
             "| s.e. of one run (validation size) |", "|---|---|---|---|---|"]
    for name, group in groups.items():
        if len(group) < 2:
            continue
        accuracies = [r["accuracy"] for r in group]
        mean, n = statistics.mean(accuracies), group[0]["validation_examples"]
        lines.append(f"| {name} | {len(group)} | {mean:.3f} | {min(accuracies):.3f}-"
                     f"{max(accuracies):.3f} | {math.sqrt(mean * (1 - mean) / n):.3f} "
                     f"({n} examples) |")
    return lines + [""] if len(lines) > 4 else []


def run_name(task: str, args) -> str:
    """The task plus every setting that differs from the reference loop's."""
    return task + "".join([
        "-plain" if args.plain_batches else "",
        f"-lr{args.learning_rate:g}" if args.learning_rate != REFERENCE["learning_rate"] else "",
        f"-bs{args.batch_size}" if args.batch_size != REFERENCE["batch_size"] else "",
        f"-len{args.max_length}" if args.max_length != REFERENCE["max_length"] else "",
        f"-seed{args.seed}" if args.seed else "",
    ])


def speed_arm(n: int, threads: int, seed: int) -> dict:
    """Plain random batches vs. length-grouped batches, same model, data and process."""
    data = load_task_data(DataConfig(task="sst2", data_dir=str(DATA), seed=seed + 1,
                                     max_train_examples=n, max_eval_examples=64))
    out = {}
    for name, grouped in (("plain random", False), ("length-grouped", True)):
        cfg = TrainConfig(epochs=1, batch_size=16, seed=seed, threads=threads,
                          group_by_length=grouped, progress=False)
        with tempfile.TemporaryDirectory() as tmp:
            result = finetune("minilm-l6", data, cfg, tmp)
        out[name] = {"examples_per_second": result["examples_per_second"],
                     "padded_tokens": padded_tokens(data, grouped, seed)}
    return out


def padded_tokens(data, grouped: bool, seed: int) -> float:
    from transformers import AutoTokenizer

    from nasprune.core.models import resolve_model
    from nasprune.data.encode import encode
    from nasprune.train.batches import grouped_batches

    encoded = encode(AutoTokenizer.from_pretrained(resolve_model("minilm-l6")), data, "train")
    lengths = encoded.lengths()
    groups = grouped_batches(encoded, 16, seed, grouped)
    return sum(len(g) * max(lengths[i] for i in g) for g in groups) / len(groups)


if __name__ == "__main__":
    main()
