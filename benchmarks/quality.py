"""Quality of the Pareto front: the tutorial's method vs nasprune, same model, data and budget.

MiniLM-L6 on SST-2 (8,000-example training subset, seed 0, original validation set) and
RTE (full), the same number of training epochs in every arm (SST-2 2, RTE 5; lr 5e-5,
batch 16):

(a) the tutorial's method: standard fine-tuning, ``small`` space, prefix *masking* without
    importance ordering, random search;
(b) standard fine-tuning + importance ordering (Fisher, 256 training examples), evaluated
    through ``Supernet.use()``, with nasprune's default space and searcher;
(c) super-network fine-tuning (``--strategy``, default ``sandwich-kd``; importance
    ordering first) + the same space and searcher as (b).

Each arm evaluates ``--trials`` candidates (100) on the whole validation set. Reported per
arm: unpruned accuracy, hypervolume of (error, encoder parameters / full encoder) with the
reference point 1.1 (same normalisation for all arms), the best accuracy among
sub-networks with <= 50 % and <= 30 % of the encoder parameters, the smallest encoder
fraction whose accuracy is within 1 point of the arm's own unpruned model; for (b) and (c)
also the recovery (least squares, distillation) of the pick at <= 50 %. One combined
Pareto plot per task.

Checkpoints are kept under runs/bench/ and reused: arm (a)/(b)'s standard checkpoint is
benchmarks/finetune.py's runs/bench/finetune-<task>/model when its settings match.

    python benchmarks/quality.py                                   # the full benchmark
    python benchmarks/quality.py --tasks sst2 --train-examples 300 --epochs 1 --trials 10 \
        --eval-examples 200 --name quality-smoke                    # a minutes-long check
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from nasprune.cli import quiet_libraries
from nasprune.cost import CostModel
from nasprune.data import DataConfig, encode, load_task_data
from nasprune.pipeline import reorder_on_calibration
from nasprune.recovery import RecoveryConfig, recover
from nasprune.report import plot_pareto
from nasprune.search.objective import SubnetEvaluator
from nasprune.search.pareto import REFERENCE, hypervolume, pareto_front
from nasprune.search.runner import run_search
from nasprune.search.searchers import make_searcher
from nasprune.search.store import TrialStore
from nasprune.subnet import make_space
from nasprune.supernet import Supernet
from nasprune.training import TrainConfig, load_classifier, train

from common import CHECKPOINTS, DATA, RESULTS, SETTINGS, write_results

MODEL = "minilm-l6"
LR, BATCH = 5e-5, 16
BUDGETS = (0.5, 0.3)


# --------------------------------------------------------------------------- training


def _matches(metrics_file: Path, cfg: TrainConfig, n_train: int) -> bool:
    if not metrics_file.is_file():
        return False
    saved = json.loads(metrics_file.read_text())
    c = saved.get("config", {})
    return (saved.get("train_examples") == n_train and c.get("epochs") == cfg.epochs
            and c.get("learning_rate") == cfg.learning_rate and c.get("seed") == cfg.seed
            and c.get("batch_size") == cfg.batch_size and c.get("strategy") == cfg.strategy
            and (c.get("strategy_options") or {}) == cfg.strategy_options)


def checkpoint(data, cfg: TrainConfig, out: Path, reuse: list[Path]) -> tuple[Path, dict]:
    """Train into ``out`` unless ``out`` or one of ``reuse`` already holds this training."""
    n_train = len(data.train)
    for directory in [*reuse, out]:
        if _matches(directory / "metrics.json", cfg, n_train) and (directory / "model").is_dir():
            result = json.loads((directory / "metrics.json").read_text())
            print(f"  reusing {directory / 'model'} ({result['metric']} "
                  f"{result['best'][result['metric']]:.4f})")
            return directory / "model", {**result, "reused": str(directory)}
    print(f"  training {cfg.strategy} -> {out}")
    model, tokenizer = load_classifier(MODEL, data.preset)
    start = time.perf_counter()
    result = train(model, tokenizer, data, cfg, out)
    result["wall_seconds"] = time.perf_counter() - start
    (out / "metrics.json").write_text(json.dumps(result, indent=2, default=str))
    return out / "model", result


# ----------------------------------------------------------------------------- search


def search_arm(model_dir: Path, data, args, *, space_name: str, searcher_name: str,
               masked: bool, reorder: bool, store_dir: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    pad = tokenizer.pad_token_id or 0
    supernet = Supernet.from_pretrained(model_dir)
    supernet.model.eval()
    if reorder and supernet.order is None:
        reorder_on_calibration(supernet, encode(tokenizer, data, "train"), args.calibration,
                               pad, seed=args.seed)
    if not reorder and supernet.order is not None:
        raise SystemExit(f"{model_dir} is importance-ordered; arm (a) needs the original order")
    validation = encode(tokenizer, data, "validation")
    space = make_space(space_name, supernet.shape)
    searcher = make_searcher(searcher_name, space, args.seed)
    evaluator = SubnetEvaluator(supernet, validation, data.preset, cost=CostModel(supernet),
                                pad_id=pad, masked=masked, seed=args.seed)
    shutil.rmtree(store_dir, ignore_errors=True)  # a fresh search every time
    start = time.perf_counter()
    with TrialStore(store_dir / "trials.db") as store:
        result = run_search(space, searcher, evaluator, store, args.trials,
                            ("error", "params"), progress=False)
    return supernet, tokenizer, result, time.perf_counter() - start


def summarise(result) -> dict:
    """The figures of one arm from its stored trials (full fidelity only)."""
    trials = [t for t in result.trials if t.is_full_fidelity]
    full = result.full
    enc_full = full["encoder_params"]
    unpruned = full["metric"]
    points = [(t.metrics["error"], t.metrics["encoder_params"] / enc_full) for t in trials]
    out = {
        "unpruned": unpruned,
        "hypervolume": hypervolume(points, (REFERENCE, REFERENCE)),
        "trials": len(trials),
        "front": [
            {"subnet": str(trials[i].subnet), "metric": trials[i].metrics["metric"],
             "encoder_fraction": points[i][1]}
            for i in sorted(pareto_front(points), key=lambda i: points[i][1])
        ],
    }
    for budget in BUDGETS:
        inside = [t for t, p in zip(trials, points) if p[1] <= budget + 1e-9]
        best = max(inside, key=lambda t: t.metrics["metric"], default=None)
        out[f"best_at_{int(budget * 100)}"] = None if best is None else {
            "metric": best.metrics["metric"], "subnet": str(best.subnet),
            "encoder_fraction": best.metrics["encoder_params"] / enc_full}
    close = [p[1] for t, p in zip(trials, points) if t.metrics["metric"] >= unpruned - 0.01]
    out["smallest_within_1pt"] = min(close) if close else None
    return out


def pick_at(result, budget: float):
    trials = [t for t in result.trials if t.is_full_fidelity]
    enc_full = result.full["encoder_params"]
    inside = [t for t in trials if t.metrics["encoder_params"] / enc_full <= budget + 1e-9]
    return max(inside, key=lambda t: (t.metrics["metric"], -t.metrics["encoder_params"]),
               default=None)


def recovery_of(supernet, tokenizer, data, trial, args) -> dict:
    """Least squares and distillation, each on a fresh extract of the pick."""
    pad = tokenizer.pad_token_id or 0
    train_enc = encode(tokenizer, data, "train")
    validation = encode(tokenizer, data, "validation")
    out = {"subnet": str(trial.subnet)}
    for method in args.recovery:
        small = supernet.extract(trial.subnet).eval()
        cfg = RecoveryConfig(method=method, calibration_examples=args.calibration,
                             distill_steps=args.recovery_steps, seed=args.seed)
        report = recover(small, supernet.model, train_enc, validation=validation,
                         preset=data.preset, config=cfg, pad_id=pad)
        out[method] = {"before": report.before[data.preset.metric],
                       "after": report.after[data.preset.metric],
                       "logits_mse_before": report.before["logits_mse"],
                       "logits_mse_after": report.after["logits_mse"],
                       "seconds": report.seconds}
        del small
    return out


# ------------------------------------------------------------------------------- main


def run_task(task: str, args) -> dict:
    setting = SETTINGS[task]
    n_train = args.train_examples if args.train_examples is not None else setting[
        "max_train_examples"]
    epochs = args.epochs if args.epochs is not None else setting["epochs"]
    data = load_task_data(DataConfig(task=task, data_dir=str(DATA), seed=args.seed,
                                     max_train_examples=n_train,
                                     max_eval_examples=args.eval_examples))
    tag = f"quality-{task}-n{len(data.train)}-e{epochs:g}-s{args.seed}"
    base = CHECKPOINTS / tag
    print(f"{task}: {len(data.train)} train / {len(data.validation)} validation, "
          f"{epochs:g} epochs -> {base}")
    common = dict(epochs=float(epochs), batch_size=BATCH, learning_rate=LR, seed=args.seed,
                  threads=args.threads, progress=False)
    lead = CHECKPOINTS / f"finetune-{task}"
    std_dir, std_result = checkpoint(data, TrainConfig(**common), base / "standard",
                                     [lead] if args.eval_examples is None else [])
    arms: dict[str, dict] = {}
    plot_runs = {}
    training = {"standard": _train_info(std_result)}

    if "a" in args.arms:
        print("  arm (a): small space, masking, no ordering, random search")
        _, _, res, secs = search_arm(std_dir, data, args, space_name="small",
                                     searcher_name="random", masked=True, reorder=False,
                                     store_dir=base / "search-a")
        arms["a"] = {"label": "(a) tutorial", "space": "small", "searcher": "random",
                     "training": "standard", "search_seconds": secs, **summarise(res)}
        plot_runs["(a) tutorial"] = res.trials
    if "b" in args.arms:
        print(f"  arm (b): importance ordering, {args.space} space, {args.searcher} search")
        sn, tok, res, secs = search_arm(std_dir, data, args, space_name=args.space,
                                        searcher_name=args.searcher, masked=False,
                                        reorder=True, store_dir=base / "search-b")
        arms["b"] = {"label": "(b) standard + ordering", "space": args.space,
                     "searcher": args.searcher, "training": "standard",
                     "search_seconds": secs, **summarise(res)}
        plot_runs["(b) standard + ordering"] = res.trials
        _recovery(arms["b"], sn, tok, data, res, args)
    for strategy in args.strategies if "c" in args.arms else []:
        options = {"space": args.space, "calibration_examples": args.calibration}
        cfg = TrainConfig(**common, strategy=strategy, strategy_options=options)
        print(f"  arm (c): {strategy} super-network training")
        model_dir, result = checkpoint(data, cfg, base / f"{strategy}-{args.space}", [])
        training[strategy] = _train_info(result)
        sn, tok, res, secs = search_arm(model_dir, data, args, space_name=args.space,
                                        searcher_name=args.searcher, masked=False,
                                        reorder=True, store_dir=base / f"search-c-{strategy}")
        key = "c" if len(args.strategies) == 1 else f"c:{strategy}"
        label = f"(c) {strategy}"
        arms[key] = {"label": label, "space": args.space, "searcher": args.searcher,
                     "training": strategy, "search_seconds": secs, **summarise(res)}
        plot_runs[label] = res.trials
        _recovery(arms[key], sn, tok, data, res, args)

    plot = RESULTS / f"{args.name}-{task}.png"
    plot_pareto(plot_runs, plot, x="encoder_params", log_x=False,
                title=f"MiniLM-L6 {task.upper()}: {args.trials} candidates per arm")
    return {"train_examples": len(data.train), "validation_examples": len(data.validation),
            "epochs": epochs, "training": training, "arms": arms, "plot": plot.name}


def _train_info(result: dict) -> dict:
    return {"best_epoch": result["best"]["epoch"], "metric": result["best"][result["metric"]],
            "train_seconds": result.get("train_seconds"), "reused": result.get("reused")}


def _recovery(arm: dict, supernet, tokenizer, data, result, args) -> None:
    if not args.recovery:
        return
    trial = pick_at(result, 0.5)
    if trial is None:
        return
    print(f"  recovery of the pick at <= 50 %: {trial.subnet}")
    arm["recovery_at_50"] = recovery_of(supernet, tokenizer, data, trial, args)


def _fmt(value, digits=3):
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(rows: dict, args) -> str:
    lines = ["# Pareto-front quality: the tutorial's method vs nasprune (MiniLM-L6)", "",
             f"{args.trials} candidates per arm, seed {args.seed}, lr {LR:g}, batch {BATCH}, "
             f"same epochs in every arm; (b)/(c) space `{args.space}`, searcher "
             f"`{args.searcher}`. Hypervolume of (error, encoder parameters / full encoder), "
             f"reference point {REFERENCE}.", ""]
    for task, r in rows.items():
        lines += [f"## {task.upper()} ({r['train_examples']} train, "
                  f"{r['validation_examples']} validation, {r['epochs']:g} epochs)", "",
                  "| arm | unpruned | hypervolume | best <= 50 % enc. | best <= 30 % enc. | "
                  "smallest enc. within 1 pt | search |",
                  "|---|---|---|---|---|---|---|"]
        for arm in r["arms"].values():
            b50, b30 = arm["best_at_50"], arm["best_at_30"]
            lines.append(
                f"| {arm['label']} | {arm['unpruned']:.3f} | {arm['hypervolume']:.4f} | "
                f"{_fmt(b50 and b50['metric'])} | {_fmt(b30 and b30['metric'])} | "
                f"{_fmt(arm['smallest_within_1pt'], 2)} | {arm['search_seconds'] / 60:.1f} min |")
        rec = [(a["label"], a["recovery_at_50"]) for a in r["arms"].values()
               if a.get("recovery_at_50")]
        if rec:
            lines += ["", "Recovery of the pick at <= 50 % of the encoder (accuracy before -> "
                      "after; fresh extract per method):", "",
                      "| arm | sub-network | " + " | ".join(args.recovery) + " |",
                      "|---|---|" + "---|" * len(args.recovery)]
            for label, info in rec:
                cells = [f"{info[m]['before']:.3f} -> {info[m]['after']:.3f} "
                         f"({info[m]['seconds']:.0f} s)" for m in args.recovery]
                lines.append(f"| {label} | `{info['subnet']}` | " + " | ".join(cells) + " |")
        lines += ["", "Training: " + "; ".join(
            f"{name} best epoch {t['best_epoch']} ({t['metric']:.3f}"
            + (f", {t['train_seconds'] / 60:.1f} min" if t["train_seconds"] else "") + ")"
            for name, t in r["training"].items()), "", f"![Pareto fronts]({r['plot']})", ""]
        if task == "rte":
            lines += ["RTE has 277 validation pairs: one example is 0.36 points, so "
                      "differences of a few points are within seed noise.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="sst2,rte")
    parser.add_argument("--arms", default="a,b,c", help="any of a, b, c")
    parser.add_argument("--train-examples", type=int, default=None,
                        help="training subset for every task (default: SST-2 8000, RTE all)")
    parser.add_argument("--epochs", type=float, default=None,
                        help="epochs for every arm (default: SST-2 2, RTE 5)")
    parser.add_argument("--eval-examples", type=int, default=None,
                        help="validation subset (default: all; set only for quick checks)")
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--strategies", default="sandwich-kd",
                        help="comma-separated super-network strategies for arm (c)")
    parser.add_argument("--space", default="layerwise")
    parser.add_argument("--searcher", default="local")
    parser.add_argument("--calibration", type=int, default=256,
                        help="training examples for importance scores and least squares")
    parser.add_argument("--recovery", default="least-squares,distill",
                        help="recovery methods for the pick at <= 50 %% ('' for none)")
    parser.add_argument("--recovery-steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="quality", help="results file name")
    args = parser.parse_args()
    args.arms = set(args.arms.split(","))
    args.strategies = [s for s in args.strategies.split(",") if s]
    args.recovery = [m for m in args.recovery.split(",") if m]
    torch.set_num_threads(args.threads)
    quiet_libraries()
    start = time.perf_counter()
    rows = {task: run_task(task, args) for task in args.tasks.split(",")}
    payload = {"seed": args.seed, "trials": args.trials, "space": args.space,
               "searcher": args.searcher, "strategies": args.strategies,
               "calibration_examples": args.calibration, "recovery_steps": args.recovery_steps,
               "wall_seconds": time.perf_counter() - start, "tasks": rows}
    write_results(args.name, payload, markdown(rows, args))


if __name__ == "__main__":
    main()
