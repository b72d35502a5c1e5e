"""The served model: loaded once, then tokenising and classifying batches of inputs.

A batch is run length-sorted in chunks, each padded only to its own longest input, and
``/v1/model`` describes the model without revealing the server's file paths.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nasprune.core.models import positions
from nasprune.errors import NaspruneError
from nasprune.files import read_json_or_none

#: One input: a text, or a text pair (premise, hypothesis).
Item = tuple[str, str | None]


def load_for_inference(model_dir: str | Path, *, threads: int | None = None,
                       device: str = "cpu"):
    """``(model, tokenizer)`` in eval mode from a nasprune export or a plain HF directory.

    ``nasprune.deploy.export.loader.load_model_dir`` decides: a directory holding any of
    nasprune's files is an export, verified whole (checksums, pruned architecture, possibly
    ONNX Runtime) and refused if damaged; only a directory with none of them is loaded
    with ``AutoModelForSequenceClassification.from_pretrained``. ``device``: where it runs
    (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``; refused when this machine lacks it).
    """
    model, tokenizer, _ = _load(model_dir, threads, None, device)
    return model, tokenizer


def _load(model_dir: str | Path, threads: int | None, batch_size: int | None,
          device: str = "cpu"):
    """``load_for_inference`` plus ``{"backend", "precision", "device"}`` (what
    ``/v1/model`` says)."""
    from nasprune.core.models import pick_device
    from nasprune.deploy.export.loader import load_model_dir

    where = pick_device(device)
    loaded = load_model_dir(model_dir, threads=threads, batch_size=batch_size,
                            device=where)  # an Export or a tuple
    model, tokenizer = loaded
    if tokenizer is None:
        raise NaspruneError(f"{Path(model_dir).name} has no tokenizer files; serving needs one")
    model.eval()
    return model, tokenizer, _runtime(loaded, where)


def _runtime(loaded, where) -> dict:
    """The backend, precision and device served, and why that precision (``/v1/model`` and
    the start-up line say it: the card's headline figure may be the other precision's)."""
    quantized = bool(getattr(loaded, "quantized", False))
    if not hasattr(loaded, "manifest"):
        why = "a plain Hugging Face directory"
    elif quantized:
        why = ("the export was made with --quantize int8; its card gives the int8 and "
               "float32 figures")
    else:
        why = "the export has no int8 model"
    return {"backend": getattr(loaded, "backend", "torch"),
            "precision": "int8" if quantized else "float32", "precision_reason": why,
            "device": str(where)}


class Predictor:
    """Tokenise a batch of items and classify it; thread-confined to the worker thread."""

    def __init__(self, model, tokenizer, *, max_length: int = 128, chunk_size: int = 8,
                 model_dir: Path | None = None, runtime: dict | None = None):
        self.model = model
        self.runtime = runtime or {"backend": "torch", "precision": "float32"}
        self._checker, self._check_lock = None, threading.Lock()  # see too_long
        self.tokenizer = tokenizer
        config = model.config
        # Never more tokens than the model has positions (a 500 on long inputs otherwise).
        self.max_length = min(max_length, positions(config, tokenizer))
        self.chunk_size = max(1, chunk_size)
        self.pad_id = int(getattr(tokenizer, "pad_token_id", None) or 0)
        self.model_dir = model_dir
        self.regression = config.problem_type == "regression" or config.num_labels == 1
        id2label = getattr(config, "id2label", None) or {}
        self.labels = [str(id2label.get(i, f"LABEL_{i}")) for i in range(config.num_labels)]

    @classmethod
    def from_dir(cls, model_dir: str | Path, *, max_length: int = 128, chunk_size: int = 8,
                 threads: int | None = None, device: str = "cpu") -> "Predictor":
        # the model sees chunks of chunk_size texts: the backend faster at that size runs
        model, tokenizer, runtime = _load(model_dir, threads, chunk_size, device)
        return cls(model, tokenizer, max_length=max_length, chunk_size=chunk_size,
                   model_dir=Path(model_dir), runtime=runtime)

    def predict(self, items: Sequence[Item]) -> list[dict]:
        """One result per item, in order.

        Items are tokenised unpadded, sorted by length and run in chunks of at most
        ``chunk_size``, each padded only to its own longest input: a batch of mixed
        lengths padded to its longest member wastes most of its compute on padding.
        """
        import torch

        encoded = self._encode(items)
        order = sorted(range(len(items)), key=lambda i: len(encoded[i]["input_ids"]))
        results: list[dict | None] = [None] * len(items)
        with torch.inference_mode():
            for start in range(0, len(order), self.chunk_size):
                chunk = order[start:start + self.chunk_size]
                batch = self._pad([encoded[i] for i in chunk])
                logits = self.model(**batch).logits.float().cpu()
                for row, i in zip(logits, chunk):
                    results[i] = self._result(row)
        return results  # type: ignore[return-value]

    def _encode(self, items: Sequence[Item]) -> list[dict]:
        """Token ids per item; singles and pairs are tokenised in one call each."""
        encoded: list[dict | None] = [None] * len(items)
        singles = [i for i, (_, b) in enumerate(items) if b is None]
        pairs = [i for i, (_, b) in enumerate(items) if b is not None]
        for group, is_pair in ((singles, False), (pairs, True)):
            if not group:
                continue
            first = [items[i][0] for i in group]
            second = [items[i][1] for i in group] if is_pair else None
            enc = self.tokenizer(first, second, truncation=True, max_length=self.max_length)
            for row, i in enumerate(group):
                encoded[i] = {k: enc[k][row] for k in enc.keys()}
        return encoded  # type: ignore[return-value]

    def _pad(self, features: list[dict]) -> dict:
        import torch

        longest = max(len(f["input_ids"]) for f in features)
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        batch = {}
        for key in features[0]:
            fill = self.pad_id if key == "input_ids" else 0
            tensor = torch.full((len(features), longest), fill, dtype=torch.long)
            for row, f in enumerate(features):
                values = torch.tensor(f[key], dtype=torch.long)
                if left:
                    tensor[row, longest - len(values):] = values
                else:
                    tensor[row, :len(values)] = values
            batch[key] = tensor.to(self.model.device)
        return batch

    def _result(self, logits) -> dict:
        """``/v1/predict``'s fields, and ``logits`` (for the Hugging Face-compatible route;
        ``/v1/predict``'s response model leaves them out)."""
        raw = [float(x) for x in logits]
        if self.regression:
            return {"label": None, "label_name": None, "scores": {}, "value": raw[0],
                    "logits": raw}
        probs = logits.softmax(-1).tolist()
        best = max(range(len(probs)), key=probs.__getitem__)
        return {"label": best, "label_name": self.labels[best],
                "scores": dict(zip(self.labels, probs)), "value": None, "logits": raw}

    def too_long(self, texts: Sequence[str]) -> int | None:
        """The index of the first text longer than ``max_length`` tokens, or None.

        Called off the worker thread, so it uses a copy of the tokenizer of its own, under
        a lock: a fast tokenizer is not safe to call from two threads at once."""
        import copy

        with self._check_lock:
            if self._checker is None:
                self._checker = copy.deepcopy(self.tokenizer)
            lengths = [len(ids) for ids in self._checker(list(texts))["input_ids"]]
        return next((i for i, n in enumerate(lengths) if n > self.max_length), None)

    def describe(self) -> dict:
        """What GET /v1/model reports: architecture, sub-network, size, known metric."""
        config = self.model.config
        info: dict[str, Any] = {
            "model_dir": self.model_dir.name if self.model_dir else None,  # never a full path
            "architecture": (getattr(config, "architectures", None) or
                             [type(self.model).__name__])[0],
            "model_type": getattr(config, "model_type", None),
            "backend": self.runtime["backend"],  # torch or onnx
            "precision": self.runtime["precision"],  # float32 or int8
            "precision_reason": self.runtime.get("precision_reason"),
            "device": self.runtime.get("device", "cpu"),
            "num_layers": getattr(config, "num_hidden_layers", None),
            "hidden_size": getattr(config, "hidden_size", None),
            "parameters": int(sum(p.numel() for p in self.model.parameters())),
            "labels": self.labels,
            "problem_type": "regression" if self.regression else "classification",
            "max_length": self.max_length,
            "chunk_size": self.chunk_size,
            "subnet": None,
            "metrics": None,
        }
        if self.model_dir is not None:
            info["subnet"] = _without_paths(read_json_or_none(self.model_dir / "subnet.json"))
            info["metrics"] = _without_paths(read_json_or_none(self.model_dir / "metrics.json"))
        return info


_ABSOLUTE = re.compile(r"^(/|~|[A-Za-z]:[\\/]|\\\\)")


def _without_paths(value):
    """JSON with every absolute path (``/home/...``, ``C:\\...``) cut to its last part.

    ``/v1/model`` is readable by any client; the layout of the server's disk is no
    business of theirs.
    """
    if isinstance(value, str):
        if _ABSOLUTE.match(value):
            return re.split(r"[\\/]", value.rstrip("/\\"))[-1] or value[:1]
        return value
    if isinstance(value, dict):
        return {k: _without_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_paths(v) for v in value]
    return value
