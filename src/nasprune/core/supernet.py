"""A fine-tuned encoder that can *be* any of its sub-networks, cheaply or physically.

After ``reorder_by_importance`` the most important heads and FFN units of every layer come
first, so a sub-network (per layer: how many heads, how many units) is a set of prefixes:

- ``use(subnet)`` runs the model as the sub-network by computing with prefix *views* of
  the weights (``F.linear(x, W[:k])``) and skipping removed blocks, so the cost grows with
  the sub-network, gradients reach the full weights, and nothing is copied;
- ``extract(subnet)`` builds a physically smaller dense copy with the same function
  (``extract.shrink_structure`` + ``extract.load_prefix_weights``).
"""

from __future__ import annotations

import copy
import os
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from nasprune.core import IMPORTANCE
from nasprune.core.extract import load_prefix_weights, shrink_structure, subnet_of
from nasprune.core.families.base import Adapter, get_adapter
from nasprune.core.importance import reorder
from nasprune.core.masks import Masks
from nasprune.core.models import load_pretrained
from nasprune.core.structure.shrink import layer_plan
from nasprune.core.structure.stand_ins import Edit, set_attrs
from nasprune.core.subnet import Subnet
from nasprune.errors import NaspruneError
from nasprune.files import read_json, write_json

ORDER_FILE = "order.json"


# ------------------------------------------------------------------ views and swaps


def _swap(parent: nn.Module, name: str, new: nn.Module, undo: list[Callable[[], None]]) -> None:
    old = getattr(parent, name)
    setattr(parent, name, new)
    undo.append(lambda: setattr(parent, name, old))


def _apply_edits(edits: list[Edit], undo: list[Callable[[], None]]) -> None:
    for parent, name, new in edits:
        _swap(parent, name, new, undo)


def _set_attrs(obj: Any, values: Mapping[str, Any], undo: list[Callable[[], None]]) -> None:
    undo.append(partial(set_attrs, obj, set_attrs(obj, values)))


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
        for i, part, n in layer_plan(subnet.layers, s.num_heads, s.ffn):
            if part == "layer":
                _apply_edits(a.skip_layer(i), undo)
            elif part == "attention":
                _apply_edits(a.skip_attention(i), undo)
            elif part == "ffn":
                _apply_edits(a.skip_ffn(i), undo)
            elif part == "heads":
                for lin in (a.query(i), a.key(i), a.value(i)):
                    _patch_forward(lin, undo, rows=n * d)
                _patch_forward(a.attn_out(i), undo, cols=n * d)
                _set_attrs(a.attention(i), a.head_attrs(n), undo)
            else:
                _patch_forward(a.ffn_in(i), undo, rows=n)
                _patch_forward(a.ffn_out(i), undo, cols=n)

    def _restore(self) -> None:
        while self._undo:
            self._undo.pop()()

    @contextmanager
    def full_tree(self) -> Iterator[None]:
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

        with self.full_tree(), Masks(self, make):
            yield self.model

    # ------------------------------------------------------------ extract()
    def extract(self, subnet: Subnet) -> nn.Module:
        """A physically smaller dense deep copy (own tensors) computing ``subnet``."""
        subnet.validate(self.shape)
        with self.full_tree():
            small = copy.deepcopy(self.model)
            full_state = self.model.state_dict()
            shrink_structure(small, subnet, get_adapter(small))
            load_prefix_weights(small, full_state)
        return small

    # -------------------------------------------------------------- importance
    def reorder_by_importance(self, batches: Iterable[Mapping[str, Any]], *, method: str = "fisher",
                              max_batches: int | None = None) -> dict:
        """Score heads and FFN units, then permute weights so the most important come first.

        ``method``: one of ``nasprune.core.IMPORTANCE`` (``fisher``, ``taylor``,
        ``magnitude``; see ``nasprune.core.importance``). The model's function is unchanged.
        Returns (and stores as ``self.order``) the permutation relative to the original
        layout plus the scores, JSON-serialisable.
        """
        if self._stack:
            raise NaspruneError("reorder_by_importance() cannot run inside use()")
        IMPORTANCE.check(method)
        scores = IMPORTANCE[method](self, batches, max_batches)
        self.order = reorder(self, method, scores)
        return self.order

    # ------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike) -> Path:
        """HF files (``save_pretrained``) plus ``order.json`` when the model was reordered."""
        directory = Path(directory)
        with self.full_tree():
            self.model.save_pretrained(directory)
        if self.order is not None:
            write_json(directory / ORDER_FILE, self.order)
        return directory

    @classmethod
    def from_pretrained(cls, path_or_model: str | os.PathLike | nn.Module, **kwargs) -> "Supernet":
        """From a model object, or a directory/hub id (``order.json`` is read when present)."""
        if isinstance(path_or_model, nn.Module):
            return cls(path_or_model)
        from transformers import AutoModelForSequenceClassification

        model = load_pretrained(AutoModelForSequenceClassification, str(path_or_model), **kwargs)
        sn = cls(model)
        order_file = Path(path_or_model) / ORDER_FILE
        if order_file.is_file():
            sn.order = read_json(order_file, "importance order")
        return sn
