"""``random-linear``: one network per step, a random sub-network with a probability that
grows linearly with training progress, else the full network (the tutorial's baseline)."""

from __future__ import annotations

from typing import Any

from nasprune.errors import NaspruneError
from nasprune.train.strategies.base import SupernetStrategy, label_loss


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
            loss = float(self._sub_backward(self.sample(), batch, label_loss))
            self.last = {"subnet": loss}
            return loss
        loss = float(self.loss_backward(lambda: model(**batch).loss))
        self.last = {"full": loss}
        return loss
