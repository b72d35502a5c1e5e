"""What an export backend provides: its write step, its quantized step, its runtime loader.

``export_model`` calls ``write`` for the base backend and for each ``--format`` asked for,
then, for ``--quantize Q``, ``quantize`` of the backend whose ``quantizations`` declare Q
(ONNX: ``int8``, static and calibrated), whose ``write`` has run (Q implies its format);
``load`` calls ``load`` of the backend chosen. The manifest's ``backends`` names each
backend's file under the backend's name and its int8 file under ``<name>_int8``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: A folder of the export's staging directory for what one step leaves to a later one (the
#: ONNX backend's plain graph, which its int8 step quantizes instead of exporting the model
#: again); ``export_model`` removes it before the export is described and published.
SCRATCH = ".scratch"


@dataclass
class Written:
    """What a write or int8 step added: manifest ``backends`` entries, entries of
    ``metrics.json`` (in order), and how to get the model that runs what was written (called
    only when the export measures it)."""

    backends: dict[str, str]
    runtime: Callable[[], Any]
    report: dict[str, Any] = field(default_factory=dict)


@dataclass
class Calibration:
    """Texts to calibrate a quantization on: ``encoded`` (an ``Encoded``), where they come
    from (for the card), and the pad token id."""

    encoded: Any
    source: str
    pad_id: int = 0


class Backend:
    """One export backend; subclasses fill in the steps they have."""

    #: The registry name, the manifest ``backends`` key and the ``load(backend=...)`` value.
    name: str = ""
    #: What its files are called in messages ("ONNX model").
    label: str = ""
    #: The ``--quantize`` values its ``quantize`` step writes.
    quantizations: tuple[str, ...] = ()

    def check(self) -> None:
        """Raise before any work when a package that writing this backend needs is missing."""

    def available(self, device: Any = "cpu") -> bool:
        """Whether this machine can run the backend on ``device`` (``load(backend="auto")``
        asks)."""
        return True

    def write(self, model, directory: Path, say: Callable[[str], None]) -> Written:
        """Write ``model`` (the float PyTorch classifier) as this backend's files."""
        raise NotImplementedError

    def manifest(self, report: dict, quantize: str | None) -> dict:
        """Sections this backend adds to ``manifest.json`` (after the files)."""
        return {}

    def quantize(self, model, directory: Path, say: Callable[[str], None],
                 calibration: Calibration) -> Written:
        """The quantized model of this backend (after ``write``)."""
        raise NotImplementedError

    def load(self, directory: Path, manifest: dict, config, layout: str, state: dict,
             quantized: bool, threads: int | None, device: Any = "cpu") -> Any:
        """The model of a verified export on ``device``: ``state`` is its float weights
        (safetensors)."""
        raise NotImplementedError
