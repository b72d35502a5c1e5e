"""The typed configuration of a run: what the CLI parses, the Python API takes and
``RUN/config.json`` stores.

Importing this module loads no torch (nor pandas), so a command is checked in well under a
second, before any work starts: every name below is checked against the registries' names
(``choices``), every number against its range, and the pick rule's syntax. It imports only
the shared modules and the registries' names (tests/test_layout.py holds the list).

Each field declares its flag and the stage whose result it determines (``option``; ``F``,
``SN``, ``S``, ``E``: fine-tuning, the super-network, search, export; ``None``: no
result), which ``OPTIONS`` collects.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields, replace

from nasprune.config import pickrule
from nasprune.config.options import option, options, section
from nasprune.core import COSTS, IMPORTANCE, SPACES
from nasprune.deploy.export.backends import FORMATS
from nasprune.deploy.export.format import QUANTIZE
from nasprune.errors import NaspruneError
from nasprune.search.executors import EXECUTORS
from nasprune.search.searchers import SEARCHERS
from nasprune.train.recovery import RECOVERY_METHODS
from nasprune.train.strategies import STRATEGIES, needs_teacher, samples_space

#: ``TrainConfig.strategy="auto"`` (the default) in a run (``nasprune run``, ``RunConfig``):
#: super-network distillation, what ``benchmarks/quality.py`` found best per unit of
#: compute. Outside a run (``nasprune finetune``), "auto" is plain fine-tuning.
RUN_STRATEGY = "distill"
AUTO = "auto"
#: Passes over the training set of a strategy that needs a teacher (``--supernet-epochs``).
SUPERNET_EPOCHS = 1.0
F, SN, S, E = "finetune", "supernet", "search", "export"
#: ``--precision`` of training, distillation and candidate evaluation (``train.precision``).
PRECISIONS = ("fp32", "bf16", "fp16")


def scaled_lr(batch_size: int, base_lr: float = 5e-5, base_batch: int = 16) -> float:
    """The linear scaling rule of the distillation stages: a larger batch (fewer, costlier
    steps that run more examples per second on a CPU: benchmarks/results/step_speed.md)
    takes a proportionally larger learning rate."""
    return base_lr * batch_size / base_batch


def _one_of(what: str, value, allowed) -> None:
    if value not in allowed:
        raise NaspruneError(f"unknown {what} {value!r}; choose one of {', '.join(allowed)}")


def check_device_name(name: str, option: str = "--device") -> str:
    """The syntax of a device name (whether this machine has it: ``core.models.pick_device``)."""
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", str(name)):
        raise NaspruneError(f"{option}: unknown device {name!r}; use auto, cpu, cuda, cuda:N "
                            "or mps")
    return name


def _at_least(values: dict, minimum: float = 1) -> None:
    for name, value in values.items():
        if value is not None and value < minimum:
            raise NaspruneError(f"--{name.replace('_', '-')} must be at least {minimum:g}, "
                                f"got {value:g}")


@dataclass
class DataConfig:
    """Where the data comes from (``data.tasks.load_task_data`` reads it); saved in the run
    directory so a run can be repeated."""

    task: str | None = option(None, stage=F)
    data_dir: str | None = option(None, stage=F)
    train_file: str | None = option(None, stage=F)
    validation_file: str | None = option(None, stage=F)
    text_columns: tuple[str, ...] | None = option(None, stage=F)
    label_column: str | None = option(None, stage=F)
    regression: bool = option(False, stage=F)
    max_train_examples: int | None = option(None, stage=F)
    max_eval_examples: int | None = option(None, stage=F)
    seed: int = option(0, stage=F)
    #: Held out from the training set for every choice: a fraction (< 1) or a count.
    search_split: float = option(0.1, stage=F)
    search_file: str | None = option(None, stage=F)
    #: Unlabeled in-domain texts (same text columns) that only the teacher labels.
    distill_file: str | None = option(None, stage=E)
    #: Drop rows with an empty text or a missing label (reported) instead of refusing them.
    drop_invalid: bool = option(False, stage=F)

    def __post_init__(self) -> None:
        if not self.search_split > 0 or (self.search_split >= 1
                                          and not float(self.search_split).is_integer()):
            raise NaspruneError("--search-split must be a fraction in (0, 1) or a count >= 1")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainConfig:
    epochs: float = option(3.0, stage=F)
    batch_size: int = option(16, stage=F)
    learning_rate: float = option(5e-5, stage=F, flag="--lr")
    weight_decay: float = option(0.01, stage=F, flag=None)
    warmup_ratio: float = option(0.1, stage=F)
    grad_accum: int = option(1, stage=F)
    #: Tokens kept per example; None: the 99th percentile of the training texts' lengths
    #: (``data.encode.chosen_max_length``), resolved when a run or a fine-tuning starts.
    max_length: int | None = option(None, stage=F)
    eval_batch_size: int = option(64, stage=None, flag=None)
    seed: int = option(0, stage=F, flag="--seed")
    device: str = option("auto", stage=None)
    #: A PRECISIONS name: the autocast dtype of forward passes (training, distillation,
    #: candidate evaluation).
    precision: str = option("fp32", stage=F)
    threads: int | None = option(None, stage=None)
    #: A STRATEGIES name; AUTO: RUN_STRATEGY in a run, else standard. A strategy that needs
    #: a teacher runs in its own stage (supertrain), which its options then determine.
    strategy: str = option(AUTO, stage=F)
    strategy_options: dict = option(stage=F, flag=None, factory=dict, sub_flags={
        "epochs": "--supernet-epochs", "batch_size": "--supernet-batch-size",
        "budget": "--pick"})
    group_by_length: bool = option(True, stage=F, flag=None)
    progress: bool = option(True, stage=None, flag=None)

    def __post_init__(self) -> None:
        _at_least({"batch_size": self.batch_size, "grad_accum": self.grad_accum,
                   "max_length": self.max_length, "eval_batch_size": self.eval_batch_size,
                   "threads": self.threads})
        if self.epochs <= 0 or self.learning_rate <= 0:
            raise NaspruneError("epochs and learning rate must be positive")
        if not 0 <= self.warmup_ratio < 1:
            raise NaspruneError("warmup ratio must be in [0, 1)")
        check_device_name(self.device)
        _one_of("strategy", self.strategy, (AUTO, *STRATEGIES))
        _one_of("precision", self.precision, PRECISIONS)

    @property
    def fine_tuning_strategy(self) -> str:
        """The strategy of plain fine-tuning (outside a run, ``auto`` is ``standard``)."""
        return "standard" if self.strategy == AUTO else self.strategy

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SearchConfig:
    space: str = option("layerwise", stage=S)
    searcher: str = option("local", stage=S)
    trials: int = option(100, stage=None)  # more trials extend the same search
    objectives: tuple[str, ...] = option(("error", "params"), stage=S)
    any_heads: bool = option(False, stage=S)
    unit_step: int = option(64, stage=S)
    low_fidelity: float | None = option(None, stage=S)
    importance: str = option("fisher", stage=SN)
    calibration_examples: int = option(512, stage=SN)
    eval_batch_size: int = option(64, stage=None, flag=None)
    seed: int = option(0, stage=S, flag="--seed")
    backend: str = option("local", stage=None)  # local (in process), process, ray
    workers: int = option(1, stage=None)
    address: str | None = option(None, stage=None)  # ray: None = a private local Ray
    cpus_per_worker: float = option(1, stage=None)
    gpus_per_worker: float = option(0, stage=None)

    def __post_init__(self) -> None:
        _one_of("backend", self.backend, EXECUTORS)
        _one_of("search space", self.space, SPACES)
        _one_of("searcher", self.searcher, SEARCHERS)
        _one_of("importance method", self.importance, IMPORTANCE)
        _at_least({"workers": self.workers, "trials": self.trials, "unit_step": self.unit_step,
                   "calibration_examples": self.calibration_examples,
                   "eval_batch_size": self.eval_batch_size})
        _at_least({"cpus_per_worker": self.cpus_per_worker,
                   "gpus_per_worker": self.gpus_per_worker}, 0)
        if self.low_fidelity is not None and not 0 < self.low_fidelity < 1:
            raise NaspruneError("--low-fidelity must be a fraction in (0, 1)")
        self.objectives = tuple(self.objectives)
        costs = self.objectives[1:]
        if (not self.objectives or self.objectives[0] != "error" or len(costs) not in (1, 2)
                or any(c not in COSTS for c in costs) or len(set(costs)) < len(costs)):
            raise NaspruneError("objectives: 'error' followed by one or two of "
                                + ", ".join(COSTS))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class RunConfig:
    model: str = option("minilm-l6", stage=F)
    data: DataConfig = section(DataConfig)
    train: TrainConfig = section(TrainConfig)
    search: SearchConfig = section(SearchConfig)
    pick: str = option("encoder_params<=0.5", stage=E)
    export_formats: tuple[str, ...] = option(("hf",), stage=E, flag="--format")
    quantize: str | None = option(None, stage=E)
    recover: str = option("distill", stage=E)  # a RECOVERY_METHODS name
    recover_epochs: float = option(3.0, stage=E)
    #: Distillation recovery's batch; its learning rate scales with it (5e-5 at 16).
    recover_batch_size: int = option(16, stage=E)
    #: ``recover_epochs`` are a half-size pick's; a smaller pick gets more (``recovery_epochs``).
    recover_scaled: bool = option(False, stage=E)
    force: bool = option(False, stage=None)  # export even when the sanity guard fires

    def __post_init__(self) -> None:
        """Options used after the search are checked now, not after an hour of search."""
        if self.train.strategy == AUTO:
            self.train = replace(self.train, strategy=RUN_STRATEGY)
        self.export_formats = tuple(dict.fromkeys(("hf", *self.export_formats)))
        for name in self.export_formats:
            _one_of("export format", name, FORMATS)
        if self.quantize is not None:
            _one_of("quantization", self.quantize, QUANTIZE)
        _one_of("recovery", self.recover, RECOVERY_METHODS)
        if self.recover_epochs < 0:
            raise NaspruneError("--recover-epochs must be >= 0")
        _at_least({"recover_batch_size": self.recover_batch_size})
        self.budget()

    def recovery_epochs(self, fraction: float) -> float:
        """Distillation epochs of a pick keeping ``fraction`` of the encoder's parameters:
        ``recover_epochs``, or with ``recover_scaled`` the compute of ``recover_epochs``
        on a half-size pick (epochs x 0.5 / fraction), at most 3x ``recover_epochs`` (reached
        at 1/6 of the encoder): a pick that lost more learns longer, a larger one less."""
        if not self.recover_scaled:
            return self.recover_epochs
        return self.recover_epochs * 0.5 / max(fraction, 0.5 / 3)

    def budget(self) -> float | None:
        """The pick's encoder-parameter fraction when the rule is ``encoder_params<=x``
        (super-network distillation samples around it); checks the rule's syntax."""
        return pickrule.budget(self.pick)

    def strategy_options(self) -> dict:
        """The options the run's strategy trains with, resolved here only (the stages train
        with them, the fingerprints record them): a strategy that samples sub-networks
        samples the search's space; one that needs a teacher also takes the search's
        importance scores, samples around the pick's budget and trains ``SUPERNET_EPOCHS``.
        Options given in ``train.strategy_options`` win."""
        name, given = self.train.strategy, dict(self.train.strategy_options)
        if not samples_space(name):
            return given
        s = self.search
        options = {"space": s.space, "unit_step": s.unit_step, "any_heads": s.any_heads}
        if needs_teacher(name):
            options.update(importance=s.importance, calibration_examples=s.calibration_examples,
                           budget=self.budget(), epochs=SUPERNET_EPOCHS)
        return {**options, **given}

    def training(self) -> TrainConfig:
        """``train`` as the run trains: its strategy's options resolved."""
        return replace(self.train, strategy_options=self.strategy_options())

    def supertraining(self) -> TrainConfig:
        """What the super-network distillation stage trains with (a strategy that needs a
        teacher): its ``epochs``, and its ``batch_size`` when given, with the fine-tuning's
        learning rate scaled to that batch (``scaled_lr``)."""
        train = self.training()
        options = train.strategy_options
        batch = int(options.get("batch_size") or train.batch_size)
        return replace(train, epochs=float(options["epochs"]), batch_size=batch,
                       learning_rate=scaled_lr(batch, train.learning_rate, train.batch_size))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict) -> RunConfig:
        """The inverse of ``to_dict``; unknown keys are refused by name."""
        def build(kind, values: dict, what: str):
            known = {f.name for f in fields(kind)}
            unknown = sorted(set(values) - known)
            if unknown:
                raise NaspruneError(f"{what}: unknown key(s) {', '.join(unknown)}")
            return kind(**values)

        try:
            data = dict(saved.get("data", {}))
            if data.get("text_columns"):
                data["text_columns"] = tuple(data["text_columns"])
            top = {k: v for k, v in saved.items() if k not in ("data", "train", "search")}
            if "export_formats" in top:
                top["export_formats"] = tuple(top["export_formats"])
            return build(cls, {**top, "data": build(DataConfig, data, "data"),
                               "train": build(TrainConfig, dict(saved.get("train", {})),
                                              "train"),
                               "search": build(SearchConfig, dict(saved.get("search", {})),
                                               "search")}, "config")
        except (TypeError, AttributeError, ValueError) as exc:
            raise NaspruneError(f"malformed configuration: {exc}") from exc


#: Every option of a run by dotted key (``train.learning_rate``), from the declarations.
OPTIONS = options(RunConfig)
