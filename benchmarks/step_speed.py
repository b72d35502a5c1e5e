"""Training throughput of each stage of the default run against its batch size and its
optimiser: examples per second of fine-tuning, super-network distillation and the pick's
recovery (distillation of a half-size sub-network), MiniLM-L6 on SST-2 sentences, at batch
16, 32 and 64, with torch's default AdamW on a CPU (a Python loop over the parameter
tensors) and with nasprune's fused AdamW (``train.optim``), all in this process and
interleaved round by round, so every ratio is against the old default (batch 16, for-loop
AdamW) measured beside it (the fast-recipe issue's "batch sizes chosen for throughput").

Only speed is measured here: whether a larger batch (with its learning rate) keeps the
accuracy is the quality benchmark's question.

    python benchmarks/step_speed.py [--examples 480] [--rounds 2] [--threads 2]

Writes ``results/step_speed.json`` (``stages``: stage -> optimiser -> batch -> examples/s,
the median over rounds; ``ratio``: against batch 16 with the for-loop AdamW) and
``results/step_speed.md``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from contextlib import ExitStack
from unittest import mock

import torch

from nasprune.config import RunConfig, TrainConfig
from nasprune.core.models import resolve_model
from nasprune.core.subnet import Subnet
from nasprune.core.supernet import Supernet
from nasprune.data.encode import encode
from nasprune.data.tasks import DataConfig, load_task_data
from nasprune.train.finetune import load_classifier
from nasprune.train.loop import train
from nasprune.train.recovery.distillation import distill

from common import DATA, machine, write_results

NAME = "step_speed"
BASE = 16
#: The optimisers compared; the first is the baseline of every ratio.
OPTIMIZERS = ("for-loop AdamW", "fused AdamW")
#: The modules that build the training stages' optimiser (``train.optim.adamw``).
USERS = ("nasprune.train.loop", "nasprune.train.recovery.distillation")
#: A half-size sub-network of MiniLM-L6 (12 heads / 1,536 units per layer): the pick's size.
HALF = ((6, 768),) * 6


def for_loop_adamw(params, lr, weight_decay=0.01):
    """torch's default on a CPU: AdamW looping over the parameter tensors in Python."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=False)


def stage_speed(stage: str, batch: int, optimizer: str, model, tokenizer, data,
                threads: int) -> float:
    """Examples per second of one pass over the training texts (steps only, no evaluation)."""
    with ExitStack() as patches:
        if optimizer == OPTIMIZERS[0]:
            for module in USERS:
                patches.enter_context(mock.patch(f"{module}.adamw", for_loop_adamw))
        return _speed(stage, batch, model, tokenizer, data, threads)


def _speed(stage: str, batch: int, model, tokenizer, data, threads: int) -> float:
    run = RunConfig(model="minilm-l6", train=TrainConfig(
        batch_size=batch, epochs=1.0, threads=threads, progress=False,
        strategy="standard" if stage == "fine-tuning" else "distill"))
    cfg = run.training()
    if stage == "recovery":
        supernet = Supernet(copy.deepcopy(model))
        student = supernet.extract(Subnet(HALF))
        train_enc = encode(tokenizer, data, "train", 128)
        start = time.perf_counter()  # the teacher's logits (computed once) are its cost too
        distill(student, model, train_enc, epochs=1.0, batch_size=batch,
                pad_id=tokenizer.pad_token_id or 0)
        return len(train_enc) / (time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as out:
        result = train(copy.deepcopy(model), tokenizer, data, cfg, out)
    return result["examples_per_second"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=480)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", default="16,32,64")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [int(b) for b in args.batches.split(",")]
    data = load_task_data(DataConfig(task="sst2", data_dir=str(DATA), search_split=16,
                                     max_train_examples=args.examples + 16,
                                     max_eval_examples=16))
    model, tokenizer = load_classifier(resolve_model("minilm-l6"), data.preset, seed=0)
    stages = ("fine-tuning", "super-network distillation", "recovery")
    for stage in stages:  # warm-up, not recorded: first calls pay one-time set-up
        stage_speed(stage, sizes[0], OPTIMIZERS[1], model, tokenizer, data, args.threads)
    seen: dict = {s: {o: {b: [] for b in sizes} for o in OPTIMIZERS} for s in stages}
    for r in range(args.rounds):
        for stage in stages:
            for opt in OPTIMIZERS:
                for batch in sizes:
                    rate = stage_speed(stage, batch, opt, model, tokenizer, data, args.threads)
                    seen[stage][opt][batch].append(rate)
                    print(f"round {r + 1}: {stage}, {opt}, batch {batch}: {rate:.1f} "
                          "examples/s", flush=True)
    speed = {s: {o: {str(b): statistics.median(v) for b, v in per.items()}
                 for o, per in by_opt.items()} for s, by_opt in seen.items()}
    ratio = {s: {o: {b: v / by_opt[OPTIMIZERS[0]][str(BASE)] for b, v in per.items()}
                 for o, per in by_opt.items()} for s, by_opt in speed.items()}
    lines = [f"# Training throughput by batch size and optimiser (MiniLM-L6, SST-2, "
             f"{args.examples} examples)", "",
             f"Examples per second, median of {args.rounds} interleaved rounds in one "
             f"process, {args.threads} threads; in brackets: against batch {BASE} with the "
             f"{OPTIMIZERS[0]} (torch's default on a CPU, nasprune's before the fused one) "
             "measured beside it. Recovery trains a half-size sub-network (6 heads / 768 "
             "units per layer) and includes computing the teacher's logits once.", "",
             "| stage | optimiser | " + " | ".join(f"batch {b}" for b in sizes) + " |",
             "|---|---|" + "---|" * len(sizes)]
    for s in stages:
        for o in OPTIMIZERS:
            lines.append(f"| {s} | {o} | " + " | ".join(
                f"{speed[s][o][str(b)]:.1f} ({ratio[s][o][str(b)]:.2f}x)" for b in sizes) + " |")
    write_results(NAME, {"machine": machine(), "examples": args.examples,
                         "rounds": args.rounds, "threads": args.threads, "stages": speed,
                         "ratio": ratio, "runs": {s: {o: {str(b): v for b, v in per.items()}
                                                      for o, per in by_opt.items()}
                                                  for s, by_opt in seen.items()}},
                  "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
