"""Tokenisation, cached on disk, and dynamic padding: a split becomes ragged token ids
once, and each batch is padded to its own longest example.

Torch is imported only where tensors are made, so reading and checking data never loads it.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from nasprune.files import cache_dir

if TYPE_CHECKING:
    import torch

    from nasprune.data.tasks import TaskData


@dataclass
class Encoded:
    """Token ids per example (ragged); padded per batch by ``batches``."""

    input_ids: list[np.ndarray]
    token_type_ids: list[np.ndarray] | None
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)

    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.input_ids), dtype=np.int64)


def _cache_dir() -> Path:
    return cache_dir("tokens")


def encode(tokenizer, data: TaskData, split: str, max_length: int = 128,
           cache: bool = True) -> Encoded:
    """Tokenise a split once; the result is cached on disk keyed by texts, tokenizer, length."""
    texts = data.texts(split)
    labels = data.labels(split)
    key = hashlib.sha256()
    key.update(repr((type(tokenizer).__name__, tokenizer.name_or_path, len(tokenizer),
                     max_length)).encode())
    for row in texts:
        key.update("\x1f".join(row).encode())
        key.update(b"\x1e")
    path = _cache_dir() / f"{key.hexdigest()[:32]}.npz"
    if cache and path.is_file():
        try:
            with np.load(path) as stored:
                return _unpack(stored, labels)
        except (OSError, ValueError, KeyError):
            pass  # a broken cache entry is rebuilt below
    columns = list(zip(*texts))
    pair = columns[1] if len(columns) > 1 else None
    out = tokenizer(list(columns[0]), list(pair) if pair else None, truncation=True,
                    max_length=max_length, return_token_type_ids=True)
    ids = [np.asarray(x, dtype=np.int32) for x in out["input_ids"]]
    types = [np.asarray(x, dtype=np.int8) for x in out["token_type_ids"]]
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        offsets = np.cumsum([0] + [len(x) for x in ids])
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.{random.getrandbits(32):08x}.npz")
        np.savez(tmp, ids=np.concatenate(ids), types=np.concatenate(types), offsets=offsets)
        os.replace(tmp, path)  # a unique temporary: two processes never share one
    return Encoded(ids, types, labels)


#: The share of training examples a length chosen from the data keeps whole.
LENGTH_PERCENTILE = 99.0


def chosen_max_length(tokenizer, data: TaskData, limit: int,
                      percentile: float = LENGTH_PERCENTILE) -> int:
    """A maximum length from the data, for a run that names none: the ``percentile`` of the
    training split's token lengths, rounded up to a multiple of 8, at most ``limit`` (the
    model's positions). RTE's pairs need ~200 tokens where SST-2's sentences need ~50: one
    fixed length either truncates one task or pads the other."""
    lengths = encode(tokenizer, data, "train", limit).lengths()
    if not len(lengths):
        return min(limit, 128)
    wanted = int(np.ceil(np.percentile(lengths, percentile) / 8.0) * 8)
    return max(8, min(limit, wanted))


def _unpack(stored, labels: np.ndarray) -> Encoded:
    offsets = stored["offsets"]
    ids, types = stored["ids"], stored["types"]
    spans = list(zip(offsets[:-1], offsets[1:]))
    return Encoded([ids[a:b] for a, b in spans], [types[a:b] for a, b in spans], labels)


def collate(encoded: Encoded, indices: Sequence[int], pad_id: int = 0,
            with_token_types: bool = True) -> dict[str, torch.Tensor]:
    """Pad a batch to its own longest example (dynamic padding)."""
    import torch  # here, so that reading and checking data never loads torch
    width = max(len(encoded.input_ids[i]) for i in indices)
    ids = np.full((len(indices), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(indices), width), dtype=np.int64)
    types = np.zeros((len(indices), width), dtype=np.int64)
    for row, i in enumerate(indices):
        n = len(encoded.input_ids[i])
        ids[row, :n] = encoded.input_ids[i]
        mask[row, :n] = 1
        if encoded.token_type_ids is not None:
            types[row, :n] = encoded.token_type_ids[i]
    batch = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
    if with_token_types:
        batch["token_type_ids"] = torch.from_numpy(types)
    label_values = encoded.labels[list(indices)]
    dtype = torch.float32 if label_values.dtype.kind == "f" else torch.long
    batch["labels"] = torch.as_tensor(label_values, dtype=dtype)
    return batch


def batches(encoded: Encoded, batch_size: int, *, shuffle: bool = False, seed: int = 0,
            pad_id: int = 0, with_token_types: bool = True,
            limit: int | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Training order is shuffled; evaluation order is by length, so padding is minimal."""
    order = list(range(len(encoded)))
    if shuffle:
        random.Random(seed).shuffle(order)
    else:
        lengths = encoded.lengths()
        order.sort(key=lambda i: lengths[i])
    if limit is not None:
        order = order[:limit]
    for start in range(0, len(order), batch_size):
        yield collate(encoded, order[start:start + batch_size], pad_id, with_token_types)


def subset(encoded: Encoded, n: int, seed: int = 0) -> Encoded:
    """A fixed random subset of an encoded split (calibration, low-fidelity evaluation)."""
    if n >= len(encoded):
        return encoded
    picked = sorted(random.Random(seed).sample(range(len(encoded)), n))
    types = encoded.token_type_ids
    return Encoded([encoded.input_ids[i] for i in picked],
                   [types[i] for i in picked] if types is not None else None,
                   encoded.labels[picked])


def concat(*parts: Encoded) -> Encoded:
    """One encoded split made of several (e.g. the training texts plus unlabeled ones)."""
    with_types = all(p.token_type_ids is not None for p in parts)
    return Encoded([x for p in parts for x in p.input_ids],
                   [x for p in parts for x in p.token_type_ids] if with_types else None,
                   np.concatenate([p.labels for p in parts]))
