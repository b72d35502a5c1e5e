"""``nasprune adopt DIR``: make a remote-code export that transformers re-saved a verified
export again.

``model.save_pretrained(DIR)`` of a model loaded with ``trust_remote_code=True`` writes
``config.json``, ``model.safetensors`` and the model's code, but no ``manifest.json`` or
``subnet.json``, so ``nasprune.load`` and ``nasprune serve`` refuse the directory (an export
is never loaded unverified). ``adopt`` checks that it *is* one of nasprune's pruned models
(a ``nasprune_<family>`` config whose weights load strictly into nasprune's own class and
compute finite logits), replaces the code files by the installed nasprune's copies (the
code that ``trust_remote_code=True`` will run), writes ``subnet.json`` from the config and
a new manifest over every file (``manifest.write``), then verifies and loads the
result with ``nasprune.load``. Nothing from the directory is executed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from nasprune.deploy.export.format import (
    CONFIG,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    ONNX_FILE,
    ONNX_INT8_FILE,
    REMOTE_FILE,
    SUBNET_FILE,
    WEIGHTS,
)
from nasprune.deploy.export.manifest import read_object, verify
from nasprune.deploy.export.manifest import write as write_manifest
from nasprune.errors import NaspruneError
from nasprune.files import write_json


def _check_loads(directory: Path, config, layout: str):
    """The model built by nasprune's class from ``directory``'s config and weights."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from nasprune.deploy.export.backends import BACKENDS
    from nasprune.deploy.export.examples import example_inputs

    try:
        state = load_file(str(directory / WEIGHTS))
    except (SafetensorError, OSError) as exc:
        raise NaspruneError(f"{directory / WEIGHTS}: unreadable weights ({exc})") from exc
    model = BACKENDS["torch"].load(directory, {}, config, layout, state, False, None)
    with torch.no_grad():
        logits = model(**example_inputs(config, 2, 9, seed=0)).logits
    if not torch.isfinite(logits).all():
        raise NaspruneError(f"{directory}: the model computes non-finite logits")
    return model


def adopt(directory: str | os.PathLike) -> Path:
    """Verify and re-describe a re-saved remote-code export in place; return its path."""
    directory = Path(directory).expanduser()
    if not (directory / CONFIG).is_file():  # refused before torch and transformers load
        raise NaspruneError(f"{directory}: no {CONFIG}; not a model directory")
    if (directory / MANIFEST).is_file():
        verify(directory)  # raises when damaged; an intact export needs nothing
        return directory
    from nasprune import __version__
    from nasprune.core.subnet import ModelShape, Subnet
    from nasprune.deploy.export.loader import _read_config, load
    from nasprune.deploy.export.modeling_nasprune import CLASSES, PREFIX
    from nasprune.deploy.export.prepare import copy_remote_code

    data = read_object(directory / CONFIG, "config")
    model_type = data.get("model_type")
    if not (isinstance(model_type, str) and model_type.startswith(PREFIX)):
        raise NaspruneError(f"{directory}: model type {model_type!r} is not a nasprune "
                            "remote-code export (nasprune_<family>), the only kind adopt "
                            "takes")
    onnx = [n for n in (ONNX_FILE, ONNX_INT8_FILE) if (directory / n).exists()]
    if onnx:
        raise NaspruneError(f"{directory}: {onnx[0]} cannot be checked against re-saved "
                            "weights; remove it, or re-export with --format onnx")
    config = _read_config(directory, None, "remote")
    _check_loads(directory, config, "remote")
    copy_remote_code(directory)  # the code trust_remote_code runs: the installed copy
    family = config.model_type
    dims = CLASSES[family].nasprune_layout.dims(config)
    shape = ModelShape(num_layers=dims[0], num_heads=dims[1], head_dim=dims[2],
                       hidden=dims[3], ffn=dims[4])
    subnet = Subnet(tuple(map(tuple, config.nasprune_subnet))).validate(shape)
    source = getattr(config, "nasprune_source_model", None)
    write_json(directory / SUBNET_FILE, {
        "layers": [list(layer) for layer in subnet.layers], "text": str(subnet),
        "kept_layers": subnet.kept_layers, "shape": shape.to_dict(), "model_type": family,
        "source_model": source, "layout": "remote", "why_remote": "adopted re-saved export"})
    import torch

    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_manifest(directory, {  # files, function pins and seal as every export has them
        "format": FORMAT, "format_version": FORMAT_VERSION, "nasprune": __version__,
        "created": created, "torch": torch.__version__, "model_type": family,
        "layout": "remote", "subnet": str(subnet), "quantize": None,
        "backends": {"torch": WEIGHTS}, "adopted": {"on": created, "code": REMOTE_FILE}})
    load(directory)  # the whole check, as nasprune serve will do it
    return directory
