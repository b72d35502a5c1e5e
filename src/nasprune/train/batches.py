"""Which examples go into which batch: random batches of similar length for training, and
length-sorted batches with the model's input names for evaluation and calibration."""

from __future__ import annotations

import random
from collections.abc import Iterable

from nasprune.core.models import uses_token_types
from nasprune.data.encode import Encoded, batches


def grouped_batches(encoded: Encoded, batch_size: int, seed: int,
                    group_by_length: bool = True) -> list[list[int]]:
    """Random batches of similar length: far less padding, same randomness across epochs."""
    rng = random.Random(seed)
    order = list(range(len(encoded)))
    rng.shuffle(order)
    if not group_by_length:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    lengths = encoded.lengths()
    chunk = batch_size * 50
    groups = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start:start + chunk], key=lambda i: lengths[i])
        groups += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    rng.shuffle(groups)
    return groups


def iter_batches(encoded: Encoded, batch_size: int, model, pad_id: int = 0,
                 limit: int | None = None) -> Iterable[dict]:
    """Length-sorted evaluation/calibration batches with the model's input names."""
    return batches(encoded, batch_size, pad_id=pad_id,
                   with_token_types=uses_token_types(model.config),
                   limit=limit)
