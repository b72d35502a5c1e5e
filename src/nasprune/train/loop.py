"""Fine-tuning: a plain PyTorch loop (AdamW, linear warm-up schedule, accumulation).

What happens inside one optimisation step is a ``Strategy``: ``standard`` is one forward
and backward of the whole model; super-network strategies (several sub-networks per batch,
distillation) plug in as further strategies without touching the loop.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from nasprune.config import TrainConfig
from nasprune.core.models import pick_device, uses_token_types
from nasprune.data.tasks import Encoded, TaskData, TaskPreset, batches, collate, encode
from nasprune.errors import NaspruneError
from nasprune.files import write_json
from nasprune.progress import ProgressBar
from nasprune.train import metrics as task_metrics

# --------------------------------------------------------------------------- strategies


class Strategy:
    """One optimisation step's forward/backward; the loop owns optimiser and schedule."""

    name = "abstract"

    def prepare(self, model: torch.nn.Module, train: Encoded, context: TrainContext) -> None:
        """Called once before training (e.g. importance reordering for a super-network)."""

    def backward(self, model: torch.nn.Module, batch: dict, progress: float) -> float:
        """Compute the loss(es) of ``batch``, call ``backward``; return the loss to log.

        ``progress`` runs from 0 to 1 over training (for schedules such as random-linear).
        """
        raise NotImplementedError

    def save_extra(self, directory: Path) -> None:
        """Add files to a checkpoint being saved (e.g. a super-network's order.json)."""


class StandardStrategy(Strategy):
    name = "standard"

    def __init__(self, **options) -> None:
        if options:
            raise NaspruneError(f"strategy 'standard' takes no options, got {sorted(options)}")

    def backward(self, model, batch, progress):
        loss = model(**batch).loss
        loss.backward()
        return float(loss.detach())


#: Name -> factory(**options). Super-network strategies register themselves here.
STRATEGIES: dict[str, Callable[..., Strategy]] = {"standard": StandardStrategy}


def strategy_class(name: str) -> Callable[..., Strategy]:
    import nasprune.train.strategies  # noqa: F401  (super-network strategies register on import)

    if name not in STRATEGIES:
        raise NaspruneError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name]


def needs_teacher(name: str) -> bool:
    """Strategies that run after standard fine-tuning, with its model as a fixed teacher."""
    return bool(getattr(strategy_class(name), "needs_teacher", False))


def make_strategy(name: str, options: dict) -> Strategy:
    return strategy_class(name)(**options)


# --------------------------------------------------------------------------- evaluation


@torch.inference_mode()
def predict(model: torch.nn.Module, encoded: Encoded, batch_size: int = 64,
            device: torch.device | None = None, pad_id: int = 0) -> np.ndarray:
    """Logits in the original example order (batches run sorted by length)."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    order = np.argsort(encoded.lengths(), kind="stable")
    out = []
    token_types = uses_token_types(model.config)
    for start in range(0, len(order), batch_size):
        batch = collate(encoded, order[start:start + batch_size], pad_id, token_types)
        batch.pop("labels")
        batch = {k: v.to(device) for k, v in batch.items()}
        out.append(model(**batch).logits.float().cpu().numpy())
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
             device: torch.device | None = None, pad_id: int = 0) -> dict[str, float]:
    return score(preset, predict(model, encoded, batch_size, device, pad_id), encoded.labels)


# --------------------------------------------------------------------------- training


@dataclass
class TrainContext:
    """What a strategy may need besides the batch."""

    config: TrainConfig
    preset: TaskPreset
    device: torch.device
    pad_id: int
    extra: dict = field(default_factory=dict)


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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


def _optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 else decay).append(param)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.learning_rate,
    )


def _linear_warmup(optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train(model, tokenizer, data: TaskData, cfg: TrainConfig, out_dir: str | Path,
          strategy: Strategy | None = None,
          on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Train, evaluate after each epoch, keep the best checkpoint in ``out_dir``.

    The best epoch is chosen on ``data.selection_split`` (the search split when the data
    has one); the validation scores of each epoch are recorded beside it, for reporting
    only. Returns the record also written to ``out_dir/metrics.json``: ``best`` and each
    ``history`` entry hold the validation scores at the top level and the search split's
    under ``"search"``.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    set_seed(cfg.seed)
    device = pick_device(cfg.device)
    model.to(device)
    pad_id = tokenizer.pad_token_id or 0
    token_types = uses_token_types(model.config)
    train_enc = encode(tokenizer, data, "train", cfg.max_length)
    val_enc = encode(tokenizer, data, "validation", cfg.max_length)
    choose_on = data.selection_split  # the best epoch is chosen here, never on validation
    sel_enc = encode(tokenizer, data, choose_on, cfg.max_length) if choose_on != "validation" \
        else val_enc
    strategy = strategy or make_strategy(cfg.strategy, cfg.strategy_options)
    context = TrainContext(cfg, data.preset, device, pad_id)
    strategy.prepare(model, train_enc, context)

    steps_per_epoch = math.ceil(len(train_enc) / cfg.batch_size)
    total_batches = max(1, int(round(steps_per_epoch * cfg.epochs)))
    total_updates = math.ceil(total_batches / cfg.grad_accum)
    optimizer = _optimizer(model, cfg)
    scheduler = _linear_warmup(optimizer, int(cfg.warmup_ratio * total_updates), total_updates)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    history: list[dict] = []
    best: dict | None = None
    seen, train_seconds, done = 0, 0.0, 0
    model.train()
    with ProgressBar(cfg.progress, total_batches, 0, "fine-tuning") as bar:
        epoch = 0
        while done < total_batches:
            groups = grouped_batches(train_enc, cfg.batch_size, cfg.seed + epoch,
                                     cfg.group_by_length)
            start = time.perf_counter()
            for indices in groups[: total_batches - done]:
                batch = collate(train_enc, indices, pad_id, token_types)
                batch = {k: v.to(device) for k, v in batch.items()}
                loss = strategy.backward(model, batch, done / total_batches)
                done += 1
                seen += len(indices)
                if done % cfg.grad_accum == 0 or done == total_batches:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                bar.update(done, f"loss {loss:.4f}")
            train_seconds += time.perf_counter() - start
            epoch += 1
            scores = evaluate(model, val_enc, data.preset, cfg.eval_batch_size, device, pad_id)
            record = {"epoch": epoch, **scores}
            chosen = scores
            metric = data.preset.metric
            line = f"epoch {epoch}: validation {metric} {scores[metric]:.4f}"
            if sel_enc is not val_enc:
                chosen = evaluate(model, sel_enc, data.preset, cfg.eval_batch_size, device,
                                  pad_id)
                record[choose_on] = chosen
                line = f"epoch {epoch}: {choose_on} {metric} {chosen[metric]:.4f}, " + line[
                    len(f"epoch {epoch}: "):]
            model.train()
            history.append(record)
            bar.print(line)
            if best is None or chosen["error"] < best.get(choose_on, best)["error"]:
                best = record
                save_model(model, tokenizer, out_dir / "model", strategy.save_extra)
            if on_epoch:
                on_epoch(record)

    result = {
        "task": data.preset.name,
        "metric": data.preset.metric,
        "best": best,
        "history": history,
        "selected_on": choose_on,
        "train_examples": len(train_enc),
        "search_examples": len(sel_enc) if sel_enc is not val_enc else 0,
        "validation_examples": len(val_enc),
        "examples_per_second": seen / train_seconds if train_seconds else None,
        "train_seconds": train_seconds,
        "device": str(device),
        "config": cfg.to_dict(),
        "data": data.extra.get("config"),
    }
    write_json(out_dir / "metrics.json", result)
    return result


def save_model(model, tokenizer, directory: Path,
               extra: Callable[[Path], None] | None = None) -> None:
    """Write a Hugging Face directory atomically: a crash never leaves half a checkpoint."""
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if extra is not None:
        extra(tmp)
    shutil.rmtree(directory, ignore_errors=True)
    os.replace(tmp, directory)


def iter_batches(encoded: Encoded, batch_size: int, model, pad_id: int = 0,
                 limit: int | None = None) -> Iterable[dict]:
    """Length-sorted evaluation/calibration batches with the model's input names."""
    return batches(encoded, batch_size, pad_id=pad_id,
                   with_token_types=uses_token_types(model.config),
                   limit=limit)


def load_classifier(model_name: str, preset: TaskPreset):
    """A sequence classifier with the task's labels (a new head on a plain encoder)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from nasprune.core.models import load_pretrained

    tokenizer = load_pretrained(AutoTokenizer, model_name)
    kwargs = {"num_labels": preset.num_labels}
    if preset.is_regression:
        kwargs["problem_type"] = "regression"
    else:
        kwargs["id2label"] = dict(enumerate(preset.label_names))
        kwargs["label2id"] = {n: i for i, n in enumerate(preset.label_names)}
    model = load_pretrained(AutoModelForSequenceClassification, model_name, **kwargs)
    return model, tokenizer


def finetune(model_name: str, data: TaskData, cfg: TrainConfig, out_dir: str | Path) -> dict:
    """Fine-tune ``model_name`` on ``data``; the best checkpoint lands in ``out_dir/model``."""
    model, tokenizer = load_classifier(model_name, data.preset)
    result = train(model, tokenizer, data, cfg, out_dir)
    result["model"] = model_name
    write_json(Path(out_dir) / "metrics.json", result)
    return result
