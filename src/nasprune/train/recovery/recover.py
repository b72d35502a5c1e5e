"""Recovery of an extracted sub-network, measured: the configuration, the report, and the
driver that runs a method (``RECOVERY_METHODS``) between measurements.

Every step is measured against the full model on a calibration set (``logits_mse``) and
on the search and validation splits; distillation keeps the epoch with the best search
error, and validation is only measured, to report. No step changes a shape: only the
values of existing weights are written.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nasprune.config import scaled_lr
from nasprune.core.models import model_device, model_inputs
from nasprune.core.subnet import Subnet
from nasprune.data.encode import Encoded, subset
from nasprune.data.presets import TaskPreset
from nasprune.errors import NaspruneError
from nasprune.train.batches import iter_batches
from nasprune.train.evaluation import evaluate, predict, score
from nasprune.train.losses import DistillLoss, logits_loss
from nasprune.train.precision import check as check_precision
from nasprune.train.recovery import RECOVERY_METHODS


@dataclass
class RecoveryConfig:
    """What recovery does; saved with the export so it can be repeated."""

    method: str = "distill"
    calibration_examples: int = 256
    calibration_batch_size: int = 32
    ridge: float = 1e-3  # relative to the mean diagonal of the Gram matrix
    epochs: float = 3.0  # distillation passes over the training texts
    batch_size: int = 16
    #: None: 5e-5 at batch 16, scaled linearly with ``batch_size`` (``config.scaled_lr``)
    learning_rate: float | None = None
    warmup_ratio: float = 0.1
    temperature: float = 2.0
    hidden_weight: float = 0.0  # layer-output MSE (losses.DistillLoss)
    labels_weight: float = 0.0  # the task loss on the labels
    seed: int = 0
    precision: str = "fp32"  # train.precision: autocast of distillation's forward passes

    def __post_init__(self) -> None:
        if self.learning_rate is None:
            self.learning_rate = scaled_lr(self.batch_size)
        RECOVERY_METHODS.check(self.method)
        for name in ("calibration_examples", "calibration_batch_size", "batch_size"):
            if getattr(self, name) < 1:
                raise NaspruneError(f"recovery {name.replace('_', '-')} must be at least 1")
        if self.epochs < 0 or self.ridge < 0:
            raise NaspruneError("recovery epochs and ridge must be >= 0")
        self.loss()  # checks temperature and weights
        check_precision(self.precision)

    def loss(self) -> DistillLoss:
        return DistillLoss(temperature=self.temperature, hidden_weight=self.hidden_weight,
                           labels_weight=self.labels_weight)

    def to_dict(self) -> dict:
        return asdict(self)


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(p.shape) for name, p in model.state_dict().items()}


@torch.no_grad()
def logits_mse(small: nn.Module, full: nn.Module, batches: Iterable[Mapping[str, Any]]) -> float:
    """Mean squared difference of the two models' logits (the calibration error that
    recovery lowers)."""
    total, count = 0.0, 0
    for batch in batches:
        a = small(**model_inputs(batch, model_device(small))).logits.cpu().double()
        b = full(**model_inputs(batch, model_device(full))).logits.cpu().double()
        total += float(((a - b) ** 2).sum())
        count += a.numel()
    return total / max(1, count)


@dataclass
class RecoveryReport:
    """The sub-network before and after recovery: ``logits_mse`` against the full model on
    the calibration set, and the task metrics per split (``search``, ``validation``)."""

    config: dict
    before: dict | None = None
    after: dict | None = None
    steps: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Selection:
    """How good one recovery epoch is on the search split: the error, the distillation loss
    against the teacher there, and the number of examples (one example = ``1/examples``)."""

    error: float
    loss: float | None = None
    examples: int | None = None

    @classmethod
    def of(cls, value) -> Selection | None:
        if value is None or isinstance(value, Selection):
            return value
        if isinstance(value, dict):
            return cls(value["error"], value.get("search_distill_loss"), value.get("examples"))
        return cls(float(value))

    def to_dict(self) -> dict:
        out = {"error": self.error}
        if self.loss is not None:
            out.update(search_distill_loss=self.loss, examples=self.examples)
        return out

    def better(self, best: Selection | None) -> bool:
        """Better than ``best``: lower by more than one example, or, within one example
        (a tie on a small split), closer to the teacher."""
        if best is None:
            return True
        if self.loss is None or best.loss is None or not self.examples:
            return self.error < best.error
        step = 1 / self.examples + 1e-9
        if abs(self.error - best.error) <= step:
            return self.loss < best.loss
        return self.error < best.error


@dataclass
class RecoveryRun:
    """What a recovery method works on: the models, the data, the calibration batches; its
    steps go to ``report`` through ``record``, each measured after it ran."""

    small: nn.Module
    full: nn.Module
    train: Encoded
    config: RecoveryConfig
    report: RecoveryReport
    calibration: list[Mapping[str, Any]]
    splits: dict[str, Encoded]
    preset: TaskPreset | None = None
    pad_id: int = 0
    subnet: Subnet | None = None
    unlabeled: Encoded | None = None
    progress: bool = False
    state_file: Path | None = None  # epoch checkpoints of a training step (train.resume)
    _search_teacher: torch.Tensor | None = field(default=None, repr=False)

    def measure(self) -> dict:
        small = self.small
        was = small.training
        small.eval()
        scores: dict = {"logits_mse": logits_mse(small, self.full, self.calibration)}
        for name, encoded in self.splits.items():
            scores[name] = evaluate(small, encoded, self.preset, pad_id=self.pad_id)
        small.train(was)
        return scores

    def record(self, step: dict) -> None:
        """Add ``step`` (its name and facts) to the report, with the scores after it."""
        self.report.steps.append({**step, **self.measure()})

    @property
    def select(self) -> Callable[[nn.Module], Selection] | None:
        """A model's error and distillation loss on the search split, where there is one
        (chooses the distillation epoch); the teacher's logits there are computed once."""
        if "search" not in self.splits:
            return None
        search = self.splits["search"]
        if self._search_teacher is None:
            self._search_teacher = torch.from_numpy(
                predict(self.full, search, 64, model_device(self.full), self.pad_id))

        def measure(model: nn.Module) -> Selection:
            logits = predict(model, search, 64, model_device(model), self.pad_id)
            loss = logits_loss(torch.from_numpy(logits), self._search_teacher)
            return Selection(score(self.preset, logits, search.labels)["error"], float(loss),
                             len(search))
        return measure


def recover(small: nn.Module, full: nn.Module, train: Encoded, *,
            search: Encoded | None = None, validation: Encoded | None = None,
            preset: TaskPreset | None = None, config: RecoveryConfig | None = None,
            pad_id: int = 0, subnet: Subnet | None = None,
            unlabeled: Encoded | None = None, progress: bool = False,
            state_file: Path | None = None) -> RecoveryReport:
    """Apply ``config.method`` (``RECOVERY_METHODS``) to the extracted ``small`` (in place)
    with ``full`` as the teacher; calibration and distillation data come from ``train``
    (plus ``unlabeled`` texts for distillation). Distillation keeps the epoch with the
    best ``search`` error; ``validation`` is only measured, before and after, to report."""
    cfg = config or RecoveryConfig()
    start = time.perf_counter()
    shapes = _shapes(small)
    report = RecoveryReport(cfg.to_dict())
    calib_set = subset(train, cfg.calibration_examples, cfg.seed)
    calib = list(iter_batches(calib_set, cfg.calibration_batch_size, small, pad_id))
    splits = {name: enc for name, enc in (("search", search), ("validation", validation))
              if enc is not None and preset is not None}
    run = RecoveryRun(small, full, train, cfg, report, calib, splits, preset, pad_id, subnet,
                      unlabeled, progress, state_file)
    report.before = run.measure()
    RECOVERY_METHODS[cfg.method](run)
    small.eval()
    last = report.steps[-1] if report.steps else report.before
    report.after = {k: last[k] for k in ("logits_mse", *splits)}
    if _shapes(small) != shapes:  # a bug, never a user mistake
        raise AssertionError("recovery changed the shape of the sub-network")
    report.seconds = time.perf_counter() - start
    if not math.isfinite(report.after.get("logits_mse", 0.0)):
        raise NaspruneError("recovery diverged (non-finite outputs); rerun with method=none")
    return report
