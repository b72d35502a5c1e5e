"""The ``nasprune`` command: one Typer app, one subcommand per stage plus ``run``.

Commands only parse options into the library's config objects and call one function;
user mistakes (``NaspruneError``) become one red line and exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from nasprune.errors import NaspruneError

app = typer.Typer(
    help="Prune fine-tuned transformer encoders with multi-objective architecture search.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
console = Console(stderr=True)


# ---- options shared by several commands ----

TaskOpt = Annotated[str | None, typer.Option(help="GLUE task preset: rte, sst2, mrpc, cola, stsb, qnli, qqp, mnli, wnli.")]
DataDirOpt = Annotated[Path | None, typer.Option(help="Folder holding <task>/train.* and <task>/validation.*.")]
TrainFileOpt = Annotated[Path | None, typer.Option(help="Custom training file (TSV/CSV/JSONL/Parquet).")]
ValFileOpt = Annotated[Path | None, typer.Option(help="Custom validation file.")]
TextColsOpt = Annotated[str | None, typer.Option(help="Text column(s), comma-separated: 'a' or 'a,b'.")]
LabelColOpt = Annotated[str | None, typer.Option(help="Label column (default 'label').")]
RegressionOpt = Annotated[bool, typer.Option(help="Custom data: the label is a number.")]
MaxTrainOpt = Annotated[int | None, typer.Option(help="Use a fixed random subset of the training set.")]
MaxEvalOpt = Annotated[int | None, typer.Option(help="Use a fixed random subset of the validation set.")]
ModelOpt = Annotated[str, typer.Option(help="Hub id, local directory, or 'minilm-l6' (packaged, offline).")]
EpochsOpt = Annotated[float, typer.Option(help="Passes over the training set.")]
BatchOpt = Annotated[int, typer.Option(help="Examples per step.")]
LrOpt = Annotated[float, typer.Option("--lr", help="Peak AdamW learning rate.")]
AccumOpt = Annotated[int, typer.Option(help="Steps to accumulate before an update.")]
WarmupOpt = Annotated[float, typer.Option(help="Fraction of updates with rising lr.")]
MaxLenOpt = Annotated[int, typer.Option(help="Tokens kept per example.")]
SeedOpt = Annotated[int, typer.Option(help="Seed for data order, subsets, init and search.")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, mps.")]
ThreadsOpt = Annotated[int | None, typer.Option(help="CPU threads for torch.")]
StrategyOpt = Annotated[str, typer.Option(help="Fine-tuning strategy: standard; distill (standard, then super-network distillation from the fine-tuned model as a fixed teacher); or a super-network strategy during fine-tuning (sandwich, sandwich-kd, random-linear).")]
SpaceOpt = Annotated[str, typer.Option(help="Search space: small (the tutorial's L/H/U), layer, layerwise.")]
SearcherOpt = Annotated[str, typer.Option(help="random (the tutorial's), local, nsga2, optuna-tpe, optuna-nsga2.")]
TrialsOpt = Annotated[int, typer.Option(help="Sub-networks to evaluate (the full and smallest first).")]
ObjectivesOpt = Annotated[str, typer.Option(help="error plus one or two of params, encoder_params, flops, latency.")]
AnyHeadsOpt = Annotated[bool, typer.Option(help="small space: any head count 1..H, not only halvings.")]
UnitStepOpt = Annotated[int, typer.Option(help="FFN units move in steps of this size.")]
LowFidOpt = Annotated[float | None, typer.Option(help="Multi-fidelity: first evaluate on this fraction of the validation set.")]
ImportanceOpt = Annotated[str, typer.Option(help="Importance scores for reordering: fisher, taylor, magnitude.")]
CalibOpt = Annotated[int, typer.Option(help="Training examples used to score importance.")]


SearchSplitOpt = Annotated[float, typer.Option(help="Held out of the training set for every choice (best epoch, search, pick, recovery): a fraction (kept within 200..2000 examples) or a count.")]
SearchFileOpt = Annotated[Path | None, typer.Option(help="Your own search split (same columns as the training file) instead of holding one out.")]


def data_config(task, data_dir, train_file, validation_file, text_columns, label_column,
                regression, max_train_examples, max_eval_examples, seed=0, search_split=0.1,
                search_file=None, distill_file=None):
    from nasprune.data import DataConfig

    return DataConfig(
        task=task, data_dir=str(data_dir) if data_dir else None,
        train_file=str(train_file) if train_file else None,
        validation_file=str(validation_file) if validation_file else None,
        text_columns=tuple(c.strip() for c in text_columns.split(",")) if text_columns else None,
        label_column=label_column, regression=regression,
        max_train_examples=max_train_examples, max_eval_examples=max_eval_examples, seed=seed,
        search_split=search_split, search_file=str(search_file) if search_file else None,
        distill_file=str(distill_file) if distill_file else None)


def quiet_libraries() -> None:
    from nasprune.models import quiet_libraries as quiet  # torch loads only when needed

    quiet()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    """Prune fine-tuned transformer encoders with multi-objective architecture search."""
    if version:
        from nasprune import __version__

        typer.echo(__version__)
        raise typer.Exit()


# ---- commands are added below, one block per stage ----


@app.command()
def finetune(
    model: ModelOpt = "minilm-l6",
    task: TaskOpt = None,
    data_dir: DataDirOpt = None,
    train_file: TrainFileOpt = None,
    validation_file: ValFileOpt = None,
    text_columns: TextColsOpt = None,
    label_column: LabelColOpt = None,
    regression: RegressionOpt = False,
    max_train_examples: MaxTrainOpt = None,
    max_eval_examples: MaxEvalOpt = None,
    search_split: SearchSplitOpt = 0.1,
    search_file: SearchFileOpt = None,
    out: Annotated[Path, typer.Option(help="Folder for the checkpoint (OUT/model) and metrics.json.")] = Path("runs/finetune"),
    epochs: EpochsOpt = 3.0,
    batch_size: BatchOpt = 16,
    learning_rate: LrOpt = 5e-5,
    grad_accum: AccumOpt = 1,
    warmup_ratio: WarmupOpt = 0.1,
    max_length: MaxLenOpt = 128,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    strategy: StrategyOpt = "standard",
) -> None:
    """Fine-tune an encoder on a classification or regression task."""
    from nasprune.data import load_task_data
    from nasprune.training import TrainConfig
    from nasprune.training import finetune as run_finetune

    quiet_libraries()
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                      grad_accum=grad_accum, warmup_ratio=warmup_ratio, max_length=max_length,
                      seed=seed, device=device, threads=threads, strategy=strategy)
    data = load_task_data(data_config(task, data_dir, train_file, validation_file, text_columns,
                                      label_column, regression, max_train_examples,
                                      max_eval_examples, seed, search_split, search_file))
    result = run_finetune(model, data, cfg, out)
    best, metric = result["best"], result["metric"]
    chosen = f"chosen on the {result['selected_on']} split"
    if result["selected_on"] != "validation":
        chosen += f" ({best[result['selected_on']][metric]:.4f})"
    console.print(f"[green]best[/] epoch {best['epoch']} ({chosen}): validation {metric} "
                  f"{best[metric]:.4f} -> {out / 'model'}")


# ---- run / search: the pipeline (nasprune.pipeline) ----


def _objectives(text: str) -> tuple[str, ...]:
    return tuple(o.strip() for o in text.split(",") if o.strip())


# where candidates are evaluated (nasprune.search.executors; docs/distributed.md)
BackendOpt = Annotated[str, typer.Option(help="Where candidates are evaluated: local (in process), process (worker processes), ray (Ray actors; nasprune[ray]).")]
AddressOpt = Annotated[str | None, typer.Option(help="ray: cluster to join, 'auto' or 'ray://head:10001' (default: a private local Ray).")]
WorkersOpt = Annotated[int, typer.Option(help="process/ray: parallel workers, each holding the super-network once.")]
CpusPerWorkerOpt = Annotated[float, typer.Option(help="process/ray: CPUs (and torch threads) per worker.")]
GpusPerWorkerOpt = Annotated[float, typer.Option(help="ray: GPUs per worker (fractions share a GPU).")]


def _executor_options(backend, address, workers, cpus_per_worker, gpus_per_worker) -> dict:
    return {"backend": backend, "address": address, "workers": workers,
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


@app.command()
def run(
    model: ModelOpt = "minilm-l6",
    task: TaskOpt = None,
    data_dir: DataDirOpt = None,
    train_file: TrainFileOpt = None,
    validation_file: ValFileOpt = None,
    text_columns: TextColsOpt = None,
    label_column: LabelColOpt = None,
    regression: RegressionOpt = False,
    max_train_examples: MaxTrainOpt = None,
    max_eval_examples: MaxEvalOpt = None,
    search_split: SearchSplitOpt = 0.1,
    search_file: SearchFileOpt = None,
    distill_file: Annotated[Path | None, typer.Option(help="Unlabeled in-domain texts (the text columns, no label) that the teacher labels for --recover distill.")] = None,
    run_dir: Annotated[Path, typer.Option(help="Everything goes here; finished stages are reused.")] = Path("runs/run"),
    epochs: EpochsOpt = 3.0,
    batch_size: BatchOpt = 16,
    learning_rate: LrOpt = 5e-5,
    grad_accum: AccumOpt = 1,
    warmup_ratio: WarmupOpt = 0.1,
    max_length: MaxLenOpt = 128,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = None,
    strategy: StrategyOpt = "standard",
    supernet_epochs: Annotated[float, typer.Option(help="--strategy distill: passes over the training set.")] = 1.0,
    space: SpaceOpt = "layerwise",
    searcher: SearcherOpt = "local",
    trials: TrialsOpt = 100,
    objectives: ObjectivesOpt = "error,params",
    any_heads: AnyHeadsOpt = False,
    unit_step: UnitStepOpt = 64,
    low_fidelity: LowFidOpt = None,
    importance: ImportanceOpt = "fisher",
    calibration_examples: CalibOpt = 512,
    pick: Annotated[str, typer.Option(help="largest, smallest, 'encoder_params<=0.5', 'params<=0.5', 'flops<=0.3', 'latency<=12ms', 'error<=0.1' or a trial id (fractions are of the full model).")] = "encoder_params<=0.5",
    export_format: Annotated[str, typer.Option("--format", help="Export format(s): hf, or hf,onnx.")] = "hf",
    quantize: Annotated[str | None, typer.Option(help="int8: also write a dynamically quantized copy.")] = None,
    recover: Annotated[str, typer.Option(help="Before export, train the pick on the fine-tuned model's outputs (distill), refit it by least squares, both, or none.")] = "distill",
    recover_epochs: Annotated[float, typer.Option(help="--recover distill: passes over the training texts; the best epoch on the search split is kept.")] = 3.0,
    force: Annotated[bool, typer.Option(help="Go on even when the fine-tuned model or the search found nothing better than a trivial predictor.")] = False,
    until: Annotated[str, typer.Option(help="Stop after this stage: finetune, search, export.")] = "export",
    backend: BackendOpt = "local",
    address: AddressOpt = None,
    workers: WorkersOpt = 2,
    cpus_per_worker: CpusPerWorkerOpt = 1.0,
    gpus_per_worker: GpusPerWorkerOpt = 0.0,
) -> None:
    """Fine-tune → reorder → search → Pareto → export, in one resumable run directory."""
    from nasprune.pipeline import RunConfig, SearchConfig
    from nasprune.pipeline import run as run_pipeline
    from nasprune.training import TrainConfig

    quiet_libraries()
    cfg = RunConfig(
        model=model,
        data=data_config(task, data_dir, train_file, validation_file, text_columns,
                         label_column, regression, max_train_examples, max_eval_examples, seed,
                         search_split, search_file, distill_file),
        train=TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                          grad_accum=grad_accum, warmup_ratio=warmup_ratio,
                          max_length=max_length, seed=seed, device=device, threads=threads,
                          strategy=strategy, strategy_options=_strategy_options(
                              strategy, space, unit_step, any_heads, supernet_epochs)),
        search=SearchConfig(space=space, searcher=searcher, trials=trials,
                            objectives=_objectives(objectives), any_heads=any_heads,
                            unit_step=unit_step, low_fidelity=low_fidelity,
                            importance=importance, calibration_examples=calibration_examples,
                            seed=seed, **_executor_options(backend, address, workers,
                                                           cpus_per_worker, gpus_per_worker)),
        pick=pick, export_formats=_objectives(export_format), quantize=quantize, recover=recover,
        recover_epochs=recover_epochs, force=force)
    _print_summary(run_pipeline(cfg, run_dir, until=until), run_dir)


def _strategy_options(strategy: str, space: str, unit_step: int, any_heads: bool,
                      epochs: float) -> dict:
    """Super-network strategies sample from the space the search will use."""
    if strategy == "standard":
        return {}
    options = {"space": space, "unit_step": unit_step, "any_heads": any_heads}
    return {**options, "epochs": epochs} if strategy == "distill" else options


@app.command()
def search(
    run_dir: Annotated[Path, typer.Argument(help="A run directory with a fine-tuned model (nasprune run --until finetune).")],
    space: SpaceOpt = "layerwise",
    searcher: SearcherOpt = "local",
    trials: TrialsOpt = 100,
    objectives: ObjectivesOpt = "error,params",
    any_heads: AnyHeadsOpt = False,
    unit_step: UnitStepOpt = 64,
    low_fidelity: LowFidOpt = None,
    importance: ImportanceOpt = "fisher",
    calibration_examples: CalibOpt = 512,
    seed: SeedOpt = 0,
    pick: Annotated[str, typer.Option(help="Budget rule shown in the summary.")] = "encoder_params<=0.5",
    backend: BackendOpt = "local",
    address: AddressOpt = None,
    workers: WorkersOpt = 2,
    cpus_per_worker: CpusPerWorkerOpt = 1.0,
    gpus_per_worker: GpusPerWorkerOpt = 0.0,
) -> None:
    """Search the sub-networks of a run's fine-tuned model (resumes a stopped search)."""
    from nasprune.pipeline import SearchConfig, config_of_run
    from nasprune.pipeline import run as run_pipeline

    quiet_libraries()
    cfg = config_of_run(run_dir)
    cfg.search = SearchConfig(space=space, searcher=searcher, trials=trials,
                              objectives=_objectives(objectives), any_heads=any_heads,
                              unit_step=unit_step, low_fidelity=low_fidelity,
                              importance=importance, calibration_examples=calibration_examples,
                              seed=seed, **_executor_options(backend, address, workers,
                                                             cpus_per_worker, gpus_per_worker))
    cfg.pick = pick
    _print_summary(run_pipeline(cfg, run_dir, until="search"), run_dir)


# ---- pareto: the front of a search (nasprune.report) ----


@app.command()
def pareto(
    run_dir: Annotated[Path, typer.Argument(help="Run directory holding search/trials.db.")],
    objectives: Annotated[str | None, typer.Option(help="Comma-separated, e.g. error,params or error,params,latency (default: the search's).")] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for pareto.png and pareto.csv (default RUN_DIR/search).")] = None,
    pick: Annotated[str | None, typer.Option(help="Highlight the pick: largest, smallest, 'params<=0.5', 'latency<=12ms', 'error<=0.1' or a trial id.")] = None,
) -> None:
    """Print the Pareto front of a search; write pareto.png and pareto.csv."""
    from rich.console import Console as StdoutConsole

    from nasprune.report import front_table, pareto_summary
    from nasprune.search.pareto import pick as pick_trial

    names = tuple(o.strip() for o in objectives.split(",") if o.strip()) if objectives else None
    summary = pareto_summary(run_dir, names, out)
    chosen = None
    if pick:
        chosen = pick_trial([t for t in summary.trials if t.is_full_fidelity], pick,
                            summary.objectives, summary.full)
    StdoutConsole().print(front_table(summary, chosen))
    if chosen is not None:
        console.print(f"[green]pick[/] {pick!r} -> trial {chosen.id}: {chosen.subnet}")
    console.print(f"wrote {summary.png} and {summary.csv}")


# ---- export: a picked sub-network as a deployable model (nasprune.export) ----


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="Run directory holding supernet/ and search/trials.db.")],
    pick: Annotated[str, typer.Option(help="largest, smallest, a trial id, or a budget: 'encoder_params<=0.5', 'params<=0.5', 'flops<=0.3', 'latency<=12ms', 'error<=0.1'.")] = "encoder_params<=0.5",
    out: Annotated[Path | None, typer.Option(help="Export directory (default RUN_DIR/export).")] = None,
    format: Annotated[str, typer.Option("--format", help="hf (safetensors + config), or onnx (hf files plus model.onnx).")] = "hf",
    quantize: Annotated[str | None, typer.Option(help="int8: dynamic quantization of the linear layers (ONNX Runtime with --format onnx, else PyTorch at load).")] = None,
    validate: Annotated[bool, typer.Option(help="Re-measure the metric of each backend on the run's validation set.")] = True,
) -> None:
    """Write the picked sub-network as a smaller model: safetensors, config, tokenizer, checksums."""
    from nasprune.export import FORMATS, export_from_run

    quiet_libraries()
    if format not in FORMATS:
        raise NaspruneError(f"unknown --format {format!r}; choose one of {', '.join(FORMATS)}")
    path = export_from_run(run_dir, pick, out, formats=(format,), quantize=quantize,
                           validate=validate, progress=console.print)
    metrics = (path / "metrics.json").read_text()
    console.print(f"[green]exported[/] {path}")
    typer.echo(metrics.strip())


# ---- serve / loadtest: HTTP endpoint with dynamic batching, stepped-users load test ----


@app.command()
def serve(
    model_dir: Annotated[Path, typer.Argument(help="Hugging Face classifier directory or an export.")],
    host: Annotated[str, typer.Option(help="Address to bind; loopback unless you mean it.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
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
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve a classifier over HTTP: POST /v1/predict, /healthz, /readyz, /v1/model, /metrics."""
    from nasprune.serve import ServeConfig
    from nasprune.serve import serve as run_server

    quiet_libraries()
    cfg = ServeConfig(host=host, port=port, max_batch_size=max_batch_size,
                      max_wait_ms=max_wait_ms, max_queue=max_queue, token=token,
                      max_items=max_items, max_text_chars=max_text_chars,
                      max_body_bytes=max_body_bytes, max_length=max_length,
                      chunk_size=chunk_size, torch_threads=threads, log_level=log_level)
    if host not in ("127.0.0.1", "localhost", "::1") and not cfg.token:
        console.print(f"[yellow]warning[/]: serving on {host} without a token")
    console.print(f"serving {model_dir} on http://{host}:{port}")
    run_server(model_dir, cfg)


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
) -> None:
    """Load-test one or more endpoints with rising users; CSV, plot and saturation points."""
    from rich.console import Console as StdoutConsole
    from rich.table import Table

    from nasprune.loadtest import LoadTestConfig, parse_targets, parse_users, run_loadtest

    cfg = LoadTestConfig(targets=parse_targets(target), users=parse_users(users),
                         step_time=step_time, texts_from=texts_from, text_column=text_column,
                         pair_column=pair_column, slo_ms=slo_ms, out_dir=out,
                         think_ms=think_ms, token=token, max_texts=max_texts)
    total = len(cfg.users) * cfg.step_time * len(cfg.targets)
    console.print(f"load-testing {', '.join(cfg.targets)}: users {cfg.users}, "
                  f"{cfg.step_time:g} s per step (~{total:.0f} s)")
    results = run_loadtest(cfg)
    table = Table("target", "users", "req/s", "p50 ms", "p95 ms", "p99 ms", "failures")
    for result in results:
        for s in result.steps:
            table.add_row(result.name, str(s.users), f"{s.ok_rps:.1f}", f"{s.p50_ms:.0f}",
                          f"{s.p95_ms:.0f}", f"{s.p99_ms:.0f}", f"{s.failure_rate:.1%}")
    StdoutConsole().print(table)
    for result in results:
        where = (f"saturates at {result.saturation_users} users"
                 if result.saturation_users is not None
                 else f"not saturated up to {max(cfg.users)} users")
        StdoutConsole().print(f"{result.name}: {where} (p95 > {cfg.slo_ms:g} ms or > 1 % "
                              f"failures); peak {result.max_ok_rps:.1f} req/s")
    console.print(f"wrote {out / 'steps.csv'}, {out / 'summary.json'}, {out / 'loadtest.png'}")


def main() -> None:
    try:
        app()
    except NaspruneError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: finished work is saved in the run directory")
        sys.exit(130)
