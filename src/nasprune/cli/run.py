"""``nasprune run`` (every stage in one run directory) and ``nasprune search`` (search a
run again, or further)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nasprune.cli.common import (
    _D,
    _OBJECTIVES,
    _R,
    _S,
    _T,
    DATA,
    MAX_FFN,
    MODEL,
    PICK,
    RES,
    SEARCH,
    TRAIN,
    AccumOpt,
    AnyHeadsOpt,
    Backend,
    BatchOpt,
    CalibOpt,
    DataDirOpt,
    DeviceOpt,
    DropInvalidOpt,
    EpochsOpt,
    ForceOpt,
    Importance,
    ImportanceOpt,
    InDir,
    InFile,
    LabelColOpt,
    LowFidOpt,
    LrOpt,
    MaxEvalOpt,
    MaxLenOpt,
    MaxTrainOpt,
    ModelOpt,
    Number,
    ObjectivesOpt,
    OutDir,
    PickOpt,
    PrecisionOpt,
    Quantize,
    Recovery,
    RedoOpt,
    RegressionOpt,
    Searcher,
    SearcherOpt,
    SearchFileOpt,
    SearchSplitOpt,
    SeedOpt,
    Space,
    SpaceOpt,
    StrategyOpt,
    TaskOpt,
    TextColsOpt,
    ThreadsOpt,
    TrainFileOpt,
    TrialsOpt,
    UnitStepOpt,
    Until,
    ValFileOpt,
    WarmupOpt,
    _value,
    app,
    check_pick,
    fail,
    items,
    opt,
    progress_enabled,
    quiet_libraries,
    run_config,
)
from nasprune.cli.summary import print_summary
from nasprune.config import SUPERNET_EPOCHS
from nasprune.core import COSTS
from nasprune.deploy.export.backends import FORMATS
from nasprune.errors import NaspruneError
from nasprune.search.executors import EXECUTORS
from nasprune.train.recovery import RECOVERY_METHODS
from nasprune.train.strategies import needs_teacher

# ---- run / search: the pipeline (nasprune.pipeline) ----


# where candidates are evaluated (nasprune.search.executors; docs/distributed.md)
BackendOpt = Annotated[Backend, opt("Where candidates are evaluated: " + EXECUTORS.describe(), RES)]
AddressOpt = Annotated[str | None, opt("ray: cluster to join, 'auto' or 'ray://head:10001' (default: a private local Ray).", RES)]
WORKERS, CPUS, GPUS = Number(True, 1, 1024), Number(False, 0, 1024, low_open=True), Number(False, 0, 64)
WorkersOpt = Annotated[int, opt("process/ray: parallel workers, each holding the super-network once.", RES, parser=WORKERS)]
CpusPerWorkerOpt = Annotated[float, opt("process/ray: CPUs (and torch threads) per worker.", RES, parser=CPUS)]
GpusPerWorkerOpt = Annotated[float, opt("ray: GPUs per worker (fractions share a GPU).", RES, parser=GPUS)]


def config_keys(command) -> dict[str, str]:
    """Every key a config file may use -> its parameter: the flag without dashes
    (``lr``, ``format``) and the parameter name (``learning_rate``, ``export_format``)."""
    return {key: p.name for p in command.params if p.name != "config"
            for key in [p.name] + [o.lstrip("-").replace("-", "_") for o in p.opts]}


def _load_config(ctx: typer.Context, value: Path | None):
    """``--config FILE`` (TOML, YAML, or a run's config.json): its keys become the
    defaults, so flags on the command line override them."""
    if value is None:
        return value
    from nasprune.cli.config_file import read_config_file

    names = config_keys(ctx.command)
    try:
        ctx.default_map = {**(ctx.default_map or {}), **read_config_file(value, names)}
    except NaspruneError as exc:
        fail(str(exc))
    except UnicodeDecodeError as exc:
        fail(f"cannot read {value}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at "
             f"offset {exc.start}); save it as UTF-8")
    return value


ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", callback=_load_config, is_eager=True, rich_help_panel=DATA, parser=InFile(),
    help="A run described in a file: TOML or YAML with the flags' names as keys, or a "
         "run's config.json to repeat it. Flags given on the command line win.")]


@app.command(epilog="Example: nasprune run --task sst2 --data-dir ../shared/data/glue "
             "--max-train-examples 4000 --epochs 2 --run-dir runs/sst2   (or: nasprune run "
             "--config examples/demo.toml)")
def run(
    ctx: typer.Context,
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
    distill_file: Annotated[Path | None, opt("Unlabeled in-domain texts (the text columns, no label) that the teacher labels for --recover distill.", DATA, parser=InFile())] = None,
    run_dir: Annotated[Path, opt("Everything goes here; finished stages are reused.", MODEL, parser=OutDir())] = Path("runs/run"),
    epochs: EpochsOpt = _T.epochs,
    batch_size: BatchOpt = _T.batch_size,
    learning_rate: LrOpt = _T.learning_rate,
    grad_accum: AccumOpt = _T.grad_accum,
    warmup_ratio: WarmupOpt = _T.warmup_ratio,
    max_length: MaxLenOpt = _T.max_length,
    seed: SeedOpt = _T.seed,
    strategy: StrategyOpt = _T.strategy,
    supernet_epochs: Annotated[float, opt("--strategy distill: passes over the training set.", TRAIN, parser=Number(False, 0, low_open=True))] = SUPERNET_EPOCHS,
    supernet_batch_size: Annotated[int | None, opt("--strategy distill: examples per step (default: --batch-size); the learning rate scales with it.", TRAIN, parser=Number(True, 1))] = None,
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
    export_format: Annotated[str, opt("Export format(s), comma-separated: " + ", ".join(FORMATS) + ".", PICK, "--format")] = "hf",
    quantize: Annotated[Quantize | None, opt("Also write a dynamically quantized copy.", PICK)] = None,
    recover: Annotated[Recovery, opt("Before export: " + RECOVERY_METHODS.describe(), PICK)] = _R.recover,
    recover_epochs: Annotated[float, opt("--recover distill: passes over the training texts; the best epoch on the search split is kept.", PICK, parser=Number(False, 0))] = _R.recover_epochs,
    recover_scaled: Annotated[bool, opt("--recover distill: --recover-epochs are a half-size pick's; a pick keeping a fraction f of the encoder gets epochs x 0.5 / f (the same compute), at most 3x.", PICK)] = _R.recover_scaled,
    recover_batch_size: Annotated[int, opt("--recover distill: examples per step; the learning rate scales with it (5e-5 at 16).", PICK, parser=Number(True, 1))] = _R.recover_batch_size,
    force: ForceOpt = False,
    until: Annotated[Until, opt("Stop after this stage.", PICK)] = "export",
    redo: RedoOpt = None,
    device: DeviceOpt = _T.device,
    precision: PrecisionOpt = _T.precision,
    threads: ThreadsOpt = None,
    backend: BackendOpt = _S.backend,
    address: AddressOpt = None,
    workers: WorkersOpt = _S.workers,
    cpus_per_worker: CpusPerWorkerOpt = _S.cpus_per_worker,
    gpus_per_worker: GpusPerWorkerOpt = _S.gpus_per_worker,
) -> None:
    """Fine-tune → distil the super-network → search → Pareto → recover → export, in one
    resumable run directory (--strategy standard skips the distillation). Everything is
    checked before anything is written."""
    values = dict(locals())  # each option of the configuration reads its flag's value
    cfg = run_config(values, ctx.command, _strategy_options(_value(strategy), supernet_epochs,
                                                            supernet_batch_size))
    quiet_libraries()
    from nasprune.pipeline import run as run_pipeline

    record = run_pipeline(cfg, run_dir, until=_value(until), redo=_value(redo),
                          progress=progress_enabled())
    print_summary(record, run_dir)


def _strategy_options(strategy: str, epochs: float, batch_size: int | None) -> dict:
    """The options only a flag gives; the rest (the search's space, ...) the configuration
    resolves, for the API alike (``RunConfig.strategy_options``)."""
    if not needs_teacher(strategy):
        return {}
    return {"epochs": epochs, **({"batch_size": batch_size} if batch_size else {})}


@app.command(epilog="Example: nasprune search runs/rte --searcher nsga2 --trials 200")
def search(
    run_dir: Annotated[Path, typer.Argument(help="A run directory with a fine-tuned model (nasprune run --until finetune).", parser=InDir())],
    space: Annotated[Space | None, opt("Search space (default: the run's).", SEARCH)] = None,
    searcher: Annotated[Searcher | None, opt("Searcher (default: the run's).", SEARCH)] = None,
    trials: Annotated[int | None, opt("Sub-networks in the store when done (default: the run's; more resume the search).", SEARCH, parser=Number(True, 1))] = None,
    objectives: Annotated[str | None, opt("error plus one or two of " + ", ".join(COSTS) + " (default: the run's).", SEARCH)] = None,
    any_heads: Annotated[bool | None, opt("small space: any head count 1..H.", SEARCH)] = None,
    unit_step: Annotated[int | None, opt("FFN units move in steps of this size (at most the model's FFN width).", SEARCH, parser=Number(True, 1, MAX_FFN))] = None,
    low_fidelity: LowFidOpt = None,
    importance: Annotated[Importance | None, opt("Importance scores for reordering.", SEARCH)] = None,
    calibration_examples: Annotated[int | None, opt("Training examples used to score importance.", SEARCH, parser=Number(True, 1))] = None,
    seed: Annotated[int | None, opt("Seed of the search.", SEARCH, parser=Number(True, 0, 2**32 - 1))] = None,
    pick: Annotated[str | None, opt("Budget rule shown in the summary (default: the run's).", PICK, callback=check_pick)] = None,
    redo: RedoOpt = None,
    force: ForceOpt = False,
    backend: Annotated[Backend | None, opt("local, process or ray (default: the run's).", RES)] = None,
    address: AddressOpt = None,
    workers: Annotated[int | None, opt("process/ray: parallel workers.", RES, parser=WORKERS)] = None,
    cpus_per_worker: Annotated[float | None, opt("process/ray: CPUs per worker.", RES, parser=CPUS)] = None,
    gpus_per_worker: Annotated[float | None, opt("ray: GPUs per worker.", RES, parser=GPUS)] = None,
) -> None:
    """Search the sub-networks of a run (resumes a stopped search). Options not given keep
    the run's values."""
    from dataclasses import replace

    from nasprune.rundir import RunDir

    cfg = RunDir(run_dir).config()
    writer = RunDir(run_dir).lock()  # a second writer is refused before the slow imports
    given = {"space": _value(space), "searcher": _value(searcher), "trials": trials,
             "objectives": items(objectives) if objectives else None,
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
    print_summary(record, run_dir)
