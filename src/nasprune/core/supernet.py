"""A fine-tuned encoder that can *be* any of its sub-networks, cheaply or physically.

After ``reorder_by_importance`` the most important heads and FFN units of every layer come
first, so a sub-network (per layer: how many heads, how many units) is a set of prefixes:

- ``use(subnet)`` runs the model as the sub-network by computing with prefix *views* of
  the weights (``F.linear(x, W[:k])``) and skipping removed blocks, so the cost grows with
  the sub-network, gradients reach the full weights, and nothing is copied;
- ``extract(subnet)`` builds a physically smaller dense copy with the same function;
  ``shrink_structure`` + ``load_prefix_weights`` are its two halves, reusable by export.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from nasprune.choices import IMPORTANCE
from nasprune.core.adapters import Adapter, Edit, get_adapter
from nasprune.core.subnet import Subnet
from nasprune.errors import NaspruneError

SUBNET_CONFIG_KEY = "nasprune_subnet"
ORDER_FILE = "order.json"
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids", "inputs_embeds")
IMPORTANCE_METHODS = IMPORTANCE


# ---------------------------------------------------------------------- structure edits


def _swap(parent: nn.Module, name: str, new: nn.Module, undo: list[Callable[[], None]]) -> None:
    old = getattr(parent, name)
    setattr(parent, name, new)
    undo.append(lambda: setattr(parent, name, old))


def _set_attrs(obj: Any, values: Mapping[str, Any], undo: list[Callable[[], None]] | None) -> None:
    for key, value in values.items():
        if not hasattr(obj, key):
            continue
        old = getattr(obj, key)
        setattr(obj, key, value)
        if undo is not None:
            undo.append(partial(setattr, obj, key, old))


def _prefix_linear(lin: nn.Linear, rows: int | None, cols: int | None, x: torch.Tensor):
    """``lin`` restricted to its first ``rows`` outputs / ``cols`` inputs (views, no copy)."""
    weight, bias = lin.weight, lin.bias
    if rows is not None:
        weight = weight[:rows]
        bias = None if bias is None else bias[:rows]
    if cols is not None:
        weight = weight[:, :cols]
    return F.linear(x, weight, bias)


def _patch_forward(lin: nn.Linear, undo: list[Callable[[], None]], *, rows=None, cols=None):
    lin.forward = partial(_prefix_linear, lin, rows, cols)
    undo.append(lambda: lin.__dict__.pop("forward", None))


def _apply_edits(edits: list[Edit], undo: list[Callable[[], None]]) -> None:
    for parent, name, new in edits:
        _swap(parent, name, new, undo)


def _small_linear(old: nn.Linear, in_features: int, out_features: int) -> nn.Linear:
    return nn.Linear(in_features, out_features, bias=old.bias is not None,
                     device=old.weight.device, dtype=old.weight.dtype)


def shrink_structure(model: nn.Module, subnet: Subnet, adapter: Adapter | None = None) -> nn.Module:
    """Rebuild ``model`` in place with the module shapes of ``subnet``; return it.

    Only counts are used: new linear layers are freshly initialised, removed blocks become
    parameter-free stand-ins (parameter names of what is kept do not change). ``model``
    must have the full structure its config describes, e.g. ``from_config(saved_config)``;
    load weights afterwards with ``load_prefix_weights`` or ``load_state_dict``. The
    sub-network is stored as ``config.nasprune_subnet`` (the config keeps the full sizes).
    """
    adapter = adapter or get_adapter(model)
    shape = adapter.shape
    subnet.validate(shape)
    d = shape.head_dim
    undo: list[Callable[[], None]] = []  # structural edits are permanent here
    for i, (h, u) in enumerate(subnet.layers):
        if h == 0 and u == 0:
            _apply_edits(adapter.skip_layer(i), undo)
            continue
        if h == 0:
            _apply_edits(adapter.skip_attention(i), undo)
        elif h < shape.num_heads:
            for role in ("query", "key", "value"):
                old = adapter.part(i, role)
                parent, name = adapter.slot(i, role)
                setattr(parent, name, _small_linear(old, old.in_features, h * d))
            old = adapter.attn_out(i)
            parent, name = adapter.slot(i, "attn_out")
            setattr(parent, name, _small_linear(old, h * d, old.out_features))
            _set_attrs(adapter.attention(i), adapter.head_attrs(h), None)
        if u == 0:
            _apply_edits(adapter.skip_ffn(i), undo)
        elif u < shape.ffn:
            old = adapter.ffn_in(i)
            parent, name = adapter.slot(i, "ffn_in")
            setattr(parent, name, _small_linear(old, old.in_features, u))
            old = adapter.ffn_out(i)
            parent, name = adapter.slot(i, "ffn_out")
            setattr(parent, name, _small_linear(old, u, old.out_features))
    setattr(model.config, SUBNET_CONFIG_KEY, [list(layer) for layer in subnet.layers])
    return model


@torch.no_grad()
def load_prefix_weights(small: nn.Module, full_state: Mapping[str, torch.Tensor]) -> None:
    """Fill ``small`` from a full state dict, taking the leading block of every tensor.

    Works because every kept head/unit is a prefix: a 4-head query weight is the first
    ``4 * head_dim`` rows of the full one, an output weight the first columns, and so on.
    """
    for name, tensor in small.state_dict(keep_vars=True).items():
        if name not in full_state:
            raise NaspruneError(f"weight {name!r} missing from the full model")
        src = full_state[name]
        if src.dim() != tensor.dim() or any(s < t for s, t in zip(src.shape, tensor.shape)):
            raise NaspruneError(
                f"weight {name!r}: {tuple(src.shape)} cannot hold {tuple(tensor.shape)}")
        tensor.copy_(src[tuple(slice(0, n) for n in tensor.shape)])


def subnet_of(model: nn.Module) -> Subnet | None:
    """The sub-network an extracted model was built for (from its config), if any."""
    layers = getattr(model.config, SUBNET_CONFIG_KEY, None)
    return None if layers is None else Subnet(tuple(tuple(layer) for layer in layers))


def model_inputs(batch: Mapping[str, Any], device: torch.device | None = None) -> dict:
    """The model's keyword inputs from a DataLoader batch (labels and extras dropped)."""
    out = {k: v for k, v in batch.items() if k in MODEL_INPUTS and v is not None}
    if device is not None:
        out = {k: v.to(device) if torch.is_tensor(v) else v for k, v in out.items()}
    return out


def _labels(batch: Mapping[str, Any]) -> torch.Tensor:
    for key in ("labels", "label"):
        if key in batch:
            return batch[key]
    raise NaspruneError("calibration batches need a 'labels' tensor")


def per_example_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per example, or squared error for regression (one output)."""
    labels = labels.to(logits.device)
    if logits.shape[-1] == 1:
        return (logits.squeeze(-1) - labels.to(logits.dtype).view(-1)) ** 2
    return F.cross_entropy(logits, labels.long().view(-1), reduction="none")


# ------------------------------------------------------------------------- mask hooks


class _Masks:
    """Forward pre-hooks that multiply head outputs and FFN units by masks.

    Used for importance scores (per-example ones-masks that require grad) and for the
    masking baseline (zero-one masks, full-size compute) that ``use()`` replaces.
    """

    def __init__(self, supernet: "Supernet",
                 make: Callable[[str, int, torch.Tensor], torch.Tensor]):
        self.sn, self.make = supernet, make
        self.handles: list = []
        self.created: list[tuple[str, int, torch.Tensor]] = []

    def __enter__(self):
        a, s = self.sn.adapter, self.sn.shape
        for i in range(s.num_layers):
            self.handles.append(a.attn_out(i).register_forward_pre_hook(partial(self._heads, i)))
            self.handles.append(a.ffn_out(i).register_forward_pre_hook(partial(self._units, i)))
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def _heads(self, layer, module, args):
        x = args[0]
        s = self.sn.shape
        m = self.make("heads", layer, x)
        self.created.append(("heads", layer, m))
        lead = x.shape[:-1]
        m = m.view(m.shape[0], *([1] * (x.dim() - 2)), s.num_heads, 1)
        return ((x.view(*lead, s.num_heads, s.head_dim) * m).view_as(x), *args[1:])

    def _units(self, layer, module, args):
        x = args[0]
        m = self.make("units", layer, x)
        self.created.append(("units", layer, m))
        return (x * m.view(m.shape[0], *([1] * (x.dim() - 2)), x.shape[-1]), *args[1:])


# ---------------------------------------------------------------------------- Supernet


class Supernet:
    """A fine-tuned model plus its adapter: importance order, ``use``, ``extract``."""

    def __init__(self, model: nn.Module, adapter: Adapter | None = None):
        self.model = model
        self.adapter = adapter or get_adapter(model)
        self.shape = self.adapter.shape
        extracted = subnet_of(model)
        if extracted is not None and extracted != self.shape.full:
            raise NaspruneError(f"this model is an extracted sub-network ({extracted}); "
                                "a super-network needs the full model it came from")
        self.order: dict | None = None
        self._stack: list[Subnet] = []
        self._undo: list[Callable[[], None]] = []

    # ---------------------------------------------------------------- use()
    @contextmanager
    def use(self, subnet: Subnet) -> Iterator[nn.Module]:
        """Within the block ``self.model`` computes ``subnet`` (prefix views, skipped blocks).

        Gradients flow into the full weights. The full model is restored on exit, also on
        exceptions; nested blocks apply the innermost sub-network and re-apply the outer.
        """
        subnet.validate(self.shape)
        self._restore()
        self._stack.append(subnet)
        try:
            self._apply(subnet)
            yield self.model
        finally:
            self._restore()
            self._stack.pop()
            if self._stack:
                self._apply(self._stack[-1])

    @property
    def active(self) -> Subnet | None:
        return self._stack[-1] if self._stack else None

    def _apply(self, subnet: Subnet) -> None:
        a, s, undo = self.adapter, self.shape, self._undo
        d = s.head_dim
        for i, (h, u) in enumerate(subnet.layers):
            if h == 0 and u == 0:
                _apply_edits(a.skip_layer(i), undo)
                continue
            if h == 0:
                _apply_edits(a.skip_attention(i), undo)
            elif h < s.num_heads:
                for lin in (a.query(i), a.key(i), a.value(i)):
                    _patch_forward(lin, undo, rows=h * d)
                _patch_forward(a.attn_out(i), undo, cols=h * d)
                _set_attrs(a.attention(i), a.head_attrs(h), undo)
            if u == 0:
                _apply_edits(a.skip_ffn(i), undo)
            elif u < s.ffn:
                _patch_forward(a.ffn_in(i), undo, rows=u)
                _patch_forward(a.ffn_out(i), undo, cols=u)

    def _restore(self) -> None:
        while self._undo:
            self._undo.pop()()

    @contextmanager
    def _full(self) -> Iterator[None]:
        """Temporarily the full model, even inside ``use()``."""
        self._restore()
        try:
            yield
        finally:
            if self._stack:
                self._apply(self._stack[-1])

    @contextmanager
    def masked(self, subnet: Subnet) -> Iterator[nn.Module]:
        """The masking baseline: full-size compute with removed heads/units zeroed.

        Equals ``use(subnet)`` when every layer keeps >= 1 head and >= 1 unit (a fully
        masked block still adds its biases and LayerNorm, a removed one does not).
        """
        subnet.validate(self.shape)

        def make(kind, layer, x):
            h, u = subnet.layers[layer]
            n, keep = (self.shape.num_heads, h) if kind == "heads" else (self.shape.ffn, u)
            m = torch.zeros(1, n, device=x.device, dtype=x.dtype)
            m[:, :keep] = 1
            return m

        with self._full(), _Masks(self, make):
            yield self.model

    # ------------------------------------------------------------ extract()
    def extract(self, subnet: Subnet) -> nn.Module:
        """A physically smaller dense deep copy (own tensors) computing ``subnet``."""
        subnet.validate(self.shape)
        with self._full():
            small = copy.deepcopy(self.model)
            full_state = self.model.state_dict()
            shrink_structure(small, subnet, get_adapter(small))
            load_prefix_weights(small, full_state)
        return small

    # -------------------------------------------------------------- importance
    def reorder_by_importance(self, batches: Iterable[Mapping[str, Any]], *, method: str = "fisher",
                              max_batches: int | None = None) -> dict:
        """Score heads and FFN units, then permute weights so the most important come first.

        ``fisher``: sum over examples of the squared gradient of the loss w.r.t. a per-example
        head/unit mask (Kwon et al. 2022); ``taylor``: sum of its absolute value (Michel et
        al. 2019); ``magnitude``: weight norms, no data. The model's function is unchanged.
        Returns (and stores as ``self.order``) the permutation relative to the original
        layout plus the scores, JSON-serialisable.
        """
        if self._stack:
            raise NaspruneError("reorder_by_importance() cannot run inside use()")
        if method not in IMPORTANCE_METHODS:
            raise NaspruneError(f"unknown importance method {method!r}; choose one of "
                                + ", ".join(IMPORTANCE_METHODS))
        if method == "magnitude":
            (head_scores, unit_scores), seen = self._magnitude_scores(), 0
        else:
            head_scores, unit_scores, seen = self._gradient_scores(batches, method, max_batches)
        head_perm = [torch.argsort(-s, stable=True) for s in head_scores]
        unit_perm = [torch.argsort(-s, stable=True) for s in unit_scores]
        self._permute(head_perm, unit_perm)

        prev = self.order or {
            "heads": [list(range(self.shape.num_heads)) for _ in range(self.shape.num_layers)],
            "units": [list(range(self.shape.ffn)) for _ in range(self.shape.num_layers)],
        }
        self.order = {
            "method": method,
            "examples": seen,
            "heads": [[prev["heads"][i][j] for j in p.tolist()] for i, p in enumerate(head_perm)],
            "units": [[prev["units"][i][j] for j in p.tolist()] for i, p in enumerate(unit_perm)],
            "head_scores": [s[p].tolist() for s, p in zip(head_scores, head_perm)],
            "unit_scores": [s[p].tolist() for s, p in zip(unit_scores, unit_perm)],
        }
        return self.order

    def _gradient_scores(self, batches, method, max_batches):
        s, model = self.shape, self.model
        device = next(model.parameters()).device
        heads = [torch.zeros(s.num_heads, dtype=torch.float64) for _ in range(s.num_layers)]
        units = [torch.zeros(s.ffn, dtype=torch.float64) for _ in range(s.num_layers)]

        def make(kind, layer, x):
            n = s.num_heads if kind == "heads" else s.ffn
            return torch.ones(x.shape[0], n, device=x.device, dtype=x.dtype, requires_grad=True)

        was_training, seen = model.training, 0
        model.eval()
        try:
            with _Masks(self, make) as masks:
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
                        g = g.detach().double().cpu()
                        score = (g**2).sum(0) if method == "fisher" else g.abs().sum(0)
                        (heads if kind == "heads" else units)[layer] += score
                    seen += logits.shape[0]
        finally:
            model.train(was_training)
        if not seen:
            raise NaspruneError("no calibration batches to score importance on")
        return heads, units, seen

    @torch.no_grad()
    def _magnitude_scores(self):
        a, s = self.adapter, self.shape
        heads, units = [], []
        for i in range(s.num_layers):
            qkv = sum(lin.weight.double().view(s.num_heads, -1).pow(2).sum(1)
                      for lin in (a.query(i), a.key(i), a.value(i)))
            out = a.attn_out(i).weight.double().view(-1, s.num_heads, s.head_dim).pow(2).sum((0, 2))
            heads.append((qkv + out).cpu())
            units.append((a.ffn_in(i).weight.double().pow(2).sum(1)
                          + a.ffn_out(i).weight.double().pow(2).sum(0)).cpu())
        return heads, units

    @torch.no_grad()
    def _permute(self, head_perm, unit_perm) -> None:
        a, s = self.adapter, self.shape
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

    # ------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike) -> Path:
        """HF files (``save_pretrained``) plus ``order.json`` when the model was reordered."""
        directory = Path(directory)
        with self._full():
            self.model.save_pretrained(directory)
        if self.order is not None:
            _write_json_atomic(directory / ORDER_FILE, self.order)
        return directory

    @classmethod
    def from_pretrained(cls, path_or_model: str | os.PathLike | nn.Module, **kwargs) -> "Supernet":
        """From a model object, or a directory/hub id (``order.json`` is read when present)."""
        if isinstance(path_or_model, nn.Module):
            return cls(path_or_model)
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(str(path_or_model), **kwargs)
        sn = cls(model)
        order_file = Path(path_or_model) / ORDER_FILE
        if order_file.is_file():
            sn.order = json.loads(order_file.read_text())
        return sn


def _permute_rows(lin: nn.Linear, idx: torch.Tensor) -> None:
    lin.weight.copy_(lin.weight[idx])
    if lin.bias is not None:
        lin.bias.copy_(lin.bias[idx])


def _write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)
