"""``standard``: one forward and backward of the whole model on the labels."""

from __future__ import annotations

from nasprune.errors import NaspruneError
from nasprune.train.strategies.base import Strategy


class StandardStrategy(Strategy):
    name = "standard"

    def __init__(self, **options) -> None:
        if options:
            raise NaspruneError(f"strategy 'standard' takes no options, got {sorted(options)}")

    def backward(self, model, batch, progress):
        return float(self.loss_backward(lambda: model(**batch).loss))
