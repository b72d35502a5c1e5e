"""What an export is asked to write, checked before any work: ``ExportOptions``.

``export_model`` takes these as keyword arguments (or ``options=``); a wrong value is a
``NaspruneError`` naming it, raised before anything is extracted or written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nasprune.deploy.export.format import LAYOUT_CHOICES, QUANTIZE
from nasprune.errors import NaspruneError


@dataclass(frozen=True)
class ExportOptions:
    """``formats``: ``("hf",)`` or ``("hf", "onnx")`` (``hf`` is always written; a
    quantization adds the format of the backend that declares it). ``quantize``: one of
    ``QUANTIZE`` (``"int8"``: ONNX Runtime static, calibrated). ``layout``: ``"auto"`` (a
    stock config when the sub-network has one, else remote code), ``"vanilla"`` (fail
    when it has none) or ``"remote"``. ``metrics``: what the search measured for this
    sub-network (``metrics.json`` ``search``). ``card``: extra facts for the model card
    (``card.py``). ``recovery``: the recovery report, written as ``recovery.json``.
    ``time_backends``: time the float backends at batch 1, 8 and 32 (what
    ``load(backend="auto")`` reads). ``seq_len``: the length of the analytic costs;
    ``batch_size``: the batches the validation metric is measured in."""

    formats: tuple[str, ...] = ("hf",)
    quantize: str | None = None
    layout: str = "auto"
    source_model: str | None = None
    metrics: dict | None = None
    card: dict | None = None
    recovery: dict | None = None
    seq_len: int = 128
    batch_size: int = 64
    time_backends: bool = True
    backends: tuple[Any, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        from nasprune.deploy.export.backends import BACKENDS, BASE, FORMATS

        if self.quantize is not None and self.quantize not in QUANTIZE:
            raise NaspruneError(f"unknown quantization {self.quantize!r}; choose from "
                                + ", ".join(QUANTIZE))
        asked = tuple(self.formats)
        bad = [f for f in asked if f not in FORMATS]
        if bad:
            raise NaspruneError(f"unknown export format {bad[0]!r}; choose from "
                                + ", ".join(FORMATS))
        if self.quantize is not None:  # the backend that declares it writes it
            asked += (next(name for name in BACKENDS
                           if self.quantize in BACKENDS[name].quantizations),)
        formats = tuple(dict.fromkeys(("hf", *asked)))
        object.__setattr__(self, "formats", formats)
        if self.layout not in LAYOUT_CHOICES:
            raise NaspruneError(f"unknown layout {self.layout!r}; choose from "
                                + ", ".join(LAYOUT_CHOICES))
        for name in ("metrics", "card", "recovery"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, dict):
                raise NaspruneError(f"{name} must be a dict, not {type(value).__name__}")
        for name in ("seq_len", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise NaspruneError(f"{name} must be a whole number >= 1, not {value!r}")
        backends = (BACKENDS[BASE], *(BACKENDS[name] for name in formats[1:]))
        object.__setattr__(self, "backends", backends)

    @property
    def extra(self) -> tuple[Any, ...]:
        """The backends written besides the base one (``--format``)."""
        return self.backends[1:]

    @property
    def quantizer(self) -> Any | None:
        """The backend that writes ``quantize``, or None."""
        if self.quantize is None:
            return None
        return next(b for b in self.backends if self.quantize in b.quantizations)
