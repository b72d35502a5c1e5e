"""What one optimisation step does, as a ``Strategy``; and the parts every super-network
strategy shares.

Masking a normally fine-tuned model gives poor sub-networks, because no sub-network was
ever trained. Super-network strategies also train, at each step, sub-networks drawn from
the search space the user will search, through ``Supernet.use()`` (prefix views of the
shared weights, so gradients land in the full model).

Before training, ``prepare`` reorders heads and FFN units by importance on a calibration
subset of the training data, so the prefixes that sub-networks keep start out as the most
useful ones; the permutation is written as ``order.json`` next to every saved checkpoint,
with ``supernet.json`` naming the strategy and space (the search must then *not* reorder
again: the weights are trained for this order).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from nasprune.config import TrainConfig
from nasprune.core import IMPORTANCE, SPACES
from nasprune.core.spaces import SearchSpace, make_space
from nasprune.core.subnet import Subnet
from nasprune.core.supernet import ORDER_FILE, Supernet
from nasprune.data.encode import Encoded, subset
from nasprune.data.presets import TaskPreset
from nasprune.errors import NaspruneError
from nasprune.files import read_json, write_json
from nasprune.progress import tracked
from nasprune.train.batches import iter_batches
from nasprune.train.precision import FP32, Precision

#: Written next to ``order.json``: which strategy and space trained this checkpoint.
SUPERNET_FILE = "supernet.json"


@dataclass
class TrainContext:
    """What a strategy may need besides the batch."""

    config: TrainConfig
    preset: TaskPreset
    device: torch.device
    pad_id: int
    extra: dict = field(default_factory=dict)
    precision: Precision = FP32


class Strategy:
    """One optimisation step's forward/backward; the loop owns optimiser and schedule."""

    name = "abstract"
    label = "fine-tuning"  # what the progress bar calls this training
    #: Trains sub-networks of a search space (``strategies.SAMPLES_SPACE`` names them).
    samples_space = False
    #: Runs after standard fine-tuning with its model as a fixed teacher (``NEEDS_TEACHER``).
    needs_teacher = False

    #: The run's precision (``prepare`` takes it from the context).
    precision: Precision = FP32

    def prepare(self, model: torch.nn.Module, train: Encoded, context: TrainContext) -> None:
        """Called once before training (e.g. importance reordering for a super-network)."""
        self.precision = context.precision

    def loss_backward(self, forward: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``forward()`` (a loss) under the run's autocast, its backward outside it
        (scaled for fp16); returns the detached loss, left on the device: reading it
        waits for the device, once per step is enough."""
        with self.precision.autocast():
            loss = forward()
        self.precision.backward(loss)
        return loss.detach()

    def backward(self, model: torch.nn.Module, batch: dict, progress: float) -> float:
        """Compute the loss(es) of ``batch``, call ``backward``; return the loss to log.

        ``progress`` runs from 0 to 1 over training (for schedules such as random-linear).
        """
        raise NotImplementedError

    def save_extra(self, directory: Path) -> None:
        """Add files to a checkpoint being saved (e.g. a super-network's order.json)."""


class SupernetStrategy(Strategy):
    """Shared parts: options, importance reordering, the space, sampling, checkpoint files.

    Options (``TrainConfig.strategy_options``): ``space`` (``small``, ``layer``,
    ``layerwise``), ``unit_step`` and ``any_heads`` (as for the search space),
    ``importance`` (``fisher``, ``taylor``, ``magnitude`` or ``none``),
    ``calibration_examples`` and ``calibration_batch_size`` for the importance scores, and
    ``seed`` for sampling (default: the training seed).
    """

    name = "supernet"
    label = "super-network training"
    samples_space = True
    #: Options every super-network strategy takes, with their defaults.
    common_options: dict[str, Any] = {
        "space": "layerwise",
        "unit_step": 64,
        "any_heads": False,
        "importance": "fisher",
        "calibration_examples": 256,
        "calibration_batch_size": 32,
        "seed": None,
    }
    #: Options of this strategy only.
    own_options: dict[str, Any] = {}

    def __init__(self, **options: Any) -> None:
        allowed = {**self.common_options, **self.own_options}
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise NaspruneError(f"strategy {self.name!r} has no option(s) {', '.join(unknown)}; "
                                f"it takes {', '.join(sorted(allowed))}")
        self.options = {**allowed, **options}
        o = self.options
        SPACES.check(o["space"])
        if o["importance"] not in (*IMPORTANCE, "none"):
            raise NaspruneError(f"unknown importance method {o['importance']!r}; choose one of "
                                + ", ".join((*IMPORTANCE, "none")))
        for key in ("unit_step", "calibration_examples", "calibration_batch_size"):
            if int(o[key]) < 1:
                raise NaspruneError(f"strategy option {key} must be at least 1")
        self.supernet: Supernet | None = None
        self.space: SearchSpace | None = None
        self.rng = random.Random(0)
        self.last: dict[str, float] = {}  # losses of the last step, for logging

    # ------------------------------------------------------------------ set-up
    def prepare(self, model: torch.nn.Module, train: Encoded, context: TrainContext) -> None:
        super().prepare(model, train, context)
        o = self.options
        self.supernet = Supernet(model)
        self.space = make_space(o["space"], self.supernet.shape, any_heads=bool(o["any_heads"]),
                                unit_step=int(o["unit_step"]))
        seed = context.config.seed if o["seed"] is None else int(o["seed"])
        self.rng = random.Random(seed)
        if o["importance"] != "none":
            calib = subset(train, int(o["calibration_examples"]), seed)
            size = int(o["calibration_batch_size"])
            batches = tracked(iter_batches(calib, size, model, context.pad_id),
                              math.ceil(len(calib) / size), f"importance ({o['importance']})",
                              context.config.progress)
            self.supernet.reorder_by_importance(batches, method=o["importance"])
        model.train()

    def save_extra(self, directory: Path) -> None:
        """``order.json`` (the importance permutation) and ``supernet.json`` (how it was
        trained) in a checkpoint directory that the loop is writing."""
        if self.supernet is None:
            return
        if self.supernet.order is not None:
            write_json(Path(directory) / ORDER_FILE, self.supernet.order)
        write_json(Path(directory) / SUPERNET_FILE, self.describe())

    def describe(self) -> dict:
        info = {"strategy": self.name, "options": dict(self.options)}
        if self.space is not None:
            info["space"] = self.space.describe()
        return info

    # ------------------------------------------------------------ sub-networks
    def _require(self) -> tuple[Supernet, SearchSpace]:
        if self.supernet is None or self.space is None:
            raise NaspruneError(f"strategy {self.name!r} used before prepare()")
        return self.supernet, self.space

    def sample(self) -> Subnet:
        """A uniformly random sub-network of the space."""
        return self._require()[1].sample(self.rng)

    def _sub_backward(self, subnet: Subnet, batch: dict, loss_fn) -> torch.Tensor:
        """Forward and backward of ``subnet`` on ``batch``; ``loss_fn(model, batch)`` ->
        loss; the detached loss stays on the device (no wait per sub-network)."""
        supernet, _ = self._require()
        with supernet.use(subnet) as model:
            return self.loss_backward(lambda: loss_fn(model, batch))


def mean_loss(losses: list[torch.Tensor]) -> float:
    """The mean of the sub-networks' losses as one number (one wait for the device)."""
    return float(torch.stack(losses).mean()) if losses else float("nan")


def label_loss(model, batch) -> torch.Tensor:
    """The task loss on the labels (the model computes it)."""
    return model(**batch).loss


def read_supernet_info(directory: str | Path) -> dict | None:
    """``supernet.json`` of a checkpoint trained as a super-network, else ``None``."""
    path = Path(directory) / SUPERNET_FILE
    return read_json(path, "super-network description") if path.is_file() else None
