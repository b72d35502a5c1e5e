"""Evaluation of a classifier on an encoded split: logits in example order, the task's
metrics plus ``error`` (what the search minimises), and the check that a model learned
something at all."""

from __future__ import annotations

import numpy as np
import torch

from nasprune.core.models import model_device, uses_token_types
from nasprune.data.encode import Encoded, collate
from nasprune.data.presets import TaskPreset
from nasprune.train import metrics as task_metrics
from nasprune.train.precision import autocast


@torch.inference_mode()
def predict(model: torch.nn.Module, encoded: Encoded, batch_size: int = 64,
            device: torch.device | None = None, pad_id: int = 0,
            precision: str = "fp32") -> np.ndarray:
    """Logits in the original example order (batches run sorted by length), computed
    under ``precision``'s autocast (``train.precision``)."""
    device = device or model_device(model)
    was_training = model.training
    model.eval()
    order = np.argsort(encoded.lengths(), kind="stable")
    out = []
    token_types = uses_token_types(model.config)
    for start in range(0, len(order), batch_size):
        batch = collate(encoded, order[start:start + batch_size], pad_id, token_types)
        batch.pop("labels")
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(device, precision):
            logits = model(**batch).logits
        out.append(logits.float().cpu().numpy())
    model.train(was_training)
    logits = np.concatenate(out) if out else np.zeros((0, model.config.num_labels))
    result = np.empty_like(logits)
    result[order] = logits
    return result


def score(preset: TaskPreset, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The preset's metrics plus ``error`` = 1 - headline metric (what search minimises)."""
    predictions = logits[:, 0] if preset.is_regression else logits.argmax(-1)
    values = task_metrics.compute(preset.metrics, predictions, labels)
    values["error"] = 1.0 - values[preset.metric]
    return values


def trivial_reason(preset: TaskPreset, logits: np.ndarray, labels: np.ndarray) -> str | None:
    """Why a model's predictions are no better than knowing nothing, or ``None``.

    Classification: every prediction is the same class, or the accuracy does not beat
    always answering the most frequent class. Regression: constant predictions.
    """
    if preset.is_regression:
        spread = float(np.std(logits[:, 0])) if len(logits) else 0.0
        return "its predictions are constant" if spread < 1e-6 else None
    predictions = logits.argmax(-1)
    if len(set(predictions.tolist())) <= 1:
        return f"it predicts one class ({preset.label_names[int(predictions[0])]!r}) for every " \
               "example"
    majority = np.bincount(labels, minlength=preset.num_labels).max() / max(1, len(labels))
    accuracy = float((predictions == labels).mean())
    if accuracy <= majority:
        return (f"its accuracy {accuracy:.3f} does not beat always predicting the most frequent "
                f"class ({majority:.3f})")
    return None


def evaluate(model, encoded: Encoded, preset: TaskPreset, batch_size: int = 64,
             device: torch.device | None = None, pad_id: int = 0,
             precision: str = "fp32") -> dict[str, float]:
    return score(preset, predict(model, encoded, batch_size, device, pad_id, precision),
                 encoded.labels)
