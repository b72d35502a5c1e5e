"""What do parallel search backends cost and gain? In-process vs worker processes vs Ray.

The same random search (seed 0, ``layerwise`` space) of MiniLM-L6 sub-networks on the RTE
validation set runs through each backend: ``local`` (in process, the baseline) and
``process`` / ``ray`` with 1 and 2 workers, all within the same CPU budget (``--cpus``:
one worker gets all of it, two workers half each; torch threads = CPUs per worker). Per
configuration: worker start-up (processes spawned / actors placed, super-network built
once per worker), search wall time, time per candidate, speed-up over in-process, and the
**overhead per candidate**: worker-seconds not spent evaluating,
``(workers * wall - sum of evaluation times) / candidates`` — dispatch, serialisation,
the driver's store and searcher, and idle workers waiting for them.

A second, model-free pass sends ``--noop-trials`` candidates whose evaluation returns at
once through every backend: its time per candidate is the pure round-trip cost of the
backend (what a real cluster adds per candidate, independent of the model).

The model is the fine-tuned checkpoint at ``$NASPRUNE_BENCH_HOME/finetune-rte/model`` when it
exists, else the raw MiniLM-L6 with a new, untrained classifier head: accuracy is irrelevant here
(every backend evaluates the same weights on the same inputs; the benchmark checks that
they return the same candidates and metrics).

    python benchmarks/distributed.py [--trials 100] [--examples 277] [--cpus 2]
        [--backends local,process,ray] [--workers 1,2] [--noop-trials 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from nasprune.core.cost import CostModel
from nasprune.core.models import quiet_libraries
from nasprune.core.spaces import make_space
from nasprune.core.supernet import Supernet
from nasprune.data.encode import encode, subset
from nasprune.data.tasks import DataConfig, load_task_data
from nasprune.search.executors.local import LocalExecutor
from nasprune.search.executors.process import ProcessExecutor
from nasprune.search.executors.ray import RayExecutor
from nasprune.search.executors.spec import EvaluatorSpec
from nasprune.search.objective import SubnetEvaluator
from nasprune.search.runner import run_search
from nasprune.search.searchers import make_searcher
from nasprune.search.store import TrialStore

from common import CHECKPOINTS, DATA, write_results

FINETUNED = CHECKPOINTS / "finetune-rte" / "model"


@dataclass
class Noop:
    """A model-free evaluation factory: metrics from the counts alone, returned at once."""

    def __call__(self):
        def evaluate(subnet, fidelity):
            size = sum(h + u for h, u in subnet.layers)
            return {"error": 1.0 / (1.0 + size), "params": float(size + 1)}

        return evaluate


def load(examples: int | None):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from nasprune.train.finetune import load_classifier

    data = load_task_data(DataConfig(task="rte", data_dir=str(DATA)))
    if (FINETUNED / "config.json").is_file():
        model = AutoModelForSequenceClassification.from_pretrained(FINETUNED)
        tokenizer = AutoTokenizer.from_pretrained(FINETUNED)
        source = str(FINETUNED.relative_to(CHECKPOINTS.parents[1]))
    else:
        model, tokenizer = load_classifier("minilm-l6", data.preset, seed=0)
        source = "raw MiniLM-L6, new untrained head (speed only)"
    validation = encode(tokenizer, data, "validation", 128)
    if examples:
        validation = subset(validation, examples, 0)
    supernet = Supernet(model.eval())
    evaluator = SubnetEvaluator(supernet, validation, data.preset,
                                cost=CostModel(supernet, 128), batch_size=64,
                                pad_id=tokenizer.pad_token_id or 0)
    return evaluator, source, validation


def one_search(space, executor, trials: int) -> tuple[float, list, list[float]]:
    """Wall time, stored trials and the time each trial was stored."""
    stamps: list[float] = []
    with tempfile.TemporaryDirectory() as tmp, TrialStore.for_run(Path(tmp)) as store:
        start = time.perf_counter()
        result = run_search(space, make_searcher("random", space, seed=0), None, store,
                            trials, executor=executor, progress=False,
                            on_trial=lambda t: stamps.append(time.perf_counter()))
        return time.perf_counter() - start, result.trials, stamps


def configuration(backend: str, workers: int, factory, cpus: int, evaluator=None):
    """(executor, start-up seconds) for one configuration within ``cpus`` CPUs."""
    start = time.perf_counter()
    if backend == "local":
        torch.set_num_threads(cpus)
        evaluate = evaluator if evaluator is not None else factory()
        return LocalExecutor(evaluate), time.perf_counter() - start
    per_worker = max(1, cpus // workers)
    cls = ProcessExecutor if backend == "process" else RayExecutor
    executor = cls(factory, workers, cpus_per_worker=per_worker)
    return executor, time.perf_counter() - start


def run_all(label, space, factory, args, evaluator=None, trials=None) -> list[dict]:
    rows, reference = [], None
    trials = trials or args.trials
    # in process first and again last: the two bracket any drift of the shared machine's load
    plan = [("local", 1)] + [(b, w) for b in args.backends if b != "local" for w in args.workers]
    plan.append(("local", 1))
    for backend, workers in plan:
        executor, startup = configuration(backend, workers, factory, args.cpus, evaluator)
        try:
            wall, stored, stamps = one_search(space, executor, trials)
        finally:
            executor.close()
        evals = sum(t.wall_s for t in stored)
        n = len(stored)
        # steady state: after the reference (the full model, evaluated alone first)
        window = stamps[-1] - stamps[0]
        steady_evals = sum(t.wall_s for t in stored[1:])
        same = None
        key = {t.subnet: (round(t.metrics["error"], 6), t.metrics["params"]) for t in stored}
        if reference is None:
            reference = key
        else:
            same = key == reference
        row = {
            "pass": label, "backend": backend, "workers": workers,
            "cpus_per_worker": args.cpus if backend == "local" else max(1, args.cpus // workers),
            "candidates": n, "startup_s": startup, "wall_s": wall, "per_candidate_s": wall / n,
            "eval_mean_s": evals / n,
            "overhead_ms": 1000 * (workers * wall - evals) / n,
            "steady_per_candidate_s": window / (n - 1),
            "steady_overhead_ms": 1000 * (workers * window - steady_evals) / (n - 1),
            "same_candidates_and_metrics_as_local": same,
        }
        if backend == "local" and rows:
            row["backend"] = "local (again)"
        rows.append(row)
        print(f"[{label}] {backend} x{workers}: startup {startup:.1f}s, wall {wall:.1f}s, "
              f"{wall / n:.3f}s/candidate, steady {row['steady_per_candidate_s']:.3f}s, "
              f"overhead {row['steady_overhead_ms']:.1f} ms", flush=True)
    baseline = statistics.mean(r["wall_s"] for r in rows if r["backend"].startswith("local"))
    for r in rows:  # against the mean of the two in-process runs
        r["speedup"] = baseline / r["wall_s"]
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| backend | workers | CPUs/worker | start-up s | wall s | s/candidate | "
             "steady s/candidate | speed-up | mean eval s | overhead ms/candidate | "
             "same results |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        same = {None: "(baseline)", True: "yes", False: "**no**"}[
            r["same_candidates_and_metrics_as_local"]]
        lines.append(
            f"| {r['backend']} | {r['workers']} | {r['cpus_per_worker']} | {r['startup_s']:.1f} "
            f"| {r['wall_s']:.1f} | {r['per_candidate_s']:.3f} | "
            f"{r['steady_per_candidate_s']:.3f} | {r['speedup']:.2f}x | "
            f"{r['eval_mean_s']:.3f} | {r['steady_overhead_ms']:.1f} | {same} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100, help="candidates per search")
    parser.add_argument("--examples", type=int, default=None,
                        help="RTE validation examples per evaluation (default: all 277)")
    parser.add_argument("--cpus", type=int, default=2, help="CPU budget of every configuration")
    parser.add_argument("--backends", default="local,process,ray")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--noop-trials", type=int, default=200,
                        help="candidates of the model-free round-trip pass (0: skip)")
    parser.add_argument("--name", default="distributed", help="results file name")
    args = parser.parse_args()
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    args.workers = [int(w) for w in args.workers.split(",")]
    quiet_libraries()
    started = time.perf_counter()

    ray_init_s = None
    if "ray" in args.backends:
        import ray

        t = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="WARNING")
        ray_init_s = time.perf_counter() - t

    evaluator, source, validation = load(args.examples)
    spec = EvaluatorSpec.from_evaluator(evaluator)
    space = make_space("layerwise", evaluator.supernet.shape, unit_step=64)
    tokens = int(validation.lengths().sum())
    model_rows = run_all("model", space, spec, args, evaluator=evaluator)
    noop_rows = (run_all("noop", make_space("layerwise", evaluator.supernet.shape, unit_step=16),
                         Noop(), args, trials=args.noop_trials) if args.noop_trials else [])
    if ray_init_s is not None:
        import ray

        ray.shutdown()
    load_avg = os.getloadavg()[0]
    wall = time.perf_counter() - started

    best = max(model_rows, key=lambda r: r["speedup"])
    parallel_noop = [r for r in noop_rows if r["backend"] != "local"]
    md = [
        "# Distributed search: in-process vs worker processes vs Ray",
        "",
        f"Random search (seed 0, layerwise space, FFN step 64) of {args.trials} MiniLM-L6 "
        f"sub-networks, each evaluated on {len(validation)} RTE validation examples "
        f"({tokens} tokens, batches of 64, dynamic padding). Model: {source}. Every "
        f"configuration gets the same {args.cpus} CPUs: 1 worker x {args.cpus} threads or "
        f"2 workers x {max(1, args.cpus // 2)} thread(s); in-process uses {args.cpus} threads.",
        "",
        "## Search with the model",
        "",
        table(model_rows),
        "",
        "*start-up*: spawning the worker processes / placing the Ray actors and building the "
        "super-network once in each (not part of *wall*). *speed-up*: mean wall of the two "
        "in-process runs (first and last, to bracket drift in the machine's load) / wall. "
        "*steady*: after the reference (the full model is evaluated first, alone, while "
        "other workers wait). *overhead*: worker-seconds per candidate not spent "
        "evaluating in that steady window, (workers x window - evaluation times) / "
        "candidates: dispatch, serialisation, the driver's store and searcher, and the "
        "last candidates' tail (one worker busy, the other done).",
        "",
    ]
    if noop_rows:
        md += [
            f"## Round trip without a model ({args.noop_trials} candidates, evaluation "
            "returns at once)",
            "",
            table(noop_rows),
            "",
            "Here *s/candidate* is the full cost of a candidate on that backend besides "
            "the evaluation itself (driver: store + searcher; backend: dispatch and "
            "serialisation).",
            "",
        ]
    one = {r["backend"]: r for r in model_rows if r["workers"] == 1}
    local_eval = statistics.mean(r["eval_mean_s"] for r in model_rows
                                 if r["backend"].startswith("local"))
    md += [
        "## Reading",
        "",
        f"Best speed-up over in-process: {best['speedup']:.2f}x ({best['backend']} x"
        f"{best['workers']}). On {os.cpu_count()} cores shared with other jobs this is not "
        "what a cluster gives: two workers with one thread each do the same arithmetic as "
        "one process with two threads, so what a second worker can win here is PyTorch's "
        "imperfect scaling from one to two threads on these small matrices and, on an "
        "oversubscribed machine, the stalls of one multi-threaded process whose threads wait "
        "for each other at every operation while other jobs hold the cores (single-threaded "
        "workers never wait for each other) — which is how more than 2x on 2 cores can "
        "appear. "
        "On a cluster each worker brings its own cores, and throughput grows with the "
        "number of workers as long as one evaluation is long next to the round trip below.",
        "",
        "One worker against in-process isolates the cost of evaluating elsewhere: "
        + ", ".join(f"{b} x1 {r['speedup']:.2f}x (mean evaluation {r['eval_mean_s']:.2f} s "
                    f"vs {local_eval:.2f} s in process)"
                    for b, r in one.items() if not b.startswith("local"))
        + ". The worker evaluates with the same code on a rebuilt copy of the same weights "
        "(equal speed when both are timed in one process), so a gap in mean evaluation time "
        "is the shared machine's load moving between runs, not the backend; the per-"
        "candidate overhead column and the round trip below are what the backend adds.",
    ]
    if parallel_noop:
        worst = max(parallel_noop, key=lambda r: r["per_candidate_s"])
        md += [
            "",
            f"Per-candidate round trip without a model: at most "
            f"{1000 * worst['per_candidate_s']:.1f} ms ({worst['backend']} x"
            f"{worst['workers']}), against {1000 * noop_rows[0]['per_candidate_s']:.1f} ms "
            "in process. An evaluation of this model takes "
            f"{local_eval:.2f} s on average, so the backends' overhead is "
            f"{100 * worst['per_candidate_s'] / local_eval:.1f} % of one "
            "evaluation.",
        ]
    if ray_init_s is not None:
        md += ["", f"Starting the local Ray instance itself: {ray_init_s:.1f} s (once)."]
    md += ["", "Command: `python benchmarks/distributed.py " + " ".join(sys.argv[1:]) + "`."]
    md += ["", f"Load average {load_avg:.1f} at the end (other jobs share the cores); "
           f"wall time {wall:.0f} s. Timings on a shared machine carry 10-20 % noise."]
    write_results(args.name, {"args": vars(args), "model": source,
                              "examples": len(validation), "tokens": tokens,
                              "ray_init_s": ray_init_s, "rows": model_rows + noop_rows,
                              "load_average_end": load_avg, "wall_s": wall}, "\n".join(md))


if __name__ == "__main__":
    main()
