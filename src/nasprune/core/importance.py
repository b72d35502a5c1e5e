"""Importance scores of heads and FFN units, and the weight permutation that puts the most
important first, so that every sub-network is a set of prefixes.

``fisher``: sum over examples of the squared gradient of the loss w.r.t. a per-example
head/unit mask (Kwon et al. 2022); ``taylor``: sum of its absolute value (Michel et al.
2019); ``magnitude``: weight norms, no data. Each method has the signature of
``nasprune.core.IMPORTANCE``; ``reorder`` applies the scores without changing the model's
function.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from nasprune.core.masks import Masks
from nasprune.core.models import model_device, model_inputs
from nasprune.errors import NaspruneError

if TYPE_CHECKING:
    from nasprune.core.supernet import Supernet

Scores = tuple[list[torch.Tensor], list[torch.Tensor], int]  # heads, units per layer; examples


def per_example_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per example, or squared error for regression (one output)."""
    labels = labels.to(logits.device)
    if logits.shape[-1] == 1:
        return (logits.squeeze(-1) - labels.to(logits.dtype).view(-1)) ** 2
    return F.cross_entropy(logits, labels.long().view(-1), reduction="none")


def _labels(batch: Mapping[str, Any]) -> torch.Tensor:
    for key in ("labels", "label"):
        if key in batch:
            return batch[key]
    raise NaspruneError("calibration batches need a 'labels' tensor")


# ------------------------------------------------------------------------------ methods


def fisher(supernet: Supernet, batches: Iterable[Mapping[str, Any]],
           max_batches: int | None) -> Scores:
    return _gradient_scores(supernet, batches, max_batches, lambda g: (g**2).sum(0))


def taylor(supernet: Supernet, batches: Iterable[Mapping[str, Any]],
           max_batches: int | None) -> Scores:
    return _gradient_scores(supernet, batches, max_batches, lambda g: g.abs().sum(0))


@torch.no_grad()
def magnitude(supernet: Supernet, batches: Iterable[Mapping[str, Any]],
              max_batches: int | None) -> Scores:
    a, s = supernet.adapter, supernet.shape
    heads, units = [], []

    def host(lin) -> torch.Tensor:  # float64 on the CPU only: MPS has none, GPUs are slow
        return lin.weight.detach().cpu().double()

    for i in range(s.num_layers):
        qkv = sum(host(lin).view(s.num_heads, -1).pow(2).sum(1)
                  for lin in (a.query(i), a.key(i), a.value(i)))
        out = host(a.attn_out(i)).view(-1, s.num_heads, s.head_dim).pow(2).sum((0, 2))
        heads.append(qkv + out)
        units.append(host(a.ffn_in(i)).pow(2).sum(1) + host(a.ffn_out(i)).pow(2).sum(0))
    return heads, units, 0


def _gradient_scores(supernet: Supernet, batches: Iterable[Mapping[str, Any]],
                     max_batches: int | None,
                     score: Callable[[torch.Tensor], torch.Tensor]) -> Scores:
    """``score(gradient)`` summed over batches, the gradient being the loss's w.r.t. a
    per-example ones-mask on every head and unit (shape ``(batch, count)``)."""
    s, model = supernet.shape, supernet.model
    device = model_device(model)
    heads = [torch.zeros(s.num_heads, dtype=torch.float64) for _ in range(s.num_layers)]
    units = [torch.zeros(s.ffn, dtype=torch.float64) for _ in range(s.num_layers)]

    def make(kind, layer, x):
        n = s.num_heads if kind == "heads" else s.ffn
        return torch.ones(x.shape[0], n, device=x.device, dtype=x.dtype, requires_grad=True)

    was_training, seen = model.training, 0
    model.eval()
    try:
        with Masks(supernet, make) as masks:
            for b, batch in enumerate(batches):
                if max_batches is not None and b >= max_batches:
                    break
                masks.created.clear()
                logits = model(**model_inputs(batch, device)).logits
                loss = per_example_loss(logits, _labels(batch)).sum()
                tensors = [m for _, _, m in masks.created]
                grads = torch.autograd.grad(loss, tensors, allow_unused=True)
                for (kind, layer, _), g in zip(masks.created, grads):
                    if g is None:
                        continue
                    g = g.detach().cpu().double()
                    (heads if kind == "heads" else units)[layer] += score(g)
                seen += logits.shape[0]
    finally:
        model.train(was_training)
    if not seen:
        raise NaspruneError("no calibration batches to score importance on")
    return heads, units, seen


# ---------------------------------------------------------------------------- reordering


def reorder(supernet: Supernet, method: str, scores: Scores) -> dict:
    """Permute the weights so the highest-scored heads and units come first; return the
    order relative to the original layout (composed with ``supernet.order``) and the
    sorted scores, JSON-serialisable."""
    head_scores, unit_scores, seen = scores
    head_perm = [torch.argsort(-s, stable=True) for s in head_scores]
    unit_perm = [torch.argsort(-s, stable=True) for s in unit_scores]
    _permute(supernet, head_perm, unit_perm)

    shape = supernet.shape
    prev = supernet.order or {
        "heads": [list(range(shape.num_heads)) for _ in range(shape.num_layers)],
        "units": [list(range(shape.ffn)) for _ in range(shape.num_layers)],
    }
    heads = [[prev["heads"][i][j] for j in p.tolist()] for i, p in enumerate(head_perm)]
    supernet.adapter.layout.set_head_order(supernet.model, heads)
    return {
        "method": method,
        "examples": seen,
        "heads": heads,
        "units": [[prev["units"][i][j] for j in p.tolist()] for i, p in enumerate(unit_perm)],
        "head_scores": [s[p].tolist() for s, p in zip(head_scores, head_perm)],
        "unit_scores": [s[p].tolist() for s, p in zip(unit_scores, unit_perm)],
    }


@torch.no_grad()
def _permute(supernet: Supernet, head_perm, unit_perm) -> None:
    a, s = supernet.adapter, supernet.shape
    for i in range(s.num_layers):
        hp = head_perm[i].to(a.query(i).weight.device)
        idx = (hp[:, None] * s.head_dim + torch.arange(s.head_dim, device=hp.device)).flatten()
        for lin in (a.query(i), a.key(i), a.value(i)):
            _permute_rows(lin, idx)
        o = a.attn_out(i)
        o.weight.copy_(o.weight[:, idx])
        up = unit_perm[i].to(a.ffn_in(i).weight.device)
        _permute_rows(a.ffn_in(i), up)
        out = a.ffn_out(i)
        out.weight.copy_(out.weight[:, up])


def _permute_rows(lin: nn.Linear, idx: torch.Tensor) -> None:
    lin.weight.copy_(lin.weight[idx])
    if lin.bias is not None:
        lin.bias.copy_(lin.bias[idx])
