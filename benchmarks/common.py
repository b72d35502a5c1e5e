"""What every benchmark shares: where the data is, machine facts, writing JSON + Markdown."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "glue"
#: Result files (committed). ``NASPRUNE_BENCH_RESULTS`` points a run started from a frozen
#: copy of the code at the checkout's own folder.
RESULTS = Path(os.environ.get("NASPRUNE_BENCH_RESULTS", REPO / "benchmarks" / "results"))
#: Checkpoints, run directories and trial stores that benchmarks produce and reuse: outside
#: the repository, so a campaign continues in a later session (never committed).
CHECKPOINTS = Path(os.environ.get("NASPRUNE_BENCH_HOME",
                                  Path.home() / ".cache" / "nasprune" / "bench"))
#: Fine-tuning of the shared checkpoints (finetune_speed.py writes them, search_cost.py and
#: the quality benchmark reuse them).
SETTINGS = {
    "sst2": {"max_train_examples": 8000, "epochs": 2},
    "rte": {"max_train_examples": None, "epochs": 5},
}


def machine() -> dict:
    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cuda": torch.cuda.is_available(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def write_results(name: str, payload: dict, markdown: str, results: Path = RESULTS) -> None:
    """``results/NAME.json`` and ``.md`` (a smoke run passes another folder: the recorded
    results stay those of real runs)."""
    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "machine": machine(), **payload}
    (results / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str))
    (results / f"{name}.md").write_text(markdown.rstrip() + "\n")
    print(markdown)


def interleaved(fns: dict, rounds: int) -> dict[str, float]:
    """Median seconds per callable, timed round-robin so that load from other processes
    on a shared machine hits every setting alike (one untimed warm-up round first)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(rounds + 1):
        for key, fn in fns.items():
            start = time.perf_counter()
            fn()
            if r:
                times[key].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}
