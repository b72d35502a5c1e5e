"""Super-network fine-tuning: train the weights so that every sub-network keeps its accuracy.

Masking a normally fine-tuned model gives poor sub-networks, because no sub-network was
ever trained. These strategies plug into the training loop (``training.STRATEGIES``) and,
at each step, also train sub-networks drawn from the search space the user will search,
through ``Supernet.use()`` (prefix views of the shared weights, so gradients land in the
full model):

- ``sandwich``: the full network, the smallest and ``k`` random sub-networks, all on the
  labels, gradients accumulated (Yu & Huang 2019, "sandwich rule");
- ``sandwich-kd``: the same, but the sub-networks learn from the full network's soft
  predictions (in-place distillation with a temperature; MSE for regression);
- ``random-linear``: one network per step, a random sub-network with a probability that
  grows linearly with training progress, else the full network (the tutorial's baseline);
- ``distill``: *after* standard fine-tuning, from a fixed teacher (a frozen copy of the
  fine-tuned model): each step the full, the smallest and ``k`` sampled sub-networks learn
  the teacher's outputs (``losses.DistillLoss``). With a ``budget`` (the pick's encoder
  fraction) part of the samples is drawn within +-10 % of it, so training goes where the
  user will pick. ``nasprune run`` fine-tunes the teacher first, then runs this strategy.

Before training, ``prepare`` reorders heads and FFN units by importance on a calibration
subset of the training data, so the prefixes that sub-networks keep start out as the most
useful ones; the permutation is written as ``order.json`` next to every saved checkpoint,
with ``supernet.json`` naming the strategy and space (the search must then *not* reorder
again: the weights are trained for this order).
"""

from __future__ import annotations

import copy
import json
import math
import random
from pathlib import Path
from typing import Any

import torch

from nasprune.core.subnet import SPACES, SearchSpace, Subnet, make_space
from nasprune.core.supernet import IMPORTANCE_METHODS, ORDER_FILE, Supernet, model_inputs
from nasprune.data.tasks import Encoded, subset
from nasprune.errors import NaspruneError
from nasprune.train.loop import STRATEGIES, Strategy, TrainContext, iter_batches, write_json
from nasprune.train.losses import DistillLoss, logits_loss

#: Written next to ``order.json``: which strategy and space trained this checkpoint.
SUPERNET_FILE = "supernet.json"


class SupernetStrategy(Strategy):
    """Shared parts: options, importance reordering, the space, sampling, checkpoint files.

    Options (``TrainConfig.strategy_options``): ``space`` (``small``, ``layer``,
    ``layerwise``), ``unit_step`` and ``any_heads`` (as for the search space),
    ``importance`` (``fisher``, ``taylor``, ``magnitude`` or ``none``),
    ``calibration_examples`` and ``calibration_batch_size`` for the importance scores, and
    ``seed`` for sampling (default: the training seed).
    """

    name = "supernet"
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
        if o["space"] not in SPACES:
            raise NaspruneError(f"unknown search space {o['space']!r}; choose one of "
                                + ", ".join(SPACES))
        if o["importance"] not in (*IMPORTANCE_METHODS, "none"):
            raise NaspruneError(f"unknown importance method {o['importance']!r}; choose one of "
                                + ", ".join((*IMPORTANCE_METHODS, "none")))
        for key in ("unit_step", "calibration_examples", "calibration_batch_size"):
            if int(o[key]) < 1:
                raise NaspruneError(f"strategy option {key} must be at least 1")
        self.supernet: Supernet | None = None
        self.space: SearchSpace | None = None
        self.rng = random.Random(0)
        self.last: dict[str, float] = {}  # losses of the last step, for logging

    # ------------------------------------------------------------------ set-up
    def prepare(self, model: torch.nn.Module, train: Encoded, context: TrainContext) -> None:
        o = self.options
        self.supernet = Supernet(model)
        self.space = make_space(o["space"], self.supernet.shape, any_heads=bool(o["any_heads"]),
                                unit_step=int(o["unit_step"]))
        seed = context.config.seed if o["seed"] is None else int(o["seed"])
        self.rng = random.Random(seed)
        if o["importance"] != "none":
            calib = subset(train, int(o["calibration_examples"]), seed)
            batches = iter_batches(calib, int(o["calibration_batch_size"]), model,
                                   context.pad_id)
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

    def _sub_backward(self, subnet: Subnet, batch: dict, loss_fn) -> float:
        """Forward and backward of ``subnet`` on ``batch``; ``loss_fn(output)`` -> loss."""
        supernet, _ = self._require()
        with supernet.use(subnet) as model:
            loss = loss_fn(model, batch)
            loss.backward()
        return float(loss.detach())


def _label_loss(model, batch) -> torch.Tensor:
    return model(**batch).loss


class SandwichStrategy(SupernetStrategy):
    """Each step: the full network, the smallest and ``k`` random sub-networks, summed.

    Option ``smallest`` (default true) trains the space's smallest sub-network each step.
    """

    name = "sandwich"
    own_options = {"k": 2, "smallest": True}

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        if int(self.options["k"]) < 0:
            raise NaspruneError("strategy option k must be at least 0")

    def subnets(self) -> list[Subnet]:
        """The sub-networks of one step (besides the full network)."""
        _, space = self._require()
        picked = [space.smallest()] if self.options["smallest"] else []
        return picked + [self.sample() for _ in range(int(self.options["k"]))]

    def sub_loss(self, model, batch: dict, teacher: torch.Tensor) -> torch.Tensor:
        return _label_loss(model, batch)

    def backward(self, model, batch, progress):
        self._require()
        out = model(**batch)
        out.loss.backward()
        teacher = out.logits.detach()
        full = float(out.loss.detach())
        subs = [self._sub_backward(s, batch, lambda m, b: self.sub_loss(m, b, teacher))
                for s in self.subnets()]
        self.last = {"full": full, "subnets": sum(subs) / len(subs) if subs else float("nan")}
        return full


class SandwichKDStrategy(SandwichStrategy):
    """The sandwich rule with in-place distillation: sub-networks match the full network's
    soft predictions at ``temperature``; ``alpha`` mixes in the labels loss (default 0)."""

    name = "sandwich-kd"
    own_options = {"k": 2, "smallest": True, "temperature": 1.0, "alpha": 0.0}

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        if float(self.options["temperature"]) <= 0:
            raise NaspruneError("strategy option temperature must be positive")
        if not 0.0 <= float(self.options["alpha"]) <= 1.0:
            raise NaspruneError("strategy option alpha must be in [0, 1]")

    def sub_loss(self, model, batch, teacher):
        alpha = float(self.options["alpha"])
        out = model(**batch) if alpha else model(**model_inputs(batch))
        loss = logits_loss(out.logits, teacher, float(self.options["temperature"]))
        if alpha:
            loss = (1.0 - alpha) * loss + alpha * out.loss
        return loss


class RandomLinearStrategy(SupernetStrategy):
    """One network per step: a random sub-network with probability ``progress *
    max_probability`` (rising linearly over training), else the full network."""

    name = "random-linear"
    own_options = {"max_probability": 1.0}

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        if not 0.0 <= float(self.options["max_probability"]) <= 1.0:
            raise NaspruneError("strategy option max_probability must be in [0, 1]")

    def probability(self, progress: float) -> float:
        return min(1.0, max(0.0, progress)) * float(self.options["max_probability"])

    def backward(self, model, batch, progress):
        self._require()
        if self.rng.random() < self.probability(progress):
            loss = self._sub_backward(self.sample(), batch, _label_loss)
            self.last = {"subnet": loss}
            return loss
        loss = model(**batch).loss
        loss.backward()
        self.last = {"full": float(loss.detach())}
        return float(loss.detach())


class DistillStrategy(SandwichStrategy):
    """Super-network distillation from a fixed teacher (see the module docstring).

    Options besides the common ones: ``k`` sampled sub-networks per step, ``smallest``,
    the loss (``temperature``, ``hidden_weight``, ``labels_weight``), ``budget`` (encoder
    fraction to sample around, or ``None``), ``near_budget`` (share of the ``k`` samples
    drawn near it) and ``epochs`` (passes over the training set; the pipeline's budget).
    """

    name = "distill"
    needs_teacher = True
    own_options = {"k": 2, "smallest": True, "temperature": 2.0, "hidden_weight": 0.0,
                   "labels_weight": 0.0, "budget": None, "near_budget": 0.5, "epochs": 1.0}

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        o = self.options
        self.loss = DistillLoss(temperature=float(o["temperature"]),
                                hidden_weight=float(o["hidden_weight"]),
                                labels_weight=float(o["labels_weight"]))
        if o["budget"] is not None and not 0 < float(o["budget"]) <= 1:
            raise NaspruneError("strategy option budget must be an encoder fraction in (0, 1]")
        if not 0 <= float(o["near_budget"]) <= 1 or float(o["epochs"]) <= 0:
            raise NaspruneError("strategy options: near_budget in [0, 1], epochs > 0")
        self.teacher: torch.nn.Module | None = None

    def prepare(self, model, train, context):
        super().prepare(model, train, context)  # reorders first: the teacher is the same
        self.teacher = copy.deepcopy(model).eval()  # function in the same order
        for param in self.teacher.parameters():
            param.requires_grad_(False)

    def subnets(self) -> list[Subnet]:
        _, space = self._require()
        o = self.options
        k = int(o["k"])
        near = math.ceil(k * float(o["near_budget"])) if o["budget"] is not None else 0
        picked = [space.smallest()] if o["smallest"] else []
        picked += [space.sample_budget(self.rng, float(o["budget"])) for _ in range(near)]
        return picked + [self.sample() for _ in range(k - near)]

    def backward(self, model, batch, progress):
        supernet, _ = self._require()
        assert self.teacher is not None
        targets = self.loss.targets(self.teacher, batch)
        full = self.loss(model, batch, targets)
        full.backward()
        subs = [self._sub_backward(s, batch, lambda m, b: self.loss(m, b, targets))
                for s in self.subnets()]
        self.last = {"full": float(full.detach()),
                     "subnets": sum(subs) / len(subs) if subs else float("nan")}
        return float(full.detach())


SUPERNET_STRATEGIES = {
    cls.name: cls
    for cls in (SandwichStrategy, SandwichKDStrategy, RandomLinearStrategy, DistillStrategy)
}
STRATEGIES.update(SUPERNET_STRATEGIES)


def read_supernet_info(directory: str | Path) -> dict | None:
    """``supernet.json`` of a checkpoint trained as a super-network, else ``None``."""
    path = Path(directory) / SUPERNET_FILE
    return json.loads(path.read_text()) if path.is_file() else None
