"""Distillation recovery: the extracted sub-network learns the fixed teacher's outputs
(``losses.DistillLoss``) for a few epochs of the training texts, plus any unlabeled
in-domain texts, keeping the epoch that scores best on the search split."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from nasprune.core.models import model_device, uses_token_types
from nasprune.data.encode import Encoded, collate, concat
from nasprune.progress import ProgressBar
from nasprune.train.batches import grouped_batches
from nasprune.train.evaluation import predict
from nasprune.train.loop import linear_warmup
from nasprune.train.losses import DistillLoss, Targets
from nasprune.train.optim import adamw
from nasprune.train.precision import Precision
from nasprune.train.recovery.recover import RecoveryRun, Selection
from nasprune.train.resume import clear_state, load_state, run_key, save_state


def distill_method(run: RecoveryRun) -> None:
    """The ``distill`` recovery method (no step at all with 0 epochs)."""
    cfg = run.config
    if not cfg.epochs:
        return
    data = run.train if run.unlabeled is None else concat(run.train, run.unlabeled)
    info = distill(run.small, run.full, data, loss=cfg.loss(), epochs=cfg.epochs,
                   batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
                   warmup_ratio=cfg.warmup_ratio, seed=cfg.seed, pad_id=run.pad_id,
                   select=run.select, progress=run.progress, state_file=run.state_file,
                   precision=cfg.precision)
    run.record({"step": "distill", "examples": len(data), **info})


def distill(student: nn.Module, teacher: nn.Module, train: Encoded, *,
            loss: DistillLoss | None = None, epochs: float = 3.0, batch_size: int = 16,
            learning_rate: float = 5e-5, warmup_ratio: float = 0.1, seed: int = 0,
            pad_id: int = 0, select: Callable[[nn.Module], float] | None = None,
            progress: bool = False, state_file: Path | None = None,
            precision: str = "fp32") -> dict:
    """Train ``student`` for ``epochs`` passes over ``train`` on the frozen ``teacher``'s
    outputs (``loss``, logits only by default).

    ``select(student)`` is called before training and after every epoch and returns the
    error (the search split's in the pipeline, so the validation set never stops
    training) or a ``Selection`` (error, distillation loss, examples); the best epoch is
    kept (``Selection.better``: on a small split, errors within one example are a tie,
    broken by the loss against the teacher). With a logits-only loss the teacher's logits
    are computed once for all of ``train`` (the teacher is frozen, so they never change).
    With ``state_file`` a stopped run continues after its last finished epoch
    (``train.resume``). ``precision``: forward passes under its autocast
    (``train.precision``).
    """
    loss = loss or DistillLoss()
    steps_per_epoch = math.ceil(len(train) / batch_size)
    steps = max(0, int(round(epochs * steps_per_epoch)))
    if steps == 0:
        return {"steps": 0, "epochs": []}
    device = model_device(student)
    amp = Precision(precision, device)
    token_types = uses_token_types(student.config)
    modes = student.training, teacher.training
    teacher.eval()
    cached = None if loss.needs_hidden else torch.from_numpy(
        predict(teacher, train, 64, model_device(teacher), pad_id, precision))
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = adamw(params, lr=learning_rate, weight_decay=0.01)
    schedule = linear_warmup(optimizer, int(warmup_ratio * steps), steps)
    history: list[dict] = []
    best, best_state = None, None

    def checkpoint(epoch: int, losses: list[float]) -> None:
        nonlocal best, best_state
        record = {"epoch": epoch, "step": done}
        if losses:
            record["loss"] = sum(losses) / len(losses)
        if select is not None:
            chosen = Selection.of(select(student))
            student.train()
            record.update(chosen.to_dict())
            if chosen.better(best):
                best = chosen
                best_state = {k: v.detach().clone() for k, v in student.state_dict().items()}
        history.append(record)

    done, epoch = 0, 0
    torch.manual_seed(seed)
    key = run_key(len(train), epochs, batch_size, learning_rate, warmup_ratio, seed,
                  student.config.to_dict(), type(loss).__name__, vars(loss), precision)
    resumed = state_file and load_state(state_file, key, student, optimizer, schedule, amp)
    try:
        if resumed:
            done, epoch, history = resumed["done"], resumed["epoch"], resumed["history"]
            best, best_state = Selection.of(resumed["best"]), resumed["best_state"]
        else:
            checkpoint(0, [])
        student.train()
        with ProgressBar(progress, steps, done, "recovery (distillation)") as bar:
            while done < steps:
                losses = []
                for indices in grouped_batches(train, batch_size, seed + epoch):
                    if done >= steps:
                        break
                    batch = {k: v.to(device) for k, v in
                             collate(train, indices, pad_id, token_types).items()}
                    with amp.autocast():
                        targets = (Targets(cached[indices].to(device)) if cached is not None
                                   else loss.targets(teacher, batch))
                        value = loss(student, batch, targets)
                    amp.backward(value)
                    amp.step(optimizer, params)
                    schedule.step()
                    optimizer.zero_grad(set_to_none=True)
                    losses.append(float(value.detach()))
                    done += 1
                    bar.update(done, f"loss {losses[-1]:.4f}")
                epoch += 1
                checkpoint(epoch, losses)
                if state_file:
                    save_state(state_file, key, student, optimizer, schedule, amp,
                               {"done": done, "epoch": epoch, "history": history,
                                "best": best and best.to_dict(), "best_state": best_state})
        if best_state is not None:
            student.load_state_dict(best_state)
    finally:
        student.train(modes[0])
        teacher.train(modes[1])
    if state_file:
        clear_state(state_file)
    kept = next((h for h in history if best is not None and h.get("error") == best.error
                 and h.get("search_distill_loss") == best.loss), None)
    return {"steps": done, "epochs": history,
            "best_epoch": kept["epoch"] if kept else epoch,
            "selection": close_call(history, kept)}


def close_call(history: list[dict], kept: dict | None) -> dict | None:
    """Whether the kept epoch won by at most one example of the split (a close call the
    summary shows), and over which epochs."""
    if kept is None or not kept.get("examples"):
        return None
    step = 1 / kept["examples"]
    rivals = [h["epoch"] for h in history if "error" in h and h is not kept
              and abs(h["error"] - kept["error"]) <= step + 1e-9]
    return {"within_one_example_of": rivals, "examples": kept["examples"],
            "by": "search-split distillation loss" if rivals else "error"}
