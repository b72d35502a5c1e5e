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
from pathlib import Path

import torch

from nasprune.config import RunConfig, SearchConfig, TrainConfig, config_of_run
from nasprune.core.models import pick_device
from nasprune.data.tasks import DataConfig, Encoded, TaskData, encode, load_task_data, subset
from nasprune.errors import NaspruneError
from nasprune.train.loop import iter_batches, load_classifier, train, write_json

__all__ = ["RunConfig", "SearchConfig", "TrainConfig", "DataConfig", "config_of_run", "run"]

from nasprune.rundir import EXPORT_DIR, FINETUNE_DIR, SUPERNET_DIR, SUPERTRAIN_DIR, RunDir

# --------------------------------------------------------------------------- stages


def finetune_stage(cfg: RunConfig, data: TaskData, run_dir: Path) -> dict:
    """The fine-tuned checkpoint (the teacher); reused when ``finetune/metrics.json`` exists.

    A strategy that needs a teacher (``distill``) runs later, in the super-network stage:
    this stage then fine-tunes with the standard strategy."""
    from dataclasses import replace

    from nasprune.train.loop import needs_teacher

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
    from nasprune.train.loop import predict, trivial_reason

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

    from nasprune.core.supernet import Supernet
    from nasprune.train.loop import needs_teacher

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
    options = {**_strategy_defaults(cfg, True), **cfg.train.strategy_options}
    epochs = float(options.pop("epochs", 1.0))
    train_cfg = replace(cfg.train, epochs=epochs, strategy_options={**options, "epochs": epochs})
    model, tokenizer = load_classifier(str(run_dir / FINETUNE_DIR / "model"), data.preset)
    train(model, tokenizer, data, train_cfg, out)
    return out / "model"


def search_stage(cfg: RunConfig, data: TaskData, run_dir: Path, supernet, tokenizer,
                 progress: bool = True):
    """Run or resume the search; finished candidates are looked up, never re-evaluated."""
    from nasprune.core.cost import CostModel
    from nasprune.core.subnet import make_space
    from nasprune.search.objective import SubnetEvaluator
    from nasprune.search.runner import run_search
    from nasprune.search.searchers import make_searcher
    from nasprune.search.store import TrialStore

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
                 train_encoded: Encoded, out: Path | None = None,
                 reuse: bool = True) -> tuple[Path, dict | None]:
    """The picked sub-network as a deployable directory (``out``, default ``RUN/export``);
    kept when it already holds the pick.

    With ``cfg.recover`` the extracted pick is first trained on the teacher's outputs (or
    corrected by least squares), stopping on the search split; its metrics are reported
    before and after on the search split and the validation set.
    """
    from nasprune.deploy.export.writer import MANIFEST, SUBNET_FILE, export_model

    out = Path(out) if out is not None else run_dir / EXPORT_DIR
    if reuse and (out / MANIFEST).is_file() and (out / SUBNET_FILE).is_file():
        stored = json.loads((out / SUBNET_FILE).read_text())
        if [list(layer) for layer in stored.get("layers", [])] == [
                list(layer) for layer in trial.subnet.layers]:
            recovery = out / "recovery.json"
            return out, json.loads(recovery.read_text()) if recovery.is_file() else None
    validation = encode(tokenizer, data, "validation", cfg.train.max_length)
    small, report = None, None
    if cfg.recover != "none":
        from nasprune.train.recovery import recover

        search = encode(tokenizer, data, data.selection_split, cfg.train.max_length)
        unlabeled = (encode(tokenizer, data, "unlabeled", cfg.train.max_length)
                     if data.unlabeled is not None else None)
        teacher = _teacher(run_dir, supernet)
        small = supernet.extract(trial.subnet)
        report = recover(small, teacher, train_encoded, search=search, validation=validation,
                         preset=data.preset, config=cfg.recovery(),
                         pad_id=tokenizer.pad_token_id or 0, subnet=trial.subnet,
                         unlabeled=unlabeled, progress=cfg.train.progress).to_dict()
    from nasprune.deploy.export.card import run_card_facts

    path = export_model(
        supernet, trial.subnet, out, tokenizer=tokenizer, metrics=dict(trial.metrics),
        source_model=cfg.model, formats=cfg.export_formats, quantize=cfg.quantize,
        validation=(validation, data.preset), small=small, recovery=report,
        card=run_card_facts(run_dir))
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


def absolute(cfg: RunConfig) -> RunConfig:
    """The same configuration with every file path absolute, so a run directory works
    from any folder and can be moved."""
    from dataclasses import replace

    def full(path):
        return str(Path(path).expanduser().resolve()) if path else path

    d = cfg.data
    data = replace(d, data_dir=full(d.data_dir), train_file=full(d.train_file),
                   validation_file=full(d.validation_file), search_file=full(d.search_file),
                   distill_file=full(d.distill_file))
    model = full(cfg.model) if Path(cfg.model).expanduser().is_dir() else cfg.model
    return replace(cfg, data=data, model=model)


def prepare(cfg: RunConfig, run_dir: str | Path, redo: str | None = None
            ) -> tuple[RunConfig, TaskData, RunDir, dict]:
    """Check everything a run needs before anything is written: the options (strategy
    options included), the model name, the data (files, columns, labels) and, for an
    existing run directory, that its finished stages were made with these options.
    Returns the configuration with absolute paths, the data, the locked run directory
    and the stages' fingerprints."""

    run = RunDir(run_dir)
    if run.path.is_dir():  # an existing run: a second writer is refused before any check
        run.lock()
    try:
        return _prepare(cfg, run, redo)
    except BaseException:
        run.release()
        raise


def _prepare(cfg: RunConfig, run: RunDir, redo: str | None):
    from nasprune.core.models import check_model
    from nasprune.rundir import fingerprints
    from nasprune.train.loop import make_strategy, needs_teacher

    cfg = absolute(cfg)
    teacher_strategy = needs_teacher(cfg.train.strategy)
    options = dict(cfg.train.strategy_options)
    if cfg.train.strategy != "standard":
        options = {**_strategy_defaults(cfg, teacher_strategy), **options}
    check_model(cfg.model)
    make_strategy(cfg.train.strategy, options)
    data = load_task_data(cfg.data)
    wanted = fingerprints(cfg, teacher_strategy)
    if not run.held:
        run.lock()  # a fresh run directory is made only now, when everything checked out
    run.check(wanted, redo)
    return cfg, data, run, wanted


def _strategy_defaults(cfg: RunConfig, teacher_strategy: bool) -> dict:
    """Super-network strategies sample the space that the search will use."""
    s = cfg.search
    out = {"space": s.space, "unit_step": s.unit_step, "any_heads": s.any_heads}
    if teacher_strategy:
        out.update(importance=s.importance, calibration_examples=s.calibration_examples,
                   budget=cfg.budget())
    return out


def run(cfg: RunConfig, run_dir: str | Path, progress: bool = True,
        until: str = "export", redo: str | None = None) -> dict:
    """The stages up to ``until`` (finetune, search or export); returns the run summary.

    Everything is checked first (``prepare``); only then are ``config.json`` and the log
    written. ``redo`` recomputes that stage and every later one."""
    if until not in STAGES:
        raise NaspruneError(f"unknown stage {until!r}; choose one of {', '.join(STAGES)}")
    cfg, data, rundir, wanted = prepare(cfg, run_dir, redo)
    try:
        return _run(cfg, data, rundir, wanted, progress, until)
    except BaseException as exc:
        rundir.log(f"stopped: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        raise
    finally:
        rundir.release()


def _run(cfg: RunConfig, data: TaskData, rundir: RunDir, wanted: dict, progress: bool,
         until: str) -> dict:
    from nasprune.report.plots import pareto_summary
    from nasprune.search.pareto import pick

    run_dir = rundir.path
    write_json(run_dir / "config.json", cfg.to_dict())
    rundir.log(f"run until {until}: {json.dumps(cfg.to_dict(), default=str)}")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def finished(stage: str, seconds: float, *stages: str) -> None:
        for name in (stage, *stages):
            if name in wanted:
                rundir.record(name, wanted[name])
        timings[stage] = seconds
        rundir.log(f"stage {stage}: {seconds:.1f} s")

    t = time.perf_counter()
    finetuned = finetune_stage(cfg, data, run_dir)
    finished("finetune", time.perf_counter() - t)
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
    finished("supernet", time.perf_counter() - t, SUPERTRAIN_DIR)

    t = time.perf_counter()
    result = search_stage(cfg, data, run_dir, supernet, tokenizer, progress)
    finished("search", time.perf_counter() - t)

    summary = pareto_summary(run_dir, cfg.search.objectives)
    complete = [x for x in summary.trials if x.is_full_fidelity]
    _check_search(complete, cfg.force)
    chosen = pick(complete, cfg.pick, summary.objectives, summary.full)
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
                                      train_encoded, reuse=rundir.matches(EXPORT_DIR,
                                                                          wanted[EXPORT_DIR]))
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
        finished("export", time.perf_counter() - t)
    timings["total"] = time.perf_counter() - started
    write_json(run_dir / "summary.json", record)
    if until != "finetune":
        _write_report(rundir, record)
    rundir.log(f"done in {timings['total']:.1f} s")
    return record


def _write_report(rundir: RunDir, record: dict) -> None:
    """RUN/report.html from what the run directory now holds (one self-contained file)."""
    from nasprune.report.html import write_report

    try:
        record["report"] = str(write_report(rundir.path))
    except NaspruneError as exc:  # e.g. plotly missing: the run itself is complete
        rundir.log(f"no report: {exc}")
        return
    write_json(rundir.path / "summary.json", record)
