"""``distill``: super-network distillation, *after* standard fine-tuning, from a fixed
teacher (a frozen copy of the fine-tuned model).

Each step the full, the smallest and ``k`` sampled sub-networks learn the teacher's outputs
(``losses.DistillLoss``). With a ``budget`` (the pick's encoder fraction) part of the
samples is drawn within +-10 % of it, so training goes where the user will pick.
``nasprune run`` fine-tunes the teacher first, then runs this strategy.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch

from nasprune.core.subnet import Subnet
from nasprune.errors import NaspruneError
from nasprune.train.losses import DistillLoss
from nasprune.train.strategies.base import mean_loss
from nasprune.train.strategies.sandwich import SandwichStrategy


class DistillStrategy(SandwichStrategy):
    """Super-network distillation from a fixed teacher (see the module docstring).

    Options besides the common ones: ``k`` sampled sub-networks per step, ``smallest``,
    the loss (``temperature``, ``hidden_weight``, ``labels_weight``), ``budget`` (encoder
    fraction to sample around, or ``None``), ``near_budget`` (share of the ``k`` samples
    drawn near it), ``epochs`` (passes over the training set; the pipeline's budget) and
    ``batch_size`` (None: the fine-tuning's; the stage scales the learning rate with it).
    """

    name = "distill"
    label = "super-network distillation"
    needs_teacher = True
    own_options = {"k": 2, "smallest": True, "temperature": 2.0, "hidden_weight": 0.0,
                   "labels_weight": 0.0, "budget": None, "near_budget": 0.5, "epochs": 1.0,
                   "batch_size": None}

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
        if o["batch_size"] is not None and int(o["batch_size"]) < 1:
            raise NaspruneError("strategy option batch_size must be at least 1")
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
        with self.precision.autocast():
            targets = self.loss.targets(self.teacher, batch)
        full = self.loss_backward(lambda: self.loss(model, batch, targets))
        subs = [self._sub_backward(s, batch, lambda m, b: self.loss(m, b, targets))
                for s in self.subnets()]
        self.last = {"full": float(full), "subnets": mean_loss(subs)}
        return self.last["full"]
