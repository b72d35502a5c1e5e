"""Least-squares correction: retraining-free recovery of an extracted sub-network.

Layer by layer, the output projection of the kept heads (attention output) and of the kept
FFN units (FFN output) is refitted by ridge regression so that the sub-network's
pre-LayerNorm activations match the full model's on a calibration set (the residual
stream's own error is folded into the target, so later layers also compensate for earlier
ones). In the spirit of Kwon et al. 2022 ("A fast post-training pruning framework for
transformers"), which rescales masks by least squares; here the whole output weight of the
kept parts is refitted. A block whose fit does not lower its error keeps its weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from nasprune.core.extract import subnet_of
from nasprune.core.families.base import get_adapter
from nasprune.core.models import model_device, model_inputs
from nasprune.core.subnet import Subnet
from nasprune.errors import NaspruneError
from nasprune.train.recovery.recover import RecoveryRun


def least_squares_method(run: RecoveryRun) -> None:
    """The ``least-squares`` recovery method: one correction on the calibration batches."""
    fits = least_squares_correction(run.small, run.full, run.calibration,
                                    ridge=run.config.ridge, subnet=run.subnet)
    run.record({"step": "least-squares", "blocks": [asdict(f) for f in fits]})


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


def _capture_input(store: dict, key: str):
    def hook(module, args):
        store[key] = args[0].detach()
    return hook


def _capture_io(store: dict, key: str):
    def hook(module, args, output):
        store[key + "_in"] = args[0].detach()
        store[key + "_out"] = output.detach()
    return hook


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
            full(**model_inputs(batch, model_device(full)))
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
            small(**model_inputs(batch, model_device(small)))
            keep = _tokens(batch)
            x = store["lin_in"].reshape(-1, k).cpu()[keep].double()
            residual = (store["small"] - store["lin_out"]).reshape(-1, hidden)
            target = full_act.double() - residual.cpu()[keep].double()
            if has_bias:
                x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
            gram += x.T @ x
            cross += x.T @ target
            target_sq += float((target**2).sum())
    finally:
        for handle in handles:
            handle.remove()
    old = lin.weight.detach().cpu().double().T
    if has_bias:
        old = torch.cat([old, lin.bias.detach().cpu().double()[None]], 0)

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
