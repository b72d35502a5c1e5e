"""Fine-tuning: a plain PyTorch loop (AdamW, linear warm-up schedule, accumulation).

What happens inside one optimisation step is a ``Strategy`` (``train.strategies``):
``standard`` is one forward and backward of the whole model; super-network strategies
(several sub-networks per batch, distillation) plug in as further strategies without
touching the loop.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from nasprune.config import TrainConfig
from nasprune.config.options import result_options
from nasprune.core.models import pick_device, positions, uses_token_types
from nasprune.data.encode import chosen_max_length, collate, encode
from nasprune.data.tasks import TaskData
from nasprune.files import write_json
from nasprune.progress import ProgressBar
from nasprune.train.batches import grouped_batches
from nasprune.train.evaluation import evaluate
from nasprune.train.optim import adamw
from nasprune.train.precision import Precision
from nasprune.train.resume import (
    STATE_FILE,
    Timer,
    clear_state,
    load_state,
    run_key,
    save_state,
)
from nasprune.train.strategies import make_strategy
from nasprune.train.strategies.base import Strategy, TrainContext


def to_device(batch: dict, device: torch.device) -> dict:
    """A batch on ``device``; to a GPU from pinned memory, without waiting for the copy."""
    if device.type != "cuda":
        return {k: v.to(device) for k, v in batch.items()}
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 else decay).append(param)
    return adamw([{"params": decay, "weight_decay": cfg.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}], lr=cfg.learning_rate)


def linear_warmup(optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning rate rises linearly over ``warmup`` steps, then falls to 0 at ``total``."""
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
    if cfg.max_length is None:  # outside a run (which resolves it first): from the data
        cfg = replace(cfg, max_length=chosen_max_length(
            tokenizer, data, positions(model.config, tokenizer)))
    train_enc = encode(tokenizer, data, "train", cfg.max_length)
    val_enc = encode(tokenizer, data, "validation", cfg.max_length)
    choose_on = data.selection_split  # the best epoch is chosen here, never on validation
    sel_enc = encode(tokenizer, data, choose_on, cfg.max_length) if choose_on != "validation" \
        else val_enc
    strategy = strategy or make_strategy(cfg.fine_tuning_strategy, cfg.strategy_options)
    precision = Precision(cfg.precision, device)
    context = TrainContext(cfg, data.preset, device, pad_id, precision=precision)
    strategy.prepare(model, train_enc, context)

    steps_per_epoch = math.ceil(len(train_enc) / cfg.batch_size)
    total_batches = max(1, int(round(steps_per_epoch * cfg.epochs)))
    total_updates = math.ceil(total_batches / cfg.grad_accum)
    optimizer = _optimizer(model, cfg)
    scheduler = linear_warmup(optimizer, int(cfg.warmup_ratio * total_updates), total_updates)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    key = run_key(result_options(cfg), data.extra.get("config"), len(train_enc),
                  model.config.to_dict(), strategy.label)
    state_file = out_dir / STATE_FILE
    loop = load_state(state_file, key, model, optimizer, scheduler, precision) or {
        "epoch": 0, "done": 0, "seen": 0, "train_seconds": 0.0, "history": [], "best": None}
    history, best = loop["history"], loop["best"]
    seen, train_seconds, done = loop["seen"], loop["train_seconds"], loop["done"]
    epoch_start = loop.get("epoch_start", done)  # ``done`` when the current epoch began
    rng = getattr(strategy, "rng", None)  # a super-network strategy's sampler
    if rng and loop.get("strategy_rng"):
        rng.setstate(loop["strategy_rng"])
    timer = Timer()

    def checkpoint() -> None:
        save_state(state_file, key, model, optimizer, scheduler, precision,
                   {"epoch": epoch, "epoch_start": epoch_start, "done": done, "seen": seen,
                    "history": history, "train_seconds": train_seconds, "best": best,
                    "strategy_rng": rng.getstate() if rng else None})
        timer.reset()

    model.train()
    with ProgressBar(cfg.progress, total_batches, done, strategy.label) as bar:
        epoch = loop["epoch"]
        if done:
            bar.print(f"resumed at step {done} of {total_batches} ({state_file})")
        while done < total_batches:
            groups = grouped_batches(train_enc, cfg.batch_size, cfg.seed + epoch,
                                     cfg.group_by_length)
            skip = done - epoch_start  # batches of this epoch trained before a resume
            for indices in groups[skip: skip + total_batches - done]:
                start = time.perf_counter()
                batch = collate(train_enc, indices, pad_id, token_types)
                batch = to_device(batch, device)
                loss = strategy.backward(model, batch, done / total_batches)
                done += 1
                seen += len(indices)
                stepped = done % cfg.grad_accum == 0 or done == total_batches
                if stepped:
                    precision.step(optimizer, model.parameters())
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                train_seconds += time.perf_counter() - start
                bar.update(done, f"loss {loss:.4f}")
                if stepped and timer.due() and done < epoch_start + len(groups):
                    checkpoint()
            epoch += 1
            epoch_start = done
            scores = evaluate(model, val_enc, data.preset, cfg.eval_batch_size, device, pad_id,
                              cfg.precision)
            record = {"epoch": epoch, **scores}
            chosen = scores
            metric = data.preset.metric
            line = f"epoch {epoch}: validation {metric} {scores[metric]:.4f}"
            if sel_enc is not val_enc:
                chosen = evaluate(model, sel_enc, data.preset, cfg.eval_batch_size, device,
                                  pad_id, cfg.precision)
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
            checkpoint()

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
        "precision": cfg.precision,
        "config": cfg.to_dict(),
        "data": data.extra.get("config"),
    }
    write_json(out_dir / "metrics.json", result)
    clear_state(state_file)
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
