"""``sandwich-kd``: the sandwich rule, but the sub-networks learn from the full network's
soft predictions (in-place distillation with a temperature; MSE for regression)."""

from __future__ import annotations

from typing import Any

from nasprune.core.models import model_inputs
from nasprune.errors import NaspruneError
from nasprune.train.losses import logits_loss
from nasprune.train.strategies.sandwich import SandwichStrategy


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
