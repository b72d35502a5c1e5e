"""``nasprune run``: fine-tune -> super-network -> search -> Pareto -> recover -> export, in one
run directory (its layout: ``nasprune.rundir``).

Everything is checked first (``prepare``); then each stage leaves its output in the run
directory and is reused when its fingerprint matches, and the search resumes from its
trial store. So a killed run continues where it stopped.

Every choice (the best epoch, the search, the pick, recovery stopping) is made on the
*search split* held out from the training data; the validation set is only read to report
the unpruned model and the exported pick (``nasprune.data.split``).

This package is the only code that sees every stage: ``stages`` (up to the search) and
``export`` (recovery and export, also for ``nasprune export RUN``).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

from nasprune.config import RunConfig
from nasprune.data.encode import LENGTH_PERCENTILE, chosen_max_length, encode
from nasprune.data.tasks import TaskData, load_task_data
from nasprune.errors import NaspruneError
from nasprune.files import write_json
from nasprune.rundir import EXPORT_DIR, SUPERTRAIN_DIR, RunDir

STAGES = ("finetune", "search", "export")
#: How a maximum length nobody gave was chosen (``data.encode.chosen_max_length``).
CHOSEN_LENGTH = f"{LENGTH_PERCENTILE:g}th percentile of the training texts' lengths"


def absolute(cfg: RunConfig) -> RunConfig:
    """The same configuration with every file path absolute, so a run directory works
    from any folder and can be moved."""

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
    from nasprune.core.models import check_model, pick_device, resolve_model
    from nasprune.rundir.fingerprints import check, fingerprints
    from nasprune.train.strategies import make_strategy

    cfg = absolute(cfg)
    resolve_model(cfg.model)  # a missing model folder, before the data is read
    if cfg.train.device != "auto":  # cuda:3 on a one-GPU machine is refused now
        pick_device(cfg.train.device)
    data = load_task_data(cfg.data)  # with the default device: before torch loads
    check_model(cfg.model)
    make_strategy(cfg.train.strategy, cfg.strategy_options())  # the options it will train with
    if cfg.train.max_length is None:  # chosen once, before the fingerprints that name it
        cfg = replace(cfg, train=replace(cfg.train, max_length=data_max_length(cfg.model, data)))
    wanted = fingerprints(cfg)
    if not run.held:
        run.lock()  # a fresh run directory is made only now, when everything checked out
    check(run, wanted, redo)
    return cfg, data, run, wanted


def data_max_length(model: str, data: TaskData) -> int:
    """The maximum length a run uses when none is given: from the training texts' lengths
    under the model's tokenizer (``data.encode.chosen_max_length``)."""
    from transformers import AutoConfig, AutoTokenizer

    from nasprune.core.models import load_pretrained, positions

    tokenizer = load_pretrained(AutoTokenizer, model)
    limit = positions(load_pretrained(AutoConfig, model), tokenizer)
    return chosen_max_length(tokenizer, data, limit)


def run(cfg: RunConfig, run_dir: str | Path, progress: bool = True,
        until: str = "export", redo: str | None = None) -> dict:
    """The stages up to ``until`` (finetune, search or export); returns the run summary.

    Everything is checked first (``prepare``); only then are ``config.json`` and the log
    written. ``redo`` recomputes that stage and every later one."""
    if until not in STAGES:
        raise NaspruneError(f"unknown stage {until!r}; choose one of {', '.join(STAGES)}")
    chosen = cfg.train.max_length is None
    cfg, data, rundir, wanted = prepare(cfg, run_dir, redo)
    if chosen:
        rundir.log(f"maximum length {cfg.train.max_length} tokens: the {CHOSEN_LENGTH}")
    try:
        return _run(cfg, data, rundir, wanted, progress, until, chosen)
    except BaseException as exc:
        rundir.log(f"stopped: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        raise
    finally:
        rundir.release()


def _run(cfg: RunConfig, data: TaskData, rundir: RunDir, wanted: dict, progress: bool,
         until: str, length_chosen: bool = False) -> dict:
    import torch

    from nasprune.pipeline.export import export_stage
    from nasprune.pipeline.stages import (
        check_search,
        finetune_stage,
        sanity_check,
        search_stage,
        supernet_stage,
    )
    from nasprune.report.front import pareto_summary
    from nasprune.search.pick import pick

    run_dir = rundir.path
    write_json(rundir.config_file, cfg.to_dict())
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
                    "max_length": {"tokens": cfg.train.max_length,
                                   "chosen": CHOSEN_LENGTH if length_chosen else "given"},
                    "seconds": timings}
    if until == "finetune":
        write_json(rundir.summary_file, record)
        return record

    t = time.perf_counter()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(rundir.finetuned)
    sanity_check(cfg, data, run_dir, tokenizer)
    train_encoded = encode(tokenizer, data, "train", cfg.train.max_length)
    supernet, tokenizer = supernet_stage(cfg, data, run_dir, train_encoded)
    finished("supernet", time.perf_counter() - t, SUPERTRAIN_DIR)

    t = time.perf_counter()
    result = search_stage(cfg, data, run_dir, supernet, tokenizer, progress)
    finished("search", time.perf_counter() - t)

    summary = pareto_summary(run_dir, cfg.search.objectives)
    complete = [x for x in summary.trials if x.is_full_fidelity]
    check_search(complete, cfg.force)
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
            kept = next((s for s in reversed(recovery["steps"]) if "best_epoch" in s), None)
            if kept is not None:  # which epoch, and whether it won by one example or less
                record["recovery"].update(best_epoch=kept["best_epoch"],
                                          selection=kept.get("selection"))
        finished("export", time.perf_counter() - t)
    timings["total"] = time.perf_counter() - started
    write_json(rundir.summary_file, record)
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
    write_json(rundir.summary_file, record)
