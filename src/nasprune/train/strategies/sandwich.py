"""``sandwich``: the full network, the smallest and ``k`` random sub-networks, all on the
labels, gradients accumulated (Yu & Huang 2019, "sandwich rule")."""

from __future__ import annotations

from typing import Any

import torch

from nasprune.core.subnet import Subnet
from nasprune.errors import NaspruneError
from nasprune.train.strategies.base import SupernetStrategy, label_loss, mean_loss


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
        return label_loss(model, batch)

    def backward(self, model, batch, progress):
        self._require()
        outputs = []

        def forward():
            outputs.append(model(**batch))
            return outputs[0].loss

        full = self.loss_backward(forward)
        teacher = outputs[0].logits.detach()
        subs = [self._sub_backward(s, batch, lambda m, b: self.sub_loss(m, b, teacher))
                for s in self.subnets()]
        self.last = {"full": float(full), "subnets": mean_loss(subs)}
        return self.last["full"]
