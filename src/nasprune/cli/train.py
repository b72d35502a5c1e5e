"""``nasprune finetune``: fine-tune an encoder on a task (the first stage alone)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from rich.markup import escape

from nasprune.cli.common import (
    _D,
    _FINETUNE,
    _R,
    _T,
    MODEL,
    AccumOpt,
    BatchOpt,
    DataDirOpt,
    DeviceOpt,
    DropInvalidOpt,
    EpochsOpt,
    LabelColOpt,
    LrOpt,
    MaxEvalOpt,
    MaxLenOpt,
    MaxTrainOpt,
    ModelOpt,
    OutDir,
    PrecisionOpt,
    RegressionOpt,
    SearchFileOpt,
    SearchSplitOpt,
    SeedOpt,
    StrategyOpt,
    TaskOpt,
    TextColsOpt,
    ThreadsOpt,
    TrainFileOpt,
    ValFileOpt,
    WarmupOpt,
    _value,
    app,
    console,
    data_config,
    opt,
    progress_enabled,
    quiet_libraries,
)
from nasprune.errors import NaspruneError
from nasprune.train.strategies import needs_teacher


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
    out: Annotated[Path, opt("Folder for the checkpoint (OUT/model) and metrics.json.", MODEL, parser=OutDir())] = Path("runs/finetune"),
    epochs: EpochsOpt = _T.epochs,
    batch_size: BatchOpt = _T.batch_size,
    learning_rate: LrOpt = _T.learning_rate,
    grad_accum: AccumOpt = _T.grad_accum,
    warmup_ratio: WarmupOpt = _T.warmup_ratio,
    max_length: MaxLenOpt = _T.max_length,
    seed: SeedOpt = _T.seed,
    device: DeviceOpt = _T.device,
    precision: PrecisionOpt = _T.precision,
    threads: ThreadsOpt = None,
    strategy: StrategyOpt = _FINETUNE.fine_tuning_strategy,
) -> None:
    """Fine-tune an encoder on a classification or regression task (the best epoch is
    chosen on the search split; validation is reported)."""
    from nasprune.config import TrainConfig

    if needs_teacher(_value(strategy)):
        raise NaspruneError(f"--strategy {_value(strategy)} needs the fine-tuned model as its "
                            f"teacher: use nasprune run --strategy {_value(strategy)}")
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                      grad_accum=grad_accum, warmup_ratio=warmup_ratio, max_length=max_length,
                      seed=seed, device=device, precision=_value(precision), threads=threads, strategy=_value(strategy),
                      progress=progress_enabled())
    data_cfg = data_config(task, data_dir, train_file, validation_file, text_columns,
                           label_column, regression, max_train_examples, max_eval_examples,
                           seed, search_split, search_file, drop_invalid=drop_invalid)
    from nasprune.core.models import check_model
    from nasprune.data.tasks import load_task_data

    data = load_task_data(data_cfg)
    check_model(model)
    quiet_libraries()
    from nasprune.train.finetune import finetune as run_finetune

    result = run_finetune(model, data, cfg, out)
    best, metric = result["best"], result["metric"]
    chosen = f"chosen on the {result['selected_on']} split"
    if result["selected_on"] != "validation":
        chosen += f" ({best[result['selected_on']][metric]:.4f})"
    console.print(f"[green]best[/] epoch {best['epoch']} ({chosen}): validation {metric} "
                  f"{best[metric]:.4f} -> {escape(str(out / 'model'))}")
