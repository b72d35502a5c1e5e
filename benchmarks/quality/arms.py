"""The recipes compared: (a) the tutorial's masked random search; (b)-(e) nasprune's own
stages in a run directory, with or without recovery, super-network distillation and
unlabeled texts."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import torch
from benchmarks.common import DATA, SETTINGS, interleaved
from benchmarks.quality.settings import (
    BUDGETS,
    PICK_ROUNDS,
    PLACE,
    REFERENCE,
    SEARCH_OF,
    run_name,
)
from benchmarks.quality.stages import Stages, points, trials_of

from nasprune.config import RunConfig, SearchConfig, TrainConfig
from nasprune.data.encode import encode
from nasprune.data.tasks import DataConfig
from nasprune.pipeline.export import export_stage
from nasprune.pipeline.stages import search_stage, supernet_stage
from nasprune.train.evaluation import evaluate


def run_config(task: str, seed: int, args, **changes) -> RunConfig:
    setting = SETTINGS[task]
    data = DataConfig(task=task, data_dir=str(DATA), seed=seed,
                      max_train_examples=args.train_examples or setting["max_train_examples"],
                      max_eval_examples=args.eval_examples)
    epochs = args.epochs or setting["epochs"]
    train = TrainConfig(epochs=float(epochs), batch_size=16, learning_rate=5e-5,
                        seed=seed, threads=args.threads, progress=True,
                        max_length=args.max_length)
    cfg = RunConfig(model=args.model, data=data, train=train,
                    search=SearchConfig(trials=args.trials, seed=seed,
                                        objectives=("error", "encoder_params")),
                    pick="encoder_params<=0.5")
    return dataclasses.replace(cfg, **changes)


def copy_teacher(source: Path, run_dir: Path) -> None:
    """Arms that train further start from the very same fine-tuned checkpoint."""
    if not (run_dir / "finetune" / "metrics.json").is_file():
        shutil.rmtree(run_dir / "finetune", ignore_errors=True)
        shutil.copytree(source / "finetune", run_dir / "finetune")


def trial_row(trial, full: dict) -> dict:
    return {"id": trial.id, "subnet": str(trial.subnet), "metric": trial.metrics["metric"],
            "error": trial.metrics["error"],
            "encoder_fraction": trial.metrics["encoder_params"] / full["encoder_params"]}


def pick_under(trials, full: dict, budget: float):
    """The arm's pick under a budget: the rule ``encoder_params<=B`` of ``nasprune run``."""
    from nasprune.search.pick import pick

    return pick(trials, f"encoder_params<={budget}", ("error", "encoder_params"), full)


def hypervolume(points: list[tuple[float, float]]) -> float:
    from nasprune.search.pareto import hypervolume as hv

    return hv(points, (REFERENCE, REFERENCE))


def speedups(small, full_model, validation, pad_id: int, rounds: int = PICK_ROUNDS) -> dict:
    """Extracted pick vs unpruned model, same inputs (validation texts around the median
    length), timed round-robin in one process."""
    import numpy as np

    from nasprune.core.models import uses_token_types
    from nasprune.data.encode import collate

    order = np.argsort(validation.lengths(), kind="stable")
    middle = len(order) // 2
    types = uses_token_types(full_model.config)
    out = {}
    for size in (1, 32):
        chosen = order[max(0, middle - size // 2):][:size]
        batch = collate(validation, chosen, pad_id, types)
        batch.pop("labels")
        fns = {name: (lambda m=m, b=batch: m(**b)) for name, m in
               (("full", full_model), ("pick", small))}
        with torch.inference_mode():
            times = interleaved(fns, rounds)
        out[f"b{size}"] = times["full"] / times["pick"]
    return out


# -------------------------------------------------------------------------------- arms


def load_teacher(ensure_teacher, data) -> dict:
    """The fine-tuned teacher as a super-network (no reordering), its tokenizer, pad id
    and the encoded validation set."""
    from transformers import AutoTokenizer

    from nasprune.core.supernet import Supernet

    model_dir = ensure_teacher() / "finetune" / "model"
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    supernet = Supernet.from_pretrained(model_dir)
    supernet.model.eval()
    return {"supernet": supernet, "tokenizer": tokenizer, "pad": tokenizer.pad_token_id or 0,
            "validation": encode(tokenizer, data, "validation")}


def arm_a(task, seed, args, data, ensure_teacher, stages: Stages) -> dict:
    """The tutorial: masking without ordering, its space, random search."""
    store_dir = PLACE.root / run_name(args.model, task, seed) / "a"
    own = [f"a:pick{int(b * 100)}" for b in BUDGETS] + ["a:front-validation"]
    loaded: dict = {}

    def model():
        if not loaded:
            from nasprune.core.cost import CostModel
            from nasprune.search.objective import SubnetEvaluator

            loaded.update(load_teacher(ensure_teacher, data))
            supernet, pad = loaded["supernet"], loaded["pad"]
            loaded.update(search=encode(loaded["tokenizer"], data, "search"),
                          evaluator=lambda enc: SubnetEvaluator(
                              supernet, enc, data.preset, cost=CostModel(supernet),
                              pad_id=pad, masked=True, seed=seed))
        return loaded

    def run():
        from nasprune.core.spaces import make_space
        from nasprune.search.runner import run_search
        from nasprune.search.searchers import make_searcher
        from nasprune.search.store import TrialStore

        m = model()
        space = make_space("small", m["supernet"].shape)
        store_dir.mkdir(parents=True, exist_ok=True)
        with TrialStore(store_dir / "trials.db") as store:
            run_search(space, make_searcher("random", space, seed), m["evaluator"](m["search"]),
                       store, args.trials, ("error", "encoder_params"), progress=True)
        return True

    def summary():
        stages("a:search", run, output=store_dir / "trials.db")
        return trials_of(store_dir / "trials.db")

    needs_store = not stages.has(*own, "a:trials")
    trials, full = points(stages("a:trials", summary,
                                 output=store_dir / "trials.db" if needs_store else None))

    def validate(subnet):
        m = model()
        return m["evaluator"](m["validation"])(subnet)["metric"]

    picks = {}
    for budget in BUDGETS:
        def measure(budget=budget):
            m = model()
            trial = pick_under(trials, full, budget)
            row = trial_row(trial, full)
            row["validation"] = validate(trial.subnet)
            row["search"] = row["metric"]
            small = m["supernet"].extract(trial.subnet).eval()
            row["speedup"] = speedups(small, m["supernet"].model, m["validation"], m["pad"])
            return row
        picks[budget] = stages(f"a:pick{int(budget * 100)}", measure)
    return {"trials": trials, "full": full, "picks": picks, "validate": validate}


def searched_arm(name, cfg: RunConfig, run_dir: Path, data, stages: Stages, recover: str,
                 ensure_upstream, unlabeled=None) -> dict:
    """(b)-(e): the pipeline's own stages in a run directory; ``recover`` per pick. The
    model is loaded (and, if its files are gone, rebuilt) only when a stage still needs it."""
    s = SEARCH_OF[name]  # the search this arm's picks come from
    own = [f"{name}:pick{int(b * 100)}" for b in BUDGETS] + [f"{s}:front-validation"]
    store = run_dir / "search" / "trials.db"
    loaded: dict = {}

    def model():
        if not loaded:
            from transformers import AutoTokenizer

            ensure_upstream()
            tokenizer = AutoTokenizer.from_pretrained(run_dir / "finetune" / "model")
            train_encoded = encode(tokenizer, data, "train", cfg.train.max_length)
            stages(f"{s}:supernet", lambda: bool(
                supernet_stage(cfg, data, run_dir, train_encoded)),
                output=run_dir / "supernet" / "config.json")
            supernet, tokenizer = supernet_stage(cfg, data, run_dir, train_encoded)
            loaded.update(supernet=supernet, tokenizer=tokenizer, train=train_encoded,
                          pad=tokenizer.pad_token_id or 0,
                          validation=encode(tokenizer, data, "validation",
                                            cfg.train.max_length))
        return loaded

    def summary():
        m = model()
        stages(f"{s}:search", lambda: bool(search_stage(
            cfg, data, run_dir, m["supernet"], m["tokenizer"], progress=True)), output=store)
        return trials_of(store)

    needs_store = not stages.has(*own, f"{s}:trials")
    trials, full = points(stages(f"{s}:trials", summary, output=store if needs_store else None))
    arm_cfg = dataclasses.replace(cfg, recover=recover)
    arm_data = dataclasses.replace(data, unlabeled=unlabeled)
    picks = {}
    for budget in BUDGETS:
        def export(budget=budget):
            m = model()
            trial = pick_under(trials, full, budget)
            out = run_dir / f"export-{name}-le{int(budget * 100)}"
            path, report = export_stage(arm_cfg, run_dir, m["supernet"], m["tokenizer"], trial,
                                        arm_data, m["train"], out=out)
            metrics = json.loads((path / "metrics.json").read_text())
            row = trial_row(trial, full)
            metric = data.preset.metric
            row["validation"] = metrics["validation"]["float"][metric]
            row["search"] = report["after"]["search"][metric] if report else row["metric"]
            if report:
                row["before"] = {x: report["before"][x][metric] for x in ("search", "validation")}
                row["recovery_best_epoch"] = report["steps"][-1].get("best_epoch")
                row["recovery_epochs"] = report.get("config", {}).get("epochs")
            small = m["supernet"].extract(trial.subnet).eval()
            row["speedup"] = speedups(small, m["supernet"].model, m["validation"], m["pad"])
            return row
        picks[budget] = stages(f"{name}:pick{int(budget * 100)}", export)

    def validate(subnet):
        m = model()
        with torch.inference_mode(), m["supernet"].use(subnet) as net:
            return evaluate(net, m["validation"], data.preset, pad_id=m["pad"])[
                data.preset.metric]

    return {"trials": trials, "full": full, "picks": picks, "validate": validate,
            "search_stage": s}


