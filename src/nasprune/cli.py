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


def data_config(task, data_dir, train_file, validation_file, text_columns, label_column,
                regression, max_train_examples, max_eval_examples, seed=0):
    from nasprune.data import DataConfig

    return DataConfig(
        task=task, data_dir=str(data_dir) if data_dir else None,
        train_file=str(train_file) if train_file else None,
        validation_file=str(validation_file) if validation_file else None,
        text_columns=tuple(c.strip() for c in text_columns.split(",")) if text_columns else None,
        label_column=label_column, regression=regression,
        max_train_examples=max_train_examples, max_eval_examples=max_eval_examples, seed=seed)


def quiet_libraries() -> None:
    """Keep the terminal for our own progress bars and tables."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


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
    out: Annotated[Path, typer.Option(help="Run directory for the checkpoint and metrics.json.")] = Path("runs/finetune"),
    epochs: Annotated[float, typer.Option(help="Passes over the training set.")] = 3.0,
    batch_size: Annotated[int, typer.Option(help="Examples per step.")] = 16,
    learning_rate: Annotated[float, typer.Option("--lr", help="Peak AdamW learning rate.")] = 5e-5,
    grad_accum: Annotated[int, typer.Option(help="Steps to accumulate before an update.")] = 1,
    warmup_ratio: Annotated[float, typer.Option(help="Fraction of updates with rising lr.")] = 0.1,
    max_length: Annotated[int, typer.Option(help="Tokens kept per example.")] = 128,
    seed: Annotated[int, typer.Option(help="Seed for data order, subsets and init.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, mps.")] = "auto",
    threads: Annotated[int | None, typer.Option(help="CPU threads for torch.")] = None,
    strategy: Annotated[str, typer.Option(help="standard, or a super-network strategy.")] = "standard",
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
                                      max_eval_examples, seed))
    result = run_finetune(model, data, cfg, out)
    best = result["best"]
    console.print(f"[green]best[/] {result['metric']} {best[result['metric']]:.4f} "
                  f"(epoch {best['epoch']}) -> {out / 'model'}")


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
    pick: Annotated[str, typer.Option(help="largest, smallest, a trial id, or a budget: 'params<=0.5', 'flops<=0.3', 'latency<=12ms', 'error<=0.1'.")] = "params<=0.5",
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


def main() -> None:
    try:
        app()
    except NaspruneError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: finished work is saved in the run directory")
        sys.exit(130)
