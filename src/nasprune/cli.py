"""The ``nasprune`` command: one Typer app, one subcommand per stage plus ``run``.

Commands only parse options into the library's config objects (``nasprune.config``) and
call one function. Choices are read from the registries, so ``--help`` lists them and a
wrong one is refused before any work starts; user mistakes (``NaspruneError``, or a bad
option) become one red line and exit code 2.
"""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from nasprune import choices
from nasprune.core.subnet import SPACES
from nasprune.data.tasks import PRESETS
from nasprune.deploy.export.manifest import LAYOUTS
from nasprune.errors import NaspruneError
from nasprune.rundir import ORDER
from nasprune.search.executors import BACKENDS
from nasprune.search.searchers import SEARCHERS

app = typer.Typer(
    help="Prune fine-tuned transformer encoders with multi-objective architecture search.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
console = Console(stderr=True)
#: -q / -v of the root command.
VERBOSITY = {"level": 0}


def _choice(name: str, values) -> type[enum.Enum]:
    """An enum of a registry's names: --help lists them, shells complete them."""
    return enum.Enum(name, {v: v for v in values}, type=str)


Task = _choice("Task", PRESETS)
Strategy = _choice("Strategy", choices.STRATEGIES)
Space = _choice("Space", SPACES)
Searcher = _choice("Searcher", SEARCHERS)
Importance = _choice("Importance", choices.IMPORTANCE)
Recovery = _choice("Recovery", choices.RECOVERY)
Quantize = _choice("Quantize", choices.QUANTIZE)
Backend = _choice("Backend", BACKENDS)
Until = _choice("Until", ("finetune", "search", "export"))
Stage = _choice("Stage", ORDER)
Layout = _choice("Layout", ("auto", *LAYOUTS))


def _value(choice):
    return choice.value if isinstance(choice, enum.Enum) else choice


def opt(help: str, panel: str, *names: str, **kwargs) -> typer.Option:
    """An option in a help panel; brackets in the help are shown, not read as markup."""
    return typer.Option(*names, help=help.replace("[", "\\["), rich_help_panel=panel, **kwargs)


DATA, MODEL, TRAIN, SEARCH, PICK, RES = ("Data", "Model", "Training", "Search",
                                         "Pick, recovery, export", "Resources")

# ---- options shared by several commands ----

TaskOpt = Annotated[Task | None, opt("GLUE task preset.", DATA)]
DataDirOpt = Annotated[Path | None, opt("Folder holding <task>/train.* and <task>/validation.*.", DATA)]
TrainFileOpt = Annotated[Path | None, opt("Custom training file (TSV/CSV/JSONL/Parquet).", DATA)]
ValFileOpt = Annotated[Path | None, opt("Custom validation file.", DATA)]
TextColsOpt = Annotated[str | None, opt("Text column(s), comma-separated: 'a' or 'a,b'.", DATA)]
LabelColOpt = Annotated[str | None, opt("Label column (default 'label').", DATA)]
RegressionOpt = Annotated[bool, opt("Custom data: the label is a number.", DATA)]
MaxTrainOpt = Annotated[int | None, opt("Use a fixed random subset of the training set.", DATA)]
MaxEvalOpt = Annotated[int | None, opt("Use a fixed random subset of the validation set.", DATA)]
ModelOpt = Annotated[str, opt("Hub id, local directory, or 'minilm-l6' (packaged, offline).", MODEL)]
EpochsOpt = Annotated[float, opt("Passes over the training set.", TRAIN)]
BatchOpt = Annotated[int, opt("Examples per step.", TRAIN)]
LrOpt = Annotated[float, opt("Peak AdamW learning rate.", TRAIN, "--lr")]
AccumOpt = Annotated[int, opt("Steps to accumulate before an update.", TRAIN)]
WarmupOpt = Annotated[float, opt("Fraction of updates with rising lr.", TRAIN)]
MaxLenOpt = Annotated[int, opt("Tokens kept per example.", TRAIN)]
SeedOpt = Annotated[int, opt("Seed for data order, subsets, init and search.", TRAIN)]
DeviceOpt = Annotated[str, opt("auto, cpu, cuda, cuda:1, mps.", RES)]
ThreadsOpt = Annotated[int | None, opt("CPU threads for torch.", RES)]
StrategyOpt = Annotated[Strategy, opt("standard; distill (standard, then super-network distillation from the fine-tuned model as a fixed teacher); or a super-network strategy during fine-tuning (sandwich, sandwich-kd, random-linear).", TRAIN)]
SpaceOpt = Annotated[Space, opt("small (the tutorial's L/H/U), layer (drop layers), layerwise (heads and units per layer).", SEARCH)]
SearcherOpt = Annotated[Searcher, opt("random is the tutorial's; local fills the front's widest gap.", SEARCH)]
TrialsOpt = Annotated[int, opt("Sub-networks to evaluate (the full and smallest first).", SEARCH)]
ObjectivesOpt = Annotated[str, opt("error plus one or two of " + ", ".join(choices.COSTS) + ".", SEARCH)]
AnyHeadsOpt = Annotated[bool, opt("small space: any head count 1..H, not only halvings.", SEARCH)]
UnitStepOpt = Annotated[int, opt("FFN units move in steps of this size.", SEARCH)]
LowFidOpt = Annotated[float | None, opt("Multi-fidelity: first evaluate on this fraction of the search split.", SEARCH)]
ImportanceOpt = Annotated[Importance, opt("Importance scores for reordering heads and units.", SEARCH)]
CalibOpt = Annotated[int, opt("Training examples used to score importance.", SEARCH)]


def _defaults():
    from nasprune.config import RunConfig

    run = RunConfig()
    return run, run.data, run.train, run.search


_R, _D, _T, _S = _defaults()  # the CLI's defaults are the config dataclasses' defaults
_OBJECTIVES = ",".join(_S.objectives)

SearchSplitOpt = Annotated[float, opt("Held out of the training set for every choice (best epoch, search, pick, recovery): a fraction (kept within 200..2000 examples) or a count.", DATA)]
DropInvalidOpt = Annotated[bool, opt("Drop rows with an empty text or a missing label (reported) instead of refusing the file.", DATA)]
SearchFileOpt = Annotated[Path | None, opt("Your own search split (same columns as the training file) instead of holding one out.", DATA)]


def data_config(task, data_dir, train_file, validation_file, text_columns, label_column,
                regression, max_train_examples, max_eval_examples, seed=0, search_split=0.1,
                search_file=None, distill_file=None, drop_invalid=False):
    from nasprune.data.tasks import DataConfig

    return DataConfig(
        task=_value(task), data_dir=str(data_dir) if data_dir else None,
        train_file=str(train_file) if train_file else None,
        validation_file=str(validation_file) if validation_file else None,
        text_columns=tuple(c.strip() for c in text_columns.split(",")) if text_columns else None,
        label_column=label_column, regression=regression,
        max_train_examples=max_train_examples, max_eval_examples=max_eval_examples, seed=seed,
        search_split=search_split, search_file=str(search_file) if search_file else None,
        distill_file=str(distill_file) if distill_file else None, drop_invalid=drop_invalid)


def quiet_libraries() -> None:
    """Library chatter off, unless -v asked for it."""
    if VERBOSITY["level"] > 0:
        return
    from nasprune.core.models import quiet_libraries as quiet  # torch loads only when needed

    quiet()


def progress_enabled() -> bool:
    return VERBOSITY["level"] >= 0


def _version(value: bool) -> None:
    if value:
        from nasprune import __version__

        typer.echo(f"nasprune {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Also show the libraries' own messages.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars; errors and results only.")] = False,
) -> None:
    """Prune fine-tuned transformer encoders with multi-objective architecture search.

    Every run is one folder: nasprune run --task sst2 --data-dir DATA --run-dir runs/sst2
    """
    VERBOSITY["level"] = -1 if quiet else 1 if verbose else 0


# ---- commands are added below, one block per stage ----


@app.command(epilog="Example: nasprune finetune --task rte --data-dir ../shared/data/glue "
             "--epochs 5 --out runs/rte-finetune")
def finetune(
    model: ModelOpt = _R.model,
    task: TaskOpt = None,
    data_dir: DataDirOpt = None,
    train_file: TrainFileOpt = None,
    validation_file: ValFileOpt = None,
    text_columns: TextColsOpt = None,
    label_column: LabelColOpt = None,
    regression: RegressionOpt = False,
    max_train_examples: MaxTrainOpt = None,
    max_eval_examples: MaxEvalOpt = None,
    search_split: SearchSplitOpt = _D.search_split,
    search_file: SearchFileOpt = None,
    drop_invalid: DropInvalidOpt = False,
    out: Annotated[Path, opt("Folder for the checkpoint (OUT/model) and metrics.json.", MODEL)] = Path("runs/finetune"),
    epochs: EpochsOpt = _T.epochs,
    batch_size: BatchOpt = _T.batch_size,
    learning_rate: LrOpt = _T.learning_rate,
    grad_accum: AccumOpt = _T.grad_accum,
    warmup_ratio: WarmupOpt = _T.warmup_ratio,
    max_length: MaxLenOpt = _T.max_length,
    seed: SeedOpt = _T.seed,
    device: DeviceOpt = _T.device,
    threads: ThreadsOpt = None,
    strategy: StrategyOpt = _T.strategy,
) -> None:
    """Fine-tune an encoder on a classification or regression task (the best epoch is
    chosen on the search split; validation is reported)."""
    from nasprune.config import TrainConfig

    if _value(strategy) == "distill":
        raise NaspruneError("--strategy distill needs the fine-tuned model as its teacher: "
                            "use nasprune run --strategy distill")
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                      grad_accum=grad_accum, warmup_ratio=warmup_ratio, max_length=max_length,
                      seed=seed, device=device, threads=threads, strategy=_value(strategy),
                      progress=progress_enabled())
    data_cfg = data_config(task, data_dir, train_file, validation_file, text_columns,
                           label_column, regression, max_train_examples, max_eval_examples,
                           seed, search_split, search_file, drop_invalid=drop_invalid)
    from nasprune.core.models import check_model
    from nasprune.data.tasks import load_task_data

    data = load_task_data(data_cfg)
    check_model(model)
    quiet_libraries()
    from nasprune.train.loop import finetune as run_finetune

    result = run_finetune(model, data, cfg, out)
    best, metric = result["best"], result["metric"]
    chosen = f"chosen on the {result['selected_on']} split"
    if result["selected_on"] != "validation":
        chosen += f" ({best[result['selected_on']][metric]:.4f})"
    console.print(f"[green]best[/] epoch {best['epoch']} ({chosen}): validation {metric} "
                  f"{best[metric]:.4f} -> {escape(str(out / 'model'))}")


# ---- run / search: the pipeline (nasprune.pipeline) ----


def _objectives(text: str) -> tuple[str, ...]:
    return tuple(o.strip() for o in text.split(",") if o.strip())


# where candidates are evaluated (nasprune.search.executors; docs/distributed.md)
BackendOpt = Annotated[Backend, opt("Where candidates are evaluated: local (in process), process (worker processes), ray (Ray actors; needs nasprune[ray]).", RES)]
AddressOpt = Annotated[str | None, opt("ray: cluster to join, 'auto' or 'ray://head:10001' (default: a private local Ray).", RES)]
WorkersOpt = Annotated[int, opt("process/ray: parallel workers, each holding the super-network once.", RES)]
CpusPerWorkerOpt = Annotated[float, opt("process/ray: CPUs (and torch threads) per worker.", RES)]
GpusPerWorkerOpt = Annotated[float, opt("ray: GPUs per worker (fractions share a GPU).", RES)]


def _executor_options(backend, address, workers, cpus_per_worker, gpus_per_worker) -> dict:
    return {"backend": _value(backend), "address": address, "workers": workers,
            "cpus_per_worker": cpus_per_worker, "gpus_per_worker": gpus_per_worker}


def _print_summary(record: dict, run_dir: Path) -> None:
    """Two tables: the run's facts, then the metric of the unpruned model and of the pick on
    the search split (where choices were made) and the validation set (reported only)."""
    from rich.table import Table

    out = Console()
    metric, split = record["metric"], record.get("split", "validation")
    table = Table(title=f"nasprune run: {record['task']} ({run_dir})", show_header=False)
    if "pick" in record:
        p = record["pick"]
        table.add_row("sub-networks evaluated", f"{record['trials']} "
                      f"({record['evaluated_now']} in this call), on the {split} split")
        table.add_row("Pareto front / hypervolume",
                      f"{record['front_size']} / {record['hypervolume']:.4f}")
        table.add_row(f"pick ({record['pick_rule']})", f"trial {p['id']}: {p.get('text', '')}")
        table.add_row("pick size", f"{p['params_fraction']:.1%} of parameters, "
                      f"{p['encoder_params_fraction']:.1%} of encoder, "
                      f"{p['flops_fraction']:.1%} of FLOPs")
        table.add_row("Pareto plot", record["pareto_png"])
    if "export_dir" in record:
        table.add_row("exported model", record["export_dir"])
    if "report" in record:
        table.add_row("report", record["report"])
    table.add_row("time", ", ".join(f"{k} {v:.0f}s" for k, v in record["seconds"].items()))
    out.print(table)

    def cell(value) -> str:
        return "-" if value is None else f"{value:.4f}"

    scores = Table(title=f"{metric}: chosen on the {split} split, reported on validation")
    scores.add_column("model")
    columns = [split, "validation"] if split != "validation" else ["validation"]
    for name in columns:
        scores.add_column(f"{name} split" if name != "validation" else "validation set",
                          justify="right")
    unpruned = record.get("unpruned", {"validation": record["finetuned"][metric]})
    scores.add_row("unpruned (fine-tuned)", *[cell(unpruned.get(c)) for c in columns])
    if "pick" in record:
        scores.add_row("pick, as searched", *[cell(record["pick"]["metric"] if c == split
                                                   else None) for c in columns])
    if "recovery" in record:
        r = record["recovery"]
        scores.add_row("pick before recovery", *[cell(r.get(f"before_{c}")) for c in columns])
    if "exported" in record:
        label = f"pick exported ({record['recovery']['method']})" if "recovery" in record \
            else "pick exported"
        scores.add_row(label, *[cell(record["exported"].get(c)) for c in columns])
    out.print(scores)


PickOpt = Annotated[str, opt("largest, smallest, a trial id, or a budget: 'encoder_params<=0.5', 'params<=0.5', 'flops<=0.3', 'latency<=12ms', 'error<=0.1' (fractions are of the full model).", PICK)]
RedoOpt = Annotated[Stage | None, opt("Recompute this stage and every later one (the run directory's other stages are kept).", PICK)]
ForceOpt = Annotated[bool, opt("Go on even when the fine-tuned model or the search found nothing better than a trivial predictor.", PICK)]


def _load_config(ctx: typer.Context, value: Path | None):
    """``--config FILE`` (TOML, YAML, or a run's config.json): its keys become the
    defaults, so flags on the command line override them."""
    if value is None:
        return value
    from nasprune.config_file import read_config_file

    allowed = {p.name for p in ctx.command.params} - {"config"}
    try:
        ctx.default_map = {**(ctx.default_map or {}), **read_config_file(value, allowed)}
    except NaspruneError as exc:
        _fail(str(exc))
    return value


ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", callback=_load_config, is_eager=True, rich_help_panel=DATA,
    help="A run described in a file: TOML or YAML with the flags' names as keys, or a "
         "run's config.json to repeat it. Flags given on the command line win.")]


@app.command(epilog="Example: nasprune run --task sst2 --data-dir ../shared/data/glue "
             "--max-train-examples 4000 --epochs 2 --run-dir runs/sst2   (or: nasprune run "
             "--config examples/demo.toml)")
def run(
    config: ConfigOpt = None,
    model: ModelOpt = _R.model,
    task: TaskOpt = None,
    data_dir: DataDirOpt = None,
    train_file: TrainFileOpt = None,
    validation_file: ValFileOpt = None,
    text_columns: TextColsOpt = None,
    label_column: LabelColOpt = None,
    regression: RegressionOpt = False,
    max_train_examples: MaxTrainOpt = None,
    max_eval_examples: MaxEvalOpt = None,
    search_split: SearchSplitOpt = _D.search_split,
    search_file: SearchFileOpt = None,
    drop_invalid: DropInvalidOpt = False,
    distill_file: Annotated[Path | None, opt("Unlabeled in-domain texts (the text columns, no label) that the teacher labels for --recover distill.", DATA)] = None,
    run_dir: Annotated[Path, opt("Everything goes here; finished stages are reused.", MODEL)] = Path("runs/run"),
    epochs: EpochsOpt = _T.epochs,
    batch_size: BatchOpt = _T.batch_size,
    learning_rate: LrOpt = _T.learning_rate,
    grad_accum: AccumOpt = _T.grad_accum,
    warmup_ratio: WarmupOpt = _T.warmup_ratio,
    max_length: MaxLenOpt = _T.max_length,
    seed: SeedOpt = _T.seed,
    strategy: StrategyOpt = _T.strategy,
    supernet_epochs: Annotated[float, opt("--strategy distill: passes over the training set.", TRAIN)] = 1.0,
    space: SpaceOpt = _S.space,
    searcher: SearcherOpt = _S.searcher,
    trials: TrialsOpt = _S.trials,
    objectives: ObjectivesOpt = _OBJECTIVES,
    any_heads: AnyHeadsOpt = _S.any_heads,
    unit_step: UnitStepOpt = _S.unit_step,
    low_fidelity: LowFidOpt = None,
    importance: ImportanceOpt = _S.importance,
    calibration_examples: CalibOpt = _S.calibration_examples,
    pick: PickOpt = _R.pick,
    export_format: Annotated[str, opt("Export format(s), comma-separated: " + ", ".join(choices.FORMATS) + ".", PICK, "--format")] = "hf",
    quantize: Annotated[Quantize | None, opt("Also write a dynamically quantized copy.", PICK)] = None,
    recover: Annotated[Recovery, opt("Before export, train the pick on the fine-tuned model's outputs (distill), refit it by least squares, both, or none.", PICK)] = _R.recover,
    recover_epochs: Annotated[float, opt("--recover distill: passes over the training texts; the best epoch on the search split is kept.", PICK)] = _R.recover_epochs,
    force: ForceOpt = False,
    until: Annotated[Until, opt("Stop after this stage.", PICK)] = "export",
    redo: RedoOpt = None,
    device: DeviceOpt = _T.device,
    threads: ThreadsOpt = None,
    backend: BackendOpt = _S.backend,
    address: AddressOpt = None,
    workers: WorkersOpt = _S.workers,
    cpus_per_worker: CpusPerWorkerOpt = _S.cpus_per_worker,
    gpus_per_worker: GpusPerWorkerOpt = _S.gpus_per_worker,
) -> None:
    """Fine-tune → reorder → search → Pareto → recover → export, in one resumable run
    directory. Everything is checked before anything is written."""
    from nasprune.config import RunConfig, SearchConfig, TrainConfig

    strategy, space = _value(strategy), _value(space)
    cfg = RunConfig(
        model=model,
        data=data_config(task, data_dir, train_file, validation_file, text_columns,
                         label_column, regression, max_train_examples, max_eval_examples, seed,
                         search_split, search_file, distill_file, drop_invalid),
        train=TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                          grad_accum=grad_accum, warmup_ratio=warmup_ratio,
                          max_length=max_length, seed=seed, device=device, threads=threads,
                          strategy=strategy, strategy_options=_strategy_options(
                              strategy, space, unit_step, any_heads, supernet_epochs),
                          progress=progress_enabled()),
        search=SearchConfig(space=space, searcher=_value(searcher), trials=trials,
                            objectives=_objectives(objectives), any_heads=any_heads,
                            unit_step=unit_step, low_fidelity=low_fidelity,
                            importance=_value(importance),
                            calibration_examples=calibration_examples,
                            seed=seed, **_executor_options(backend, address, workers,
                                                           cpus_per_worker, gpus_per_worker)),
        pick=pick, export_formats=_objectives(export_format), quantize=_value(quantize),
        recover=_value(recover), recover_epochs=recover_epochs, force=force)
    quiet_libraries()
    from nasprune.pipeline import run as run_pipeline

    record = run_pipeline(cfg, run_dir, until=_value(until), redo=_value(redo),
                          progress=progress_enabled())
    _print_summary(record, run_dir)


def _strategy_options(strategy: str, space: str, unit_step: int, any_heads: bool,
                      epochs: float) -> dict:
    """Super-network strategies sample from the space the search will use."""
    if strategy == "standard":
        return {}
    options = {"space": space, "unit_step": unit_step, "any_heads": any_heads}
    return {**options, "epochs": epochs} if strategy == "distill" else options


@app.command(epilog="Example: nasprune search runs/rte --searcher nsga2 --trials 200")
def search(
    run_dir: Annotated[Path, typer.Argument(help="A run directory with a fine-tuned model (nasprune run --until finetune).")],
    space: Annotated[Space | None, opt("Search space (default: the run's).", SEARCH)] = None,
    searcher: Annotated[Searcher | None, opt("Searcher (default: the run's).", SEARCH)] = None,
    trials: Annotated[int | None, opt("Sub-networks in the store when done (default: the run's; more resume the search).", SEARCH)] = None,
    objectives: Annotated[str | None, opt("error plus one or two of " + ", ".join(choices.COSTS) + " (default: the run's).", SEARCH)] = None,
    any_heads: Annotated[bool | None, opt("small space: any head count 1..H.", SEARCH)] = None,
    unit_step: Annotated[int | None, opt("FFN units move in steps of this size.", SEARCH)] = None,
    low_fidelity: LowFidOpt = None,
    importance: Annotated[Importance | None, opt("Importance scores for reordering.", SEARCH)] = None,
    calibration_examples: Annotated[int | None, opt("Training examples used to score importance.", SEARCH)] = None,
    seed: Annotated[int | None, opt("Seed of the search.", SEARCH)] = None,
    pick: Annotated[str | None, opt("Budget rule shown in the summary (default: the run's).", PICK)] = None,
    redo: RedoOpt = None,
    force: ForceOpt = False,
    backend: Annotated[Backend | None, opt("local, process or ray (default: the run's).", RES)] = None,
    address: AddressOpt = None,
    workers: Annotated[int | None, opt("process/ray: parallel workers.", RES)] = None,
    cpus_per_worker: Annotated[float | None, opt("process/ray: CPUs per worker.", RES)] = None,
    gpus_per_worker: Annotated[float | None, opt("ray: GPUs per worker.", RES)] = None,
) -> None:
    """Search the sub-networks of a run (resumes a stopped search). Options not given keep
    the run's values."""
    from dataclasses import replace

    from nasprune.config import config_of_run
    from nasprune.rundir import RunDir

    cfg = config_of_run(run_dir)
    writer = RunDir(run_dir).lock()  # a second writer is refused before the slow imports
    given = {"space": _value(space), "searcher": _value(searcher), "trials": trials,
             "objectives": _objectives(objectives) if objectives else None,
             "any_heads": any_heads, "unit_step": unit_step, "low_fidelity": low_fidelity,
             "importance": _value(importance), "calibration_examples": calibration_examples,
             "seed": seed, "backend": _value(backend), "address": address, "workers": workers,
             "cpus_per_worker": cpus_per_worker, "gpus_per_worker": gpus_per_worker}
    cfg.search = replace(cfg.search, **{k: v for k, v in given.items() if v is not None})
    cfg.pick = pick or cfg.pick
    cfg.force = cfg.force or force
    cfg.budget()
    quiet_libraries()
    from nasprune.pipeline import run as run_pipeline

    try:
        record = run_pipeline(cfg, run_dir, until="search", redo=_value(redo),
                              progress=progress_enabled())
    finally:
        writer.release()
    _print_summary(record, run_dir)


# ---- pareto: the front of a search (nasprune.report.plots) ----


@app.command(epilog="Example: nasprune pareto runs/sst2 --pick 'encoder_params<=0.3'")
def pareto(
    run_dir: Annotated[Path, typer.Argument(help="Run directory holding search/trials.db.")],
    objectives: Annotated[str | None, typer.Option(help="Comma-separated, e.g. error,params or error,params,latency (default: the search's).")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for pareto.png and pareto.csv (default RUN_DIR/search).")] = None,
    pick: Annotated[str | None, typer.Option(help="Highlight the pick: largest, smallest, 'params<=0.5', 'latency<=12ms', 'error<=0.1' or a trial id.")] = None,
) -> None:
    """Print the Pareto front of a search; write pareto.png and pareto.csv."""
    from rich.console import Console as StdoutConsole

    from nasprune.report.plots import front_table, pareto_summary
    from nasprune.search.pareto import pick as pick_trial

    names = tuple(o.strip() for o in objectives.split(",") if o.strip()) if objectives else None
    summary = pareto_summary(run_dir, names, out, **({"pick": pick} if pick else {}))
    chosen = None
    if pick:
        chosen = pick_trial([t for t in summary.trials if t.is_full_fidelity], pick,
                            summary.objectives, summary.full)
    StdoutConsole().print(front_table(summary, chosen))
    if chosen is not None:
        console.print(f"[green]pick[/] {pick!r} -> trial {chosen.id}: {chosen.subnet}")
    console.print(f"wrote {escape(str(summary.png))} and {escape(str(summary.csv))}")


# ---- export: a picked sub-network as a deployable model (nasprune.deploy.export.writer) ----


@app.command(epilog="Example: nasprune export runs/sst2 --pick 'latency<=12ms' --out pruned/ "
             "--format onnx --quantize int8")
def export(
    run_dir: Annotated[Path, typer.Argument(help="Run directory holding supernet/ and search/trials.db.")],
    pick: PickOpt = _R.pick,
    out: Annotated[Path | None, opt("Export directory (default RUN_DIR/export).", PICK)] = None,
    format: Annotated[str, opt("hf (safetensors + config), or onnx (hf files plus model.onnx).", PICK, "--format")] = "hf",
    quantize: Annotated[Quantize | None, opt("int8: dynamic quantization of the linear layers (ONNX Runtime with --format onnx, else PyTorch at load).", PICK)] = None,
    layout: Annotated[Layout, opt("auto: a plain transformers model when the sub-network allows it, else the remote-code class; or force vanilla / remote.", PICK)] = "auto",
    validate: Annotated[bool, opt("Re-measure the metric of each backend on the run's validation set.", PICK)] = True,
) -> None:
    """Write the picked sub-network as a smaller model: safetensors, config, tokenizer,
    model card, checksums."""
    from nasprune.config import RunConfig

    RunConfig(pick=pick, export_formats=(format,), quantize=_value(quantize))  # checks them
    from nasprune.rundir import RunDir

    quiet_libraries()
    from nasprune.deploy.export.card import run_card_facts
    from nasprune.deploy.export.writer import export_from_run

    with RunDir(run_dir) if (Path(run_dir) / "config.json").is_file() else _nothing():
        path = export_from_run(run_dir, pick, out, formats=(format,), quantize=_value(quantize),
                               validate=validate, progress=lambda m: console.print(escape(m)),
                               layout=_value(layout), card=run_card_facts(run_dir))
    console.print(f"[green]exported[/] {escape(str(path))}")
    typer.echo((path / "metrics.json").read_text().strip())


def _nothing():
    from contextlib import nullcontext

    return nullcontext()


# ---- serve / loadtest: HTTP endpoint with dynamic batching, stepped-users load test ----


@app.command()
def serve(
    model_dir: Annotated[Path, typer.Argument(help="Hugging Face classifier directory or an export.")],
    host: Annotated[str, typer.Option(help="Address to bind; loopback unless you mean it.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port, 0..65535 (0 = any free port).")] = 8000,
    max_batch_size: Annotated[int, typer.Option(help="Most texts per model call.")] = 32,
    max_wait_ms: Annotated[float, typer.Option(help="Longest wait for a batch to fill.")] = 5.0,
    max_queue: Annotated[int, typer.Option(help="Waiting requests before answering 503.")] = 256,
    token: Annotated[str | None, typer.Option(envvar="NASPRUNE_TOKEN", show_envvar=True, help="Bearer token required on /v1/* and /metrics.")] = None,
    max_items: Annotated[int, typer.Option(help="Texts (or pairs) per request.")] = 64,
    max_text_chars: Annotated[int, typer.Option(help="Characters per text.")] = 20_000,
    max_body_bytes: Annotated[int, typer.Option(help="Request body limit (413 beyond).")] = 1_000_000,
    max_length: Annotated[int, typer.Option(help="Tokens kept per input.")] = 128,
    chunk_size: Annotated[int, typer.Option(help="A batch runs length-sorted in chunks of this many texts.")] = 8,
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch.")] = None,
    log_level: Annotated[str, typer.Option(help="critical, error, warning, info, debug, trace.")] = "info",
    request_timeout: Annotated[float, typer.Option(help="Seconds a request may wait for and spend in the model once its body is in; 503 beyond (a request still queued then is never computed).")] = 10.0,
    header_timeout: Annotated[float, typer.Option(help="Seconds for the request line and headers, from connect or the previous response; the connection is closed beyond.")] = 10.0,
    body_timeout: Annotated[float, typer.Option(help="Seconds for the whole request body; 408 beyond.")] = 30.0,
    keep_alive: Annotated[float, typer.Option(help="Seconds an idle kept-alive connection stays open.")] = 5.0,
    drain_timeout: Annotated[float, typer.Option(help="On SIGINT/SIGTERM, seconds running requests get to finish.")] = 5.0,
    max_connections: Annotated[int, typer.Option(help="Open connections; more are answered 503 and closed.")] = 512,
    max_header_bytes: Annotated[int, typer.Option(help="Request line and headers limit (431 beyond).")] = 32_768,
) -> None:
    """Serve a classifier over HTTP: POST /v1/predict, /healthz, /readyz, /v1/model, /metrics."""
    from rich.markup import escape as plain

    from nasprune.deploy.serve.app import ServeConfig
    from nasprune.deploy.serve.app import serve as run_server

    try:  # every option is checked (and the port bound) before the model loads
        cfg = ServeConfig(host=host, port=port, max_batch_size=max_batch_size,
                          max_wait_ms=max_wait_ms, max_queue=max_queue, token=token,
                          max_items=max_items, max_text_chars=max_text_chars,
                          max_body_bytes=max_body_bytes, max_length=max_length,
                          chunk_size=chunk_size, torch_threads=threads, log_level=log_level,
                          request_timeout_s=request_timeout, header_timeout_s=header_timeout,
                          body_timeout_s=body_timeout, keep_alive_s=keep_alive,
                          drain_timeout_s=drain_timeout, max_connections=max_connections,
                          max_header_bytes=max_header_bytes)

        def announce(url: str) -> None:  # once the port is bound and the model loaded
            if host not in ("127.0.0.1", "localhost", "::1") and not cfg.token:
                console.print(f"[yellow]warning[/]: serving on {plain(host)} without a token",
                              emoji=False)
            console.print(f"serving {plain(str(model_dir))} on {plain(url)}", emoji=False,
                          highlight=False)

        run_server(model_dir, cfg, announce=announce, before_load=quiet_libraries)
        console.print("stopped")  # a signal uvicorn handled without re-raising it
    except NaspruneError as exc:  # printed here: user text must not become markup or emoji
        console.print(f"[bold red]error:[/] {plain(str(exc))}", emoji=False, highlight=False,
                      soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:  # uvicorn re-raises the SIGINT it handled
        console.print("stopped")


@app.command()
def loadtest(
    target: Annotated[list[str], typer.Option(help="NAME=URL of a nasprune server; repeat for several.")],
    texts_from: Annotated[Path, typer.Option(help="Validation file (TSV/CSV/JSONL) to draw inputs from.")],
    users: Annotated[str, typer.Option(help="User steps: 1,8,16,32 or START:STEP:MAX.")] = "1,8,16,32",
    step_time: Annotated[float, typer.Option(help="Seconds each user count is held.")] = 10.0,
    text_column: Annotated[str | None, typer.Option(help="Text column (default: sentence, text, sentence1, ...).")] = None,
    pair_column: Annotated[str | None, typer.Option(help="Second text column for pair tasks.")] = None,
    slo_ms: Annotated[float, typer.Option(help="p95 latency objective; defines saturation.")] = 200.0,
    out: Annotated[Path, typer.Option(help="Folder for steps.csv, summary.json, loadtest.png.")] = Path("loadtest"),
    think_ms: Annotated[float, typer.Option(help="Pause between a user's requests.")] = 0.0,
    token: Annotated[str | None, typer.Option(envvar="NASPRUNE_TOKEN", show_envvar=True, help="Bearer token for the targets.")] = None,
    max_texts: Annotated[int, typer.Option(help="Inputs sampled from the file.")] = 2000,
    max_failure_rate: Annotated[float, typer.Option(help="Fail (exit 1, naming the status codes) when a step's failure rate exceeds this.")] = 0.5,
) -> None:
    """Load-test one or more endpoints with rising users; CSV, plot and saturation points."""
    from rich.console import Console as StdoutConsole
    from rich.markup import escape as plain
    from rich.table import Table

    from nasprune.deploy.loadtest.runner import (
        LoadTestConfig,
        describe_statuses,
        failure_report,
        parse_targets,
        parse_users,
        run_loadtest,
    )

    def say(text: str, *, stdout: bool = False) -> None:  # user text is never markup/emoji
        (StdoutConsole() if stdout else console).print(text, emoji=False, highlight=False,
                                                       soft_wrap=True)

    try:
        cfg = LoadTestConfig(targets=parse_targets(target), users=parse_users(users),
                             step_time=step_time, texts_from=texts_from,
                             text_column=text_column, pair_column=pair_column, slo_ms=slo_ms,
                             out_dir=out, think_ms=think_ms, token=token, max_texts=max_texts,
                             max_failure_rate=max_failure_rate)
        total = len(cfg.users) * cfg.step_time * len(cfg.targets)
        say(f"load-testing {plain(', '.join(cfg.targets))}: users {cfg.users}, "
            f"{cfg.step_time:g} s per step (~{total:.0f} s)")
        results = run_loadtest(cfg)
    except NaspruneError as exc:
        say(f"[bold red]error:[/] {plain(str(exc))}")
        raise typer.Exit(2) from None
    table = Table("target", "users", "req/s", "p50 ms", "p95 ms", "p99 ms", "failures",
                  "failed with")
    for result in results:
        for s in result.steps:
            table.add_row(plain(result.name), str(s.users), f"{s.ok_rps:.1f}",
                          f"{s.p50_ms:.0f}", f"{s.p95_ms:.0f}", f"{s.p99_ms:.0f}",
                          f"{s.failure_rate:.1%}",
                          describe_statuses(s.failure_statuses) if s.failures else "")
    StdoutConsole().print(table)
    failed = failure_report(results, cfg.max_failure_rate)
    for result in results:
        if any(line.startswith(f"{result.name}: ") for line in failed):
            continue  # no saturation point: the step failed
        where = (f"saturates at {result.saturation_users} users"
                 if result.saturation_users is not None
                 else f"not saturated up to {max(cfg.users)} users")
        say(f"{plain(result.name)}: {where} (p95 > {cfg.slo_ms:g} ms or > 1 % failures); "
            f"peak {result.max_ok_rps:.1f} req/s", stdout=True)
    reports = ", ".join(str(out / f"locust-{r.name}.html") for r in results)
    say(f"wrote {plain(str(out / 'steps.csv'))}, {plain(str(out / 'summary.json'))}, "
        f"{plain(str(out / 'loadtest.png'))} and Locust's report{'s' if len(results) > 1 else ''}"
        f" {plain(reports)}")
    if failed:
        for line in failed:
            say(f"[bold red]failed:[/] {plain(line)}")
        raise typer.Exit(1)


# ---- report / to-optuna: a run for people and for Optuna's tools (report_html, optuna_export) ----


@app.command(epilog="Example: nasprune report runs/sst2 --out sst2-report.html")
def report(
    run_dir: Annotated[Path, typer.Argument(help="Run directory (the --run-dir of nasprune run).")],
    out: Annotated[Path | None, typer.Option(help="HTML file to write (default RUN_DIR/report.html).")] = None,
) -> None:
    """Write one self-contained HTML report of a run: configuration, fine-tuning curve, interactive Pareto front, the pick's shape, the export's before/after table, load tests."""
    from nasprune.report.html import write_report

    path = write_report(run_dir, out)
    print(path)


@app.command("to-optuna", epilog="Example: nasprune to-optuna runs/sst2 sqlite:///sst2-optuna.db && optuna-dashboard sqlite:///sst2-optuna.db")
def to_optuna(
    run_dir: Annotated[Path, typer.Argument(help="Run directory holding search/trials.db.")],
    storage: Annotated[str, typer.Argument(help="Optuna storage URL (sqlite:///study.db, postgresql://...) or a file path.")],
    study: Annotated[str | None, typer.Option(help="Study name (default nasprune-<run folder name>).")] = None,
    replace: Annotated[bool, typer.Option(help="Overwrite a study of that name.")] = False,
) -> None:
    """Copy a run's trials into an Optuna RDB storage as a multi-objective study, for optuna-dashboard."""
    from nasprune.search.optuna_export import export_to_optuna

    done = export_to_optuna(run_dir, storage, study, replace=replace)
    console.print(f"wrote {done.n_trials} trials ({done.n_complete} complete; minimise "
                  f"{', '.join(done.objectives)}) to study {escape(done.study_name)!r} in "
                  f"{escape(done.storage)}", highlight=False, emoji=False, soft_wrap=True)
    print(f"optuna-dashboard {done.storage}")


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True,
                  emoji=False)
    sys.exit(code)


def main() -> None:
    """The console entry point: one line and exit code 2 for any user mistake."""
    try:
        result = app(standalone_mode=False)
    except NaspruneError as exc:
        _fail(str(exc))
    except typer.Exit as exc:
        sys.exit(getattr(exc, "exit_code", 0))
    except typer.Abort:
        _fail("aborted", 130)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: finished work is saved in the run directory")
        sys.exit(130)
    except typer.TyperException as exc:  # a bad option or argument (the parser's error)
        if not hasattr(exc, "format_message"):
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":  # the help is already printed
            sys.exit(0)
        command = getattr(getattr(exc, "ctx", None), "command_path", "nasprune")
        _fail(f"{exc.format_message()} (see: {command} --help)", getattr(exc, "exit_code", 2))
    sys.exit(result if isinstance(result, int) else 0)
