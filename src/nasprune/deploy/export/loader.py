"""Loading an export: verified whole, built from known classes, no code from the directory.

``load`` verifies the export (``manifest.verify``: every file listed and intact, nothing
unlisted) and returns an :class:`Export` (unpacks as ``model, tokenizer``) run by the
backend chosen (``backends``). ``load_model_dir`` is the loader for servers: a nasprune
export (any nasprune file present) goes through ``load``, a plain Hugging Face directory
through ``from_pretrained``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nasprune.core.subnet import Subnet, SubnetError
from nasprune.deploy.export import vanilla as export_vanilla
from nasprune.deploy.export.backends import BACKENDS, BASE, LOAD_BACKENDS
from nasprune.deploy.export.format import CONFIG, METRICS_FILE, SUBNET_FILE, WEIGHTS
from nasprune.deploy.export.manifest import (
    check_function,
    nasprune_markers,
    read_manifest,
    read_object,
    verify,
)
from nasprune.errors import NaspruneError

#: Environment variable that overrides ``backend="auto"`` (e.g. for ``nasprune serve``).
BACKEND_ENV = "NASPRUNE_BACKEND"


@dataclass
class Export:
    """A loaded export: ``model, tokenizer = nasprune.load(DIR)`` also works.

    ``model`` is a PyTorch ``nn.Module`` (``backend == "torch"``) or an
    :class:`OnnxClassifier` (``"onnx"``); both answer ``model(**batch).logits``.
    ``layout``: ``"vanilla"`` (a stock transformers class) or ``"remote"`` (nasprune's).
    """

    model: Any
    tokenizer: Any
    subnet: Subnet
    metrics: dict
    manifest: dict
    path: Path
    backend: str
    quantized: bool
    config: Any = field(repr=False, default=None)
    layout: str = "remote"

    def __iter__(self):
        yield self.model
        yield self.tokenizer


def _key(backend: str, quantized: bool) -> str:
    """The manifest ``backends`` entry of ``backend``'s model of that precision."""
    return f"{backend}_int8" if quantized else backend


def measured_faster(speed: Any, batch_size: int | None) -> str | None:
    """The float backend the export measured faster at the batch size served (the largest
    measured batch size not above it; 32, a full default batch, when not given), or None
    when the export has no timing (exports before it, or written with one backend)."""
    faster = speed.get("faster") if isinstance(speed, dict) else None
    if not isinstance(faster, dict) or not faster:
        return None
    sizes = sorted(int(b) for b in faster if str(b).isdigit())
    if not sizes:
        return None
    wanted = batch_size or 32
    size = max((b for b in sizes if b <= wanted), default=sizes[0])
    choice = faster.get(str(size))
    return choice if choice in BACKENDS else None


def choose_backend(backend: str, manifest: dict, quantized: bool, speed: Any = None,
                   batch_size: int | None = None, device: Any = "cpu") -> str:
    """The backend ``load`` runs: ``backend``, or for ``auto`` (``NASPRUNE_BACKEND`` if
    set): int8 on the backend that has it; float on the one the export timed faster at
    ``batch_size`` (``metrics.json`` ``speed``), else ONNX Runtime when exported; a
    backend that cannot run on ``device`` here (ONNX Runtime without its CUDA execution
    provider on a GPU) is left out."""
    backends = manifest.get("backends", {})
    if backend == "auto":
        backend = os.environ.get(BACKEND_ENV, "auto").strip().lower() or "auto"
        if backend not in LOAD_BACKENDS:
            raise NaspruneError(f"{BACKEND_ENV}={backend!r}; use one of "
                                + ", ".join(LOAD_BACKENDS))
    if backend == "auto":
        usable = [name for name in BACKENDS if name != BASE and _key(name, quantized)
                  in backends and BACKENDS[name].available(device)]
        faster = None if quantized else measured_faster(speed, batch_size)
        if faster is not None and (faster == BASE or faster in usable):
            return faster
        return usable[0] if usable else BASE
    if backend not in LOAD_BACKENDS:
        raise NaspruneError(f"unknown backend {backend!r}; choose one of "
                            + ", ".join(LOAD_BACKENDS))
    if backend != BASE and _key(backend, quantized) not in backends:
        label = BACKENDS[backend].label
        what = f"int8 {label}" if quantized else label
        raise NaspruneError(f"this export has no {what}; re-export with --format {backend}"
                            + (" --quantize int8" if quantized else ""))
    return backend


def _read_config(directory: Path, manifest: dict | None, layout: str | None = None):
    """The stock-family config of an export (``model_type`` ``nasprune_bert`` is read as a
    ``BertConfig`` carrying ``nasprune_subnet``), its pinned keys as the manifest says
    (``manifest=None`` and a ``layout``: a directory being adopted, which has none yet)."""
    from transformers import CONFIG_MAPPING

    from nasprune.deploy.export.modeling_nasprune import CLASSES as families
    from nasprune.deploy.export.modeling_nasprune import PREFIX

    path = directory / CONFIG
    layout = manifest["layout"] if manifest is not None else layout
    data = read_object(path, "config")
    if manifest is not None:
        check_function(manifest, data, path)
    model_type = data.get("model_type")
    family = model_type
    if layout == "remote" and isinstance(model_type, str) and model_type.startswith(PREFIX):
        family = model_type[len(PREFIX):]
    if family not in families:
        raise NaspruneError(f"{path}: model type {model_type!r} is not one that nasprune "
                            f"exports ({', '.join(sorted(families))})")
    has_subnet = isinstance(data.get("nasprune_subnet"), list)
    if layout == "remote" and not has_subnet:
        raise NaspruneError(f"{path}: no nasprune_subnet (per-layer heads and units)")
    if layout == "vanilla" and "nasprune_subnet" in data:
        raise NaspruneError(f"{path}: a stock-layout export has no nasprune_subnet")
    try:
        return CONFIG_MAPPING[family].from_dict(
            {k: v for k, v in data.items() if k != "model_type"})
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise NaspruneError(f"{path}: not a valid {family} config ({exc})") from exc


def _read_subnet(directory: Path, config, layout: str) -> Subnet:
    data = read_object(directory / SUBNET_FILE, "sub-network")
    try:
        subnet = Subnet.from_json(json.dumps(data))
    except SubnetError as exc:
        raise NaspruneError(f"{directory / SUBNET_FILE}: {exc}") from exc
    if layout == "vanilla":
        export_vanilla.check(subnet, config, f"{directory}: ")
    elif Subnet(tuple(map(tuple, config.nasprune_subnet))) != subnet:
        raise NaspruneError(f"{directory}: config.json and subnet.json describe different "
                            "sub-networks")
    return subnet


def _load_tokenizer(directory: Path, config):
    if not any((directory / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json",
                                                   "vocab.txt")):
        return None
    from transformers import AutoTokenizer

    try:  # the stock config given: AutoConfig would ask for trust_remote_code
        return AutoTokenizer.from_pretrained(str(directory), config=config)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise NaspruneError(f"{directory}: unreadable tokenizer files "
                            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                            ) from exc


def load(directory: str | os.PathLike, *, backend: str = "auto", quantized: bool | None = None,
         verify_checksums: bool = True, threads: int | None = None,
         batch_size: int | None = None, device: Any = "cpu") -> Export:
    """Load an export after verifying it whole; no code from the directory runs.

    ``backend``: ``"torch"``, ``"onnx"`` or ``"auto"`` (the ``NASPRUNE_BACKEND``
    environment variable if set; else int8 on ONNX Runtime, and float on the backend the
    export timed faster at ``batch_size`` texts per model call (default 32), or ONNX
    Runtime when the export has no timing; PyTorch when there is no ONNX file or no
    onnxruntime). ``quantized``:
    default = what the export was made with (``--quantize int8``); PyTorch int8 is dynamic
    quantization applied here. ``verify_checksums=False`` skips hashing and the check for
    unlisted files (the manifest must still be well-formed). ``device``: where the model
    runs (a ``torch.device`` or its name; ONNX Runtime's CUDA execution provider on a GPU).
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    manifest = verify(directory) if verify_checksums else read_manifest(directory)
    for required in (CONFIG, WEIGHTS, SUBNET_FILE):
        if not (directory / required).is_file():
            raise NaspruneError(f"{directory}: {required} is missing")
    layout = manifest["layout"]
    quantized = (manifest.get("quantize") == "int8") if quantized is None else bool(quantized)
    metrics = read_object(directory / METRICS_FILE, "metrics") if (
        directory / METRICS_FILE).is_file() else {}
    chosen = choose_backend(backend, manifest, quantized, metrics.get("speed"), batch_size,
                            device)
    config = _read_config(directory, manifest)
    subnet = _read_subnet(directory, config, layout)
    try:
        state = load_file(str(directory / WEIGHTS))
    except (SafetensorError, OSError) as exc:
        raise NaspruneError(f"{directory / WEIGHTS}: unreadable weights ({exc})") from exc
    model = BACKENDS[chosen].load(directory, manifest, config, layout, state, quantized, threads,
                                  device)
    del state
    tokenizer = _load_tokenizer(directory, config)
    if threads:
        torch.set_num_threads(threads)
    return Export(model=model, tokenizer=tokenizer, subnet=subnet, metrics=metrics,
                  manifest=manifest, path=directory, backend=chosen, quantized=quantized,
                  config=config, layout=layout)


def load_model_dir(model_dir: str | os.PathLike, *, threads: int | None = None,
                   batch_size: int | None = None, device: Any = "cpu"):
    """The loader for servers: an :class:`Export` when ``model_dir`` holds any nasprune
    file (verified whole by ``load``; a damaged export is refused, never loaded another
    way), else ``(model, tokenizer)`` of a plain Hugging Face directory."""
    path = Path(model_dir).expanduser()
    if not path.is_dir():
        raise NaspruneError(f"model directory not found: {path}")
    if nasprune_markers(path):
        return load(path, threads=threads, batch_size=batch_size, device=device)
    if not (path / CONFIG).is_file():
        raise NaspruneError(f"{path} is not a model directory (no config.json)")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        model = AutoModelForSequenceClassification.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NaspruneError(f"cannot load {path}: {first}") from exc
    return model.to(device).eval(), tokenizer
