"""Recovery for the picked sub-network: win back accuracy lost to pruning, shapes unchanged.

Two light steps, each optional, applied to the *extracted* (physically smaller) model with
the full model as reference:

- ``least_squares``: retraining-free. Layer by layer, the output projection of the kept
  heads (attention output) and of the kept FFN units (FFN output) is refitted by ridge
  regression so that the sub-network's pre-LayerNorm activations match the full model's
  on a calibration set (the residual stream's own error is folded into the target, so
  later layers also compensate for earlier ones). In the spirit of Kwon et al. 2022 ("A
  fast post-training pruning framework for transformers"), which rescales masks by least
  squares; here the whole output weight of the kept parts is refitted. A block whose fit
  does not lower its error keeps its weights.
- ``distill`` (the default): training of the sub-network on the fixed teacher's outputs
  (``losses.DistillLoss``) for a few epochs of the training texts, plus any unlabeled
  in-domain texts, keeping the epoch that scores best on the search split.

Neither step changes a shape: only the values of existing weights are written.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from nasprune.choices import RECOVERY
from nasprune.core.adapters import get_adapter
from nasprune.core.models import uses_token_types
from nasprune.core.subnet import Subnet
from nasprune.core.supernet import model_inputs, subnet_of
from nasprune.data.tasks import Encoded, TaskPreset, collate, concat, subset
from nasprune.errors import NaspruneError
from nasprune.progress import ProgressBar
from nasprune.train.loop import evaluate, grouped_batches, iter_batches
from nasprune.train.losses import DistillLoss, Targets

METHODS = RECOVERY


@dataclass
class RecoveryConfig:
    """What recovery does; saved with the export so it can be repeated."""

    method: str = "distill"
    calibration_examples: int = 256
    calibration_batch_size: int = 32
    ridge: float = 1e-3  # relative to the mean diagonal of the Gram matrix
    epochs: float = 3.0  # distillation passes over the training texts
    batch_size: int = 16
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    temperature: float = 2.0
    hidden_weight: float = 0.0  # layer-output MSE (losses.DistillLoss)
    labels_weight: float = 0.0  # the task loss on the labels
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise NaspruneError(f"unknown recovery method {self.method!r}; choose one of "
                                + ", ".join(METHODS))
        for name in ("calibration_examples", "calibration_batch_size", "batch_size"):
            if getattr(self, name) < 1:
                raise NaspruneError(f"recovery {name.replace('_', '-')} must be at least 1")
        if self.epochs < 0 or self.ridge < 0:
            raise NaspruneError("recovery epochs and ridge must be >= 0")
        self.loss()  # checks temperature and weights

    def loss(self) -> DistillLoss:
        return DistillLoss(temperature=self.temperature, hidden_weight=self.hidden_weight,
                           labels_weight=self.labels_weight)

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- helpers


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(p.shape) for name, p in model.state_dict().items()}


def _capture_input(store: dict, key: str):
    def hook(module, args):
        store[key] = args[0].detach()
    return hook


def _capture_io(store: dict, key: str):
    def hook(module, args, output):
        store[key + "_in"] = args[0].detach()
        store[key + "_out"] = output.detach()
    return hook


@torch.no_grad()
def logits_mse(small: nn.Module, full: nn.Module, batches: Iterable[Mapping[str, Any]]) -> float:
    """Mean squared difference of the two models' logits (the calibration error that
    recovery lowers)."""
    total, count = 0.0, 0
    for batch in batches:
        a = small(**model_inputs(batch, _device(small))).logits.double()
        b = full(**model_inputs(batch, _device(full))).logits.double().to(a.device)
        total += float(((a - b) ** 2).sum())
        count += a.numel()
    return total / max(1, count)


# --------------------------------------------------------------------- least squares


@dataclass
class BlockFit:
    """One refitted output projection: relative squared error of its pre-LayerNorm target
    before and after, and whether the new weights were kept."""

    layer: int
    block: str  # "attention" or "ffn"
    kept: int  # heads or units
    error_before: float
    error_after: float
    applied: bool


@torch.no_grad()
def least_squares_correction(small: nn.Module, full: nn.Module,
                             batches: list[Mapping[str, Any]], *, ridge: float = 1e-3,
                             subnet: Subnet | None = None) -> list[BlockFit]:
    """Refit the output weights of the kept heads and units of ``small`` in place.

    For each kept block in order (layer 0 attention, layer 0 FFN, layer 1 ...) the
    calibration ``batches`` run through both models; with ``X`` the kept heads' context
    vectors (or kept units' activations) in ``small``, ``R`` its residual input and ``Z``
    the full model's pre-LayerNorm activation at the same place, ``[W b]`` minimises
    ``|X W^T + b - (Z - R)|^2 + ridge * |W|^2`` over the non-padding tokens. Both models
    run in eval mode. Returns one ``BlockFit`` per block.
    """
    subnet = subnet or subnet_of(small)
    if subnet is None:
        raise NaspruneError("the small model does not say which sub-network it is "
                            "(no nasprune_subnet in its config); pass subnet=")
    sa, fa = get_adapter(small), get_adapter(full)
    subnet.validate(fa.shape)
    modes = small.training, full.training
    small.eval()
    full.eval()
    blocks = [(i, block, kept, out_name, norm_name)
              for i, (h, u) in enumerate(subnet.layers)
              for block, kept, out_name, norm_name in (("attention", h, "attn_out", "attn_norm"),
                                                       ("ffn", u, "ffn_out", "ffn_norm"))
              if kept]
    fits = []
    try:
        targets = _full_activations(full, [getattr(fa, b[4])(b[0]) for b in blocks], batches)
        for j, (i, block, kept, out_name, norm_name) in enumerate(blocks):
            fit = _fit_block(small, getattr(sa, out_name)(i), getattr(sa, norm_name)(i),
                             batches, [t[j] for t in targets], ridge)
            fits.append(BlockFit(i, block, kept, *fit))
    finally:
        small.train(modes[0])
        full.train(modes[1])
    return fits


def _tokens(batch) -> torch.Tensor:
    return batch["attention_mask"].bool().reshape(-1).cpu()


def _full_activations(full, norms, batches) -> list[list[torch.Tensor]]:
    """Per batch, per norm: the full model's pre-LayerNorm activations at real tokens
    (one pass of the full model instead of one per block)."""
    store: dict[str, torch.Tensor] = {}
    handles = [norm.register_forward_pre_hook(_capture_input(store, str(j)))
               for j, norm in enumerate(norms)]
    out = []
    try:
        for batch in batches:
            store.clear()
            full(**model_inputs(batch, _device(full)))
            keep = _tokens(batch)
            out.append([store[str(j)].reshape(keep.numel(), -1).float().cpu()[keep]
                        for j in range(len(norms))])
    finally:
        for handle in handles:
            handle.remove()
    return out


def _fit_block(small, lin: nn.Linear, small_norm, batches, targets, ridge):
    k, hidden = lin.in_features, lin.out_features
    has_bias = lin.bias is not None
    n = k + int(has_bias)
    gram = torch.zeros(n, n, dtype=torch.float64)
    cross = torch.zeros(n, hidden, dtype=torch.float64)
    target_sq = 0.0
    store: dict[str, torch.Tensor] = {}
    handles = [lin.register_forward_hook(_capture_io(store, "lin")),
               small_norm.register_forward_pre_hook(_capture_input(store, "small"))]
    try:
        for batch, full_act in zip(batches, targets):
            store.clear()
            small(**model_inputs(batch, _device(small)))
            keep = _tokens(batch)
            x = store["lin_in"].reshape(-1, k).double().cpu()[keep]
            residual = (store["small"] - store["lin_out"]).reshape(-1, hidden)
            target = full_act.double() - residual.double().cpu()[keep]
            if has_bias:
                x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
            gram += x.T @ x
            cross += x.T @ target
            target_sq += float((target**2).sum())
    finally:
        for handle in handles:
            handle.remove()
    old = lin.weight.detach().double().cpu().T
    if has_bias:
        old = torch.cat([old, lin.bias.detach().double().cpu()[None]], 0)

    def error(w):  # |A w - T|^2 from the accumulated moments, relative to |T|^2
        value = float((w * (gram @ w)).sum() - 2 * (w * cross).sum()) + target_sq
        return max(0.0, value) / max(target_sq, 1e-30)

    reg = torch.zeros(n, dtype=torch.float64)
    reg[:k] = ridge * float(gram.diagonal()[:k].mean()) + 1e-12
    try:
        new = torch.linalg.solve(gram + torch.diag(reg), cross)
    except RuntimeError:  # singular even with the ridge: keep the weights
        new = old
    before, after = error(old), error(new)
    applied = bool(np.isfinite(after)) and after < before
    if applied:
        dtype = lin.weight.dtype
        lin.weight.copy_(new[:k].T.to(dtype).to(lin.weight.device))
        if has_bias:
            lin.bias.copy_(new[k].to(dtype).to(lin.bias.device))
    return before, min(after, before) if applied else before, applied


# ----------------------------------------------------------------------- distillation


def distill(student: nn.Module, teacher: nn.Module, train: Encoded, *,
            loss: DistillLoss | None = None, epochs: float = 3.0, batch_size: int = 16,
            learning_rate: float = 5e-5, warmup_ratio: float = 0.1, seed: int = 0,
            pad_id: int = 0, select: Callable[[nn.Module], float] | None = None,
            progress: bool = False) -> dict:
    """Train ``student`` for ``epochs`` passes over ``train`` on the frozen ``teacher``'s
    outputs (``loss``, logits only by default).

    ``select(student) -> error`` is called before training and after every epoch; the
    weights with the lowest error are kept (the search split's error in the pipeline, so
    the validation set never stops training). With a logits-only loss the teacher's logits
    are computed once for all of ``train`` (the teacher is frozen, so they never change).
    """
    from nasprune.train.loop import predict

    loss = loss or DistillLoss()
    steps_per_epoch = math.ceil(len(train) / batch_size)
    steps = max(0, int(round(epochs * steps_per_epoch)))
    if steps == 0:
        return {"steps": 0, "epochs": []}
    device = _device(student)
    token_types = uses_token_types(student.config)
    modes = student.training, teacher.training
    teacher.eval()
    cached = None if loss.needs_hidden else torch.from_numpy(
        predict(teacher, train, 64, _device(teacher), pad_id))
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.01)
    warmup = int(warmup_ratio * steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / max(1, warmup) if s < warmup
        else max(0.0, (steps - s) / max(1, steps - warmup)))
    history: list[dict] = []
    best_error, best_state = math.inf, None

    def checkpoint(epoch: int, losses: list[float]) -> None:
        nonlocal best_error, best_state
        record = {"epoch": epoch, "step": done}
        if losses:
            record["loss"] = sum(losses) / len(losses)
        if select is not None:
            record["error"] = select(student)
            student.train()
            if record["error"] < best_error:
                best_error = record["error"]
                best_state = {k: v.detach().clone() for k, v in student.state_dict().items()}
        history.append(record)

    done, epoch = 0, 0
    torch.manual_seed(seed)
    try:
        checkpoint(0, [])
        student.train()
        with ProgressBar(progress, steps, 0, "recovery (distillation)") as bar:
            while done < steps:
                losses = []
                for indices in grouped_batches(train, batch_size, seed + epoch):
                    if done >= steps:
                        break
                    batch = {k: v.to(device) for k, v in
                             collate(train, indices, pad_id, token_types).items()}
                    targets = (Targets(cached[indices].to(device)) if cached is not None
                               else loss.targets(teacher, batch))
                    value = loss(student, batch, targets)
                    value.backward()
                    torch.nn.utils.clip_grad_norm_(params, 1.0)
                    optimizer.step()
                    schedule.step()
                    optimizer.zero_grad(set_to_none=True)
                    losses.append(float(value.detach()))
                    done += 1
                    bar.update(done, f"loss {losses[-1]:.4f}")
                epoch += 1
                checkpoint(epoch, losses)
        if best_state is not None:
            student.load_state_dict(best_state)
    finally:
        student.train(modes[0])
        teacher.train(modes[1])
    best = min((h for h in history if "error" in h), key=lambda h: h["error"], default=None)
    return {"steps": done, "epochs": history,
            "best_epoch": best["epoch"] if best else epoch}


# ------------------------------------------------------------------------- recover()


@dataclass
class RecoveryReport:
    """The sub-network before and after recovery: ``logits_mse`` against the full model on
    the calibration set, and the task metrics per split (``search``, ``validation``)."""

    config: dict
    before: dict | None = None
    after: dict | None = None
    steps: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def recover(small: nn.Module, full: nn.Module, train: Encoded, *,
            search: Encoded | None = None, validation: Encoded | None = None,
            preset: TaskPreset | None = None, config: RecoveryConfig | None = None,
            pad_id: int = 0, subnet: Subnet | None = None,
            unlabeled: Encoded | None = None, progress: bool = False) -> RecoveryReport:
    """Apply ``config.method`` to the extracted ``small`` (in place) with ``full`` as the
    teacher; calibration and distillation data come from ``train`` (plus ``unlabeled``
    texts for distillation). Distillation keeps the epoch with the best ``search`` error;
    ``validation`` is only measured, before and after, to report."""
    cfg = config or RecoveryConfig()
    start = time.perf_counter()
    shapes = _shapes(small)
    report = RecoveryReport(cfg.to_dict())
    calib_set = subset(train, cfg.calibration_examples, cfg.seed)
    calib = list(iter_batches(calib_set, cfg.calibration_batch_size, small, pad_id))
    splits = {name: enc for name, enc in (("search", search), ("validation", validation))
              if enc is not None and preset is not None}

    def measure() -> dict:
        was = small.training
        small.eval()
        scores: dict = {"logits_mse": logits_mse(small, full, calib)}
        for name, encoded in splits.items():
            scores[name] = evaluate(small, encoded, preset, pad_id=pad_id)
        small.train(was)
        return scores

    def search_error(model: nn.Module) -> float:
        return evaluate(model, search, preset, pad_id=pad_id)["error"]

    report.before = measure()
    if cfg.method in ("least-squares", "both"):
        fits = least_squares_correction(small, full, calib, ridge=cfg.ridge, subnet=subnet)
        report.steps.append({"step": "least-squares", "blocks": [asdict(f) for f in fits],
                             **measure()})
    if cfg.method in ("distill", "both") and cfg.epochs:
        data = train if unlabeled is None else concat(train, unlabeled)
        info = distill(small, full, data, loss=cfg.loss(), epochs=cfg.epochs,
                       batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
                       warmup_ratio=cfg.warmup_ratio, seed=cfg.seed, pad_id=pad_id,
                       select=search_error if "search" in splits else None,
                       progress=progress)
        report.steps.append({"step": "distill", "examples": len(data), **info, **measure()})
    small.eval()
    last = report.steps[-1] if report.steps else report.before
    report.after = {k: last[k] for k in ("logits_mse", *splits)}
    if _shapes(small) != shapes:  # a bug, never a user mistake
        raise AssertionError("recovery changed the shape of the sub-network")
    report.seconds = time.perf_counter() - start
    if not math.isfinite(report.after.get("logits_mse", 0.0)):
        raise NaspruneError("recovery diverged (non-finite outputs); rerun with method=none")
    return report
