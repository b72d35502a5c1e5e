"""``nasprune run``: fine-tune → super-network → search → Pareto → recover → export, in one
run directory.

Each stage leaves its output in the run directory and is skipped when that output is
already there; the search resumes from its trial store. So a killed run continues where it
stopped, and any stage can be rerun alone by deleting its folder.

Every choice (the best epoch, the search, the pick, recovery stopping) is made on the
*search split* held out from the training data; the validation set is only read to report
the unpruned model and the exported pick (``data.py``).

    RUN/config.json            the RunConfig (repeat a run exactly)
    RUN/finetune/model/        fine-tuned checkpoint (+ metrics.json): the teacher
    RUN/supertrain/model/      super-network distillation from the teacher (--strategy distill)
    RUN/supernet/              importance-reordered checkpoint + order.json + tokenizer
    RUN/search/trials.db       every evaluated sub-network (SQLite)
    RUN/search/pareto.{png,csv}
    RUN/export/                the picked sub-network, physically smaller
    RUN/summary.json
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from nasprune.data import DataConfig, Encoded, TaskData, encode, load_task_data, subset
from nasprune.errors import NaspruneError
from nasprune.models import pick_device
from nasprune.training import (
    TrainConfig,
    iter_batches,
    load_classifier,
    train,
    write_json,
)

FINETUNE_DIR, SUPERTRAIN_DIR, SUPERNET_DIR, EXPORT_DIR = (
    "finetune", "supertrain", "supernet", "export")


@dataclass
class SearchConfig:
    space: str = "layerwise"
    searcher: str = "local"
    trials: int = 100
    objectives: tuple[str, ...] = ("error", "params")
    any_heads: bool = False
    unit_step: int = 64
    low_fidelity: float | None = None
    importance: str = "fisher"
    calibration_examples: int = 512
    eval_batch_size: int = 64
    seed: int = 0
    backend: str = "local"  # local (in process), process (worker processes), ray
    workers: int = 1
    address: str | None = None  # ray: None = a private local Ray, "auto", "ray://host:port"
    cpus_per_worker: float = 1
    gpus_per_worker: float = 0

    def __post_init__(self) -> None:
        from nasprune.search.executors import BACKENDS

        if self.backend not in BACKENDS:
            raise NaspruneError(f"unknown backend {self.backend!r}; choose one of "
                                + ", ".join(BACKENDS))
        if self.workers < 1:
            raise NaspruneError("workers must be at least 1")
        self.objectives = tuple(self.objectives)
        if self.objectives[0] != "error" or len(self.objectives) not in (2, 3):
            raise NaspruneError("objectives: 'error' followed by one or two of "
                                "params, encoder_params, flops, latency")
        if self.trials < 1:
            raise NaspruneError("trials must be at least 1")


@dataclass
class RunConfig:
    model: str = "minilm-l6"
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    pick: str = "encoder_params<=0.5"
    export_formats: tuple[str, ...] = ("hf",)
    quantize: str | None = None
    recover: str = "distill"  # none, least-squares, distill, both (see recovery.py)
    recover_epochs: float = 3.0
    force: bool = False  # export even when the sanity guard fires

    def __post_init__(self) -> None:
        """Options used after the search are checked now, not after an hour of search."""
        from nasprune.recovery import METHODS, RecoveryConfig
        from nasprune.training import needs_teacher

        if self.recover not in METHODS:
            raise NaspruneError(f"unknown recovery {self.recover!r}; choose one of "
                                f"{', '.join(METHODS)}")
        RecoveryConfig(method=self.recover, epochs=self.recover_epochs)
        self.budget()
        needs_teacher(self.train.strategy)  # an unknown strategy is refused here

    def budget(self) -> float | None:
        """The pick's encoder-parameter fraction when the rule is ``encoder_params<=x``
        (super-network distillation samples around it); checks the rule's syntax."""
        from nasprune.search.pareto import KNOWN_METRICS, parse_rule

        rule = self.pick.strip().lstrip("#")
        if rule.lower() in ("largest", "smallest") or rule.isdigit():
            return None
        metric, op, threshold = parse_rule(self.pick, dict.fromkeys(KNOWN_METRICS, 1.0))
        return threshold if metric == "encoder_params" and op in ("<=", "<") else None

    def recovery(self):
        from nasprune.recovery import RecoveryConfig

        return RecoveryConfig(method=self.recover, epochs=self.recover_epochs,
                              seed=self.train.seed)

    def to_dict(self) -> dict:
        return asdict(self)


def config_of_run(run_dir: str | Path) -> RunConfig:
    """The configuration a run directory was made with (``config.json``)."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise NaspruneError(f"{run_dir} is not a run directory (no config.json); "
                            "start one with: nasprune run --until finetune ...")
    saved = json.loads(path.read_text())
    data = DataConfig(**{**saved["data"], "text_columns": tuple(saved["data"]["text_columns"])
                         if saved["data"].get("text_columns") else None})
    return RunConfig(model=saved["model"], data=data, train=TrainConfig(**saved["train"]),
                     search=SearchConfig(**saved["search"]), pick=saved["pick"],
                     export_formats=tuple(saved["export_formats"]), quantize=saved["quantize"],
                     recover=saved.get("recover", "none"),
                     recover_epochs=saved.get("recover_epochs", 3.0),
                     force=saved.get("force", False))


# --------------------------------------------------------------------------- stages


def finetune_stage(cfg: RunConfig, data: TaskData, run_dir: Path) -> dict:
    """The fine-tuned checkpoint (the teacher); reused when ``finetune/metrics.json`` exists.

    A strategy that needs a teacher (``distill``) runs later, in the super-network stage:
    this stage then fine-tunes with the standard strategy."""
    from dataclasses import replace

    from nasprune.training import needs_teacher

    out = run_dir / FINETUNE_DIR
    done = out / "metrics.json"
    if done.is_file() and (out / "model").is_dir():
        return json.loads(done.read_text())
    train_cfg = cfg.train
    if needs_teacher(train_cfg.strategy):
        train_cfg = replace(train_cfg, strategy="standard", strategy_options={})
    model, tokenizer = load_classifier(cfg.model, data.preset)
    result = train(model, tokenizer, data, train_cfg, out)
    result["model"] = cfg.model
    write_json(done, result)
    return result


def sanity_check(cfg: RunConfig, data: TaskData, run_dir: Path, tokenizer) -> None:
    """Refuse to go on with a fine-tuned model that learned nothing (unless ``force``)."""
    from nasprune.training import predict, trivial_reason

    if cfg.force:
        return
    from transformers import AutoModelForSequenceClassification

    split = data.selection_split
    encoded = encode(tokenizer, data, split, cfg.train.max_length)
    model = AutoModelForSequenceClassification.from_pretrained(run_dir / FINETUNE_DIR / "model")
    logits = predict(model.to(pick_device(cfg.train.device)), encoded,
                     cfg.search.eval_batch_size, pad_id=tokenizer.pad_token_id or 0)
    reason = trivial_reason(data.preset, logits, encoded.labels)
    if reason:
        raise NaspruneError(
            f"the fine-tuned model learned nothing on the {split} split: {reason}; train "
            "longer or on more data (--epochs, --max-train-examples), or pass --force")


def reorder_on_calibration(supernet, train_encoded: Encoded, examples: int, pad_id: int = 0, *,
                           seed: int = 0, method: str = "fisher") -> dict:
    """Importance-reorder ``supernet`` on a fixed subset of the training split: the one
    place the search's calibration set is drawn, for the pipeline and the benchmarks."""
    calibration = subset(train_encoded, examples, seed)
    return supernet.reorder_by_importance(iter_batches(calibration, 32, supernet.model, pad_id),
                                          method=method)


def supernet_stage(cfg: RunConfig, data: TaskData, run_dir: Path, train_encoded: Encoded):
    """The importance-reordered super-network; reused when ``supernet/`` exists."""
    from transformers import AutoTokenizer

    from nasprune.supernet import Supernet
    from nasprune.training import needs_teacher

    out = run_dir / SUPERNET_DIR
    device = pick_device(cfg.train.device)
    if (out / "config.json").is_file():
        supernet = Supernet.from_pretrained(out)
        tokenizer = AutoTokenizer.from_pretrained(out)
    else:
        source = run_dir / FINETUNE_DIR / "model"
        if needs_teacher(cfg.train.strategy):
            source = supertrain_stage(cfg, data, run_dir)
        supernet = Supernet.from_pretrained(source)
        tokenizer = AutoTokenizer.from_pretrained(source)
        if supernet.order is None:  # super-network training already reordered it
            supernet.model.to(device)
            reorder_on_calibration(supernet, train_encoded, cfg.search.calibration_examples,
                                   tokenizer.pad_token_id or 0, seed=cfg.data.seed,
                                   method=cfg.search.importance)
        tmp = out.with_name(out.name + ".tmp")  # written whole, then renamed
        shutil.rmtree(tmp, ignore_errors=True)
        supernet.save(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, out)
    supernet.model.to(device).eval()
    return supernet, tokenizer


def supertrain_stage(cfg: RunConfig, data: TaskData, run_dir: Path) -> Path:
    """Super-network distillation from the fine-tuned teacher (a strategy with
    ``needs_teacher``); returns the trained checkpoint, reused when it exists."""
    from dataclasses import replace

    out = run_dir / SUPERTRAIN_DIR
    if (out / "metrics.json").is_file() and (out / "model").is_dir():
        return out / "model"
    s = cfg.search
    options = {"space": s.space, "unit_step": s.unit_step, "any_heads": s.any_heads,
               "importance": s.importance, "calibration_examples": s.calibration_examples,
               "budget": cfg.budget(), **cfg.train.strategy_options}
    epochs = float(options.pop("epochs", 1.0))
    train_cfg = replace(cfg.train, epochs=epochs, strategy_options={**options, "epochs": epochs})
    model, tokenizer = load_classifier(str(run_dir / FINETUNE_DIR / "model"), data.preset)
    train(model, tokenizer, data, train_cfg, out)
    return out / "model"


def search_stage(cfg: RunConfig, data: TaskData, run_dir: Path, supernet, tokenizer,
                 progress: bool = True):
    """Run or resume the search; finished candidates are looked up, never re-evaluated."""
    from nasprune.cost import CostModel
    from nasprune.search.objective import SubnetEvaluator
    from nasprune.search.runner import run_search
    from nasprune.search.searchers import make_searcher
    from nasprune.search.store import TrialStore
    from nasprune.subnet import make_space

    s = cfg.search
    space = make_space(s.space, supernet.shape, any_heads=s.any_heads, unit_step=s.unit_step)
    searcher = make_searcher(s.searcher, space, s.seed, n_objectives=len(s.objectives))
    choose_on = encode(tokenizer, data, data.selection_split, cfg.train.max_length)
    evaluator = SubnetEvaluator(
        supernet, choose_on, data.preset, cost=CostModel(supernet, cfg.train.max_length),
        batch_size=s.eval_batch_size, pad_id=tokenizer.pad_token_id or 0,
        latency="latency" in s.objectives, seed=s.seed)
    executor = None
    if s.backend != "local":  # workers rebuild the evaluator from its spec, once each
        from nasprune.search.executors import make_executor

        executor = make_executor(s.backend, evaluator, workers=s.workers, address=s.address,
                                 cpus_per_worker=s.cpus_per_worker,
                                 gpus_per_worker=s.gpus_per_worker)
    try:
        with TrialStore.for_run(run_dir) as store:
            store.set_meta("split", data.selection_split)
            return run_search(space, searcher, evaluator, store, s.trials, s.objectives,
                              executor=executor, progress=progress,
                              low_fidelity=s.low_fidelity)
    finally:
        if executor is not None:
            executor.close()


def export_stage(cfg: RunConfig, run_dir: Path, supernet, tokenizer, trial, data: TaskData,
                 train_encoded: Encoded, out: Path | None = None) -> tuple[Path, dict | None]:
    """The picked sub-network as a deployable directory (``out``, default ``RUN/export``);
    kept when it already holds the pick.

    With ``cfg.recover`` the extracted pick is first trained on the teacher's outputs (or
    corrected by least squares), stopping on the search split; its metrics are reported
    before and after on the search split and the validation set.
    """
    from nasprune.export import MANIFEST, SUBNET_FILE, export_model

    out = Path(out) if out is not None else run_dir / EXPORT_DIR
    if (out / MANIFEST).is_file() and (out / SUBNET_FILE).is_file():
        stored = json.loads((out / SUBNET_FILE).read_text())
        if [list(layer) for layer in stored.get("layers", [])] == [
                list(layer) for layer in trial.subnet.layers]:
            recovery = out / "recovery.json"
            return out, json.loads(recovery.read_text()) if recovery.is_file() else None
    validation = encode(tokenizer, data, "validation", cfg.train.max_length)
    small, report = None, None
    if cfg.recover != "none":
        from nasprune.recovery import recover

        search = encode(tokenizer, data, data.selection_split, cfg.train.max_length)
        unlabeled = (encode(tokenizer, data, "unlabeled", cfg.train.max_length)
                     if data.unlabeled is not None else None)
        teacher = _teacher(run_dir, supernet)
        small = supernet.extract(trial.subnet)
        report = recover(small, teacher, train_encoded, search=search, validation=validation,
                         preset=data.preset, config=cfg.recovery(),
                         pad_id=tokenizer.pad_token_id or 0, subnet=trial.subnet,
                         unlabeled=unlabeled, progress=cfg.train.progress).to_dict()
    path = export_model(
        supernet, trial.subnet, out, tokenizer=tokenizer, metrics=dict(trial.metrics),
        source_model=cfg.model, formats=cfg.export_formats, quantize=cfg.quantize,
        validation=(validation, data.preset), small=small)
    if report is not None:
        write_json(path / "recovery.json", report)
    return path, report


def _teacher(run_dir: Path, supernet):
    """The fixed teacher: the fine-tuned model itself when the super-network was not
    trained further (same function, other order), else the fine-tuned checkpoint."""
    if not (run_dir / SUPERTRAIN_DIR).is_dir():
        return supernet.model
    from transformers import AutoModelForSequenceClassification

    teacher = AutoModelForSequenceClassification.from_pretrained(run_dir / FINETUNE_DIR / "model")
    return teacher.to(next(supernet.model.parameters()).device).eval()


STAGES = ("finetune", "search", "export")


def _check_search(trials, force: bool) -> None:
    """A search whose best error is the smallest sub-network's found nothing to keep."""
    if force or len(trials) < 2:
        return
    smallest = min(trials, key=lambda t: t.metrics["encoder_params"])
    best = min(t.metrics["error"] for t in trials)
    if best >= smallest.metrics["error"]:
        raise NaspruneError(
            f"no sub-network beats the smallest one ({smallest.subnet}, error "
            f"{smallest.metrics['error']:.4f}): the fine-tuned model learned nothing usable; "
            "train longer or on more data, or pass --force")


def run(cfg: RunConfig, run_dir: str | Path, progress: bool = True,
        until: str = "export") -> dict:
    """The stages up to ``until`` (finetune, search or export); returns the run summary."""
    if until not in STAGES:
        raise NaspruneError(f"unknown stage {until!r}; choose one of {', '.join(STAGES)}")
    from nasprune.report import pareto_summary
    from nasprune.search.pareto import pick

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    saved = run_dir / "config.json"
    if saved.is_file():
        previous = json.loads(saved.read_text())
        if previous.get("model") != cfg.model or previous.get("data") != json.loads(
                json.dumps(cfg.data.to_dict())):
            raise NaspruneError(
                f"{run_dir} holds a run of another model or data set; use a new --run-dir")
    write_json(saved, cfg.to_dict())
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    started = time.perf_counter()
    timings: dict[str, float] = {}

    data = load_task_data(cfg.data)
    t = time.perf_counter()
    finetuned = finetune_stage(cfg, data, run_dir)
    timings["finetune"] = time.perf_counter() - t
    metric = data.preset.metric
    split = data.selection_split
    record: dict = {"task": data.preset.name, "metric": metric, "split": split,
                    "finetuned": finetuned["best"],
                    "unpruned": {split: finetuned["best"].get(split, {}).get(metric),
                                 "validation": finetuned["best"][metric]},
                    "seconds": timings}
    if until == "finetune":
        write_json(run_dir / "summary.json", record)
        return record

    t = time.perf_counter()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(run_dir / FINETUNE_DIR / "model")
    sanity_check(cfg, data, run_dir, tokenizer)
    train_encoded = encode(tokenizer, data, "train", cfg.train.max_length)
    supernet, tokenizer = supernet_stage(cfg, data, run_dir, train_encoded)
    timings["supernet"] = time.perf_counter() - t

    t = time.perf_counter()
    result = search_stage(cfg, data, run_dir, supernet, tokenizer, progress)
    timings["search"] = time.perf_counter() - t

    summary = pareto_summary(run_dir, cfg.search.objectives)
    finished = [x for x in summary.trials if x.is_full_fidelity]
    _check_search(finished, cfg.force)
    chosen = pick(finished, cfg.pick, summary.objectives, summary.full)
    full = summary.full
    record.update({
        "trials": len(summary.trials),
        "evaluated_now": result.evaluated,
        "hypervolume": summary.hypervolume,
        "front_size": len(summary.front),
        "pick_rule": cfg.pick,
        "pick": {"id": chosen.id, "subnet": json.loads(chosen.subnet.to_json()),
                 "text": str(chosen.subnet), "split": split, **chosen.metrics,
                 "params_fraction": chosen.metrics["params"] / full["params"],
                 "encoder_params_fraction":
                     chosen.metrics["encoder_params"] / full["encoder_params"],
                 "flops_fraction": chosen.metrics["flops"] / full["flops"]},
        "full": full,
        "pareto_png": str(summary.png),
        "searcher": cfg.search.searcher,
        "space": cfg.search.space,
    })
    if until == "export":
        t = time.perf_counter()
        path, recovery = export_stage(cfg, run_dir, supernet, tokenizer, chosen, data,
                                      train_encoded)
        record["export_dir"] = str(path)
        exported = json.loads((path / "metrics.json").read_text())
        record["exported"] = {"validation": exported["validation"]["float"][metric],
                              split: chosen.metrics["metric"]}
        if recovery is not None:
            record["recovery"] = {
                "method": cfg.recover,
                **{f"{when}_{name}": recovery[when][name][metric]
                   for when in ("before", "after") for name in (split, "validation")}}
            record["exported"][split] = recovery["after"][split][metric]
        timings["export"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - started
    write_json(run_dir / "summary.json", record)
    return record
