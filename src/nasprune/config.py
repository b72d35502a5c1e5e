"""The typed configuration of a run: what the CLI parses, the Python API takes and
``RUN/config.json`` stores.

Importing this module loads no torch (nor pandas), so a command is checked in well under a
second, before any work starts: every name below is checked against the registries' names
(``choices``), every number against its range, and the pick rule's syntax. It imports only
the shared modules and the registries' names (tests/test_layout.py holds the list).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields, replace

from nasprune import pickrule
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
#: ``--precision`` of training, distillation and candidate evaluation (``train.precision``).
PRECISIONS = ("fp32", "bf16", "fp16")


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

    task: str | None = None
    data_dir: str | None = None
    train_file: str | None = None
    validation_file: str | None = None
    text_columns: tuple[str, ...] | None = None
    label_column: str | None = None
    regression: bool = False
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    seed: int = 0
    #: Held out from the training set for every choice: a fraction (< 1) or a count.
    search_split: float = 0.1
    search_file: str | None = None
    #: Unlabeled in-domain texts (same text columns) that only the teacher labels.
    distill_file: str | None = None
    #: Drop rows with an empty text or a missing label (reported) instead of refusing them.
    drop_invalid: bool = False

    def __post_init__(self) -> None:
        if not self.search_split > 0 or (self.search_split >= 1
                                          and not float(self.search_split).is_integer()):
            raise NaspruneError("--search-split must be a fraction in (0, 1) or a count >= 1")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainConfig:
    epochs: float = 3.0
    batch_size: int = 16
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    grad_accum: int = 1
    max_length: int = 128
    eval_batch_size: int = 64
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"  # a PRECISIONS name: autocast dtype of forward passes
    threads: int | None = None
    strategy: str = AUTO  # a STRATEGIES name; AUTO: RUN_STRATEGY in a run, else standard
    strategy_options: dict = field(default_factory=dict)
    group_by_length: bool = True
    progress: bool = True

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
    model: str = "minilm-l6"
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    pick: str = "encoder_params<=0.5"
    export_formats: tuple[str, ...] = ("hf",)
    quantize: str | None = None
    recover: str = "distill"  # a RECOVERY_METHODS name (nasprune.train.recovery)
    recover_epochs: float = 3.0
    force: bool = False  # export even when the sanity guard fires

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
        self.budget()

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
