"""Deployable pruned models: a self-describing directory that loads in one line.

``export_model`` extracts a sub-network (a physically smaller dense model) and writes::

    OUT/config.json            stock family config + nasprune_subnet (per-layer heads/units),
                               nasprune_source_model, label names, auto_map
    OUT/model.safetensors      the weights (never pickle)
    OUT/modeling_nasprune.py   the model class for trust_remote_code (torch + transformers only)
    OUT/tokenizer files        when a tokenizer is given
    OUT/subnet.json            the sub-network, the full model's shape, the source model
    OUT/metrics.json           validation metric per backend (float, ONNX, int8) + cost figures
    OUT/model.onnx             --format onnx: dynamic batch and sequence axes
    OUT/model.int8.onnx        --format onnx --quantize int8: ONNX Runtime dynamic quantization
    OUT/manifest.json          sha256 and size of every file above, and the backends present

``load`` verifies the manifest and returns an :class:`Export` (unpacks as ``model,
tokenizer``); it builds the model from the installed ``nasprune.hf_remote`` classes, so no
code from the directory runs. ``transformers.AutoModelForSequenceClassification
.from_pretrained(OUT, trust_remote_code=True)`` loads the same model without nasprune.

int8 is dynamic quantization of the linear layers: with ONNX, a quantized copy of the graph
is written; without, the float safetensors are the only weights and ``load`` quantizes them
with PyTorch at load time (quantized PyTorch modules cannot be stored as safetensors).
Either way the validation metric is re-measured at export time and stored next to the float.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import sys
import time
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from nasprune.errors import NaspruneError, require
from nasprune.models import uses_token_types
from nasprune.subnet import Subnet, encoder_flops, encoder_params

FORMAT = "nasprune-export"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
SUBNET_FILE = "subnet.json"
METRICS_FILE = "metrics.json"
REMOTE_FILE = "modeling_nasprune.py"
ONNX_FILE = "model.onnx"
ONNX_INT8_FILE = "model.int8.onnx"
FORMATS = ("hf", "onnx")
QUANTIZE = ("int8",)
BACKENDS = ("auto", "torch", "onnx")
#: Environment variable that overrides ``backend="auto"`` (e.g. for ``nasprune serve``).
BACKEND_ENV = "NASPRUNE_BACKEND"
ONNX_OPSET = 17


# ------------------------------------------------------------------------------ helpers


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=float) + "\n")


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise NaspruneError(f"{path.parent}: {what} {path.name} is missing") from exc
    except (OSError, ValueError) as exc:
        raise NaspruneError(f"{path}: unreadable {what} ({exc})") from exc


def _remote_class(model_type: str):
    from nasprune.hf_remote.modeling_nasprune import CLASSES

    if model_type not in CLASSES:
        raise NaspruneError(f"cannot export model type {model_type!r}; supported: "
                            + ", ".join(sorted(CLASSES)))
    return CLASSES[model_type]


def input_names(config) -> list[str]:
    names = ["input_ids", "attention_mask"]
    return names + ["token_type_ids"] if uses_token_types(config) else names


def _example_inputs(config, batch: int, seq: int, seed: int) -> dict:
    """Random ids with the last row padded, so tracing keeps the attention mask."""
    import torch

    g = torch.Generator().manual_seed(seed)
    vocab = int(getattr(config, "vocab_size", 100))
    ids = torch.randint(min(5, vocab - 1), vocab, (batch, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[-1, max(1, seq // 2):] = 0
    out = {"input_ids": ids, "attention_mask": mask}
    if uses_token_types(config):
        types_ = torch.zeros_like(ids)
        types_[:, seq // 2:] = 1
        out["token_type_ids"] = types_
    return out


# ------------------------------------------------------------------------- ONNX Runtime


class OnnxClassifier:
    """An ONNX Runtime session with the call shape of a HF sequence classifier.

    ``model(input_ids=..., attention_mask=..., token_type_ids=...).logits`` is a float
    torch tensor on the CPU, and ``config``/``device``/``eval()``/``parameters()`` exist, so
    code written for the PyTorch model (``nasprune serve``, ``training.evaluate``) runs
    either backend. ``parameters()`` yields meta tensors with the exported weight shapes
    (for counting only). Inference only.
    """

    training = False

    def __init__(self, path: str | os.PathLike, config, *, threads: int | None = None,
                 param_shapes: Sequence[Sequence[int]] = ()):
        import torch

        ort = require("onnxruntime", "onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(path), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise NaspruneError(f"cannot open {path} with ONNX Runtime: {exc}") from exc
        self.path = Path(path)
        self.config = config
        self.input_names = [i.name for i in self.session.get_inputs()]
        self._param_shapes = [tuple(s) for s in param_shapes]
        self.device = torch.device("cpu")
        self.dtype = torch.float32

    def __call__(self, input_ids=None, attention_mask=None, token_type_ids=None, **_: Any):
        import numpy as np
        import torch
        from transformers.modeling_outputs import SequenceClassifierOutput

        if input_ids is None:
            raise NaspruneError("the ONNX model needs input_ids")
        ids = _numpy(input_ids)
        given = {"input_ids": ids, "attention_mask": attention_mask,
                 "token_type_ids": token_type_ids}
        feeds = {}
        for name in self.input_names:
            value = given.get(name)
            feeds[name] = (np.ones_like(ids) if name == "attention_mask" else np.zeros_like(ids)
                           ) if value is None else _numpy(value)
        logits = self.session.run(["logits"], feeds)[0]
        return SequenceClassifierOutput(logits=torch.from_numpy(logits))

    forward = __call__

    def eval(self) -> OnnxClassifier:
        return self

    def train(self, mode: bool = True) -> OnnxClassifier:
        if mode:
            raise NaspruneError("an ONNX Runtime model is inference-only")
        return self

    def to(self, device=None, *args: Any, **kwargs: Any) -> OnnxClassifier:
        if device is not None and str(device) != "cpu":
            raise NaspruneError(f"the ONNX Runtime backend runs on the CPU, not {device}")
        return self

    def parameters(self) -> Iterator:
        import torch

        return iter([torch.empty(s, device="meta") for s in self._param_shapes])

    def num_parameters(self) -> int:
        return sum(int(_prod(s)) for s in self._param_shapes)

    def __repr__(self) -> str:
        return f"OnnxClassifier({self.path.name}, inputs={self.input_names})"


def _numpy(value):
    import numpy as np

    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.int64)


def _prod(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def export_onnx(model, path: str | os.PathLike, *, opset: int = ONNX_OPSET,
                check: bool = True) -> float:
    """Write ``model`` (a float PyTorch classifier) as ONNX with dynamic batch/sequence axes.

    Uses the TorchScript exporter (``dynamo=False``), which needs no extra packages in
    torch 2.x and handles the stand-in modules of removed blocks. Returns the largest
    absolute logit difference to PyTorch on a fresh input of another shape (the parity
    check); raises when it exceeds 1e-3.
    """
    import torch

    path = Path(path)
    model = model.eval().to("cpu")
    names = input_names(model.config)
    example = _example_inputs(model.config, 2, 8, seed=0)

    class LogitsOnly(torch.nn.Module):  # the traced signature: positional ids -> logits
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            return self.model(**dict(zip(names, inputs))).logits

    wrapper = LogitsOnly().eval()
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"logits": {0: "batch"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, tuple(example[n] for n in names), str(path),
                          input_names=names, output_names=["logits"], dynamic_axes=axes,
                          opset_version=opset, do_constant_folding=True, dynamo=False)
    if not check:
        return 0.0
    probe = _example_inputs(model.config, 3, 13, seed=1)
    with torch.no_grad():
        expected = model(**probe).logits
    got = OnnxClassifier(path, model.config, threads=1)(**probe).logits
    diff = float((got - expected).abs().max())
    if not diff <= 1e-3:
        raise NaspruneError(f"ONNX export of {path.name} differs from PyTorch by {diff:.3g}")
    return diff


def quantize_onnx(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """ONNX Runtime dynamic int8 quantization of the MatMul/Gemm weights (per channel:
    on fine-tuned MiniLM per-tensor scales cost about a point of SST-2 accuracy)."""
    require("onnxruntime", "onnx")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()  # onnxruntime logs a pre-processing hint on the root logger
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.setLevel(level)
    return Path(dst)


def quantize_torch(model):
    """PyTorch dynamic int8 quantization of the ``nn.Linear`` layers, per output channel
    (a new model; the argument is left as it is)."""
    import torch
    from torch import nn

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        return quantize_dynamic(copy.deepcopy(model).to("cpu").eval(),
                                {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


# ------------------------------------------------------------------------------ export


def _prepare_out(out: Path) -> Path:
    """A fresh temporary sibling of ``out``; an existing ``out`` must be an export or empty."""
    if out.exists():
        if not out.is_dir():
            raise NaspruneError(f"{out} exists and is not a directory")
        if any(out.iterdir()) and not (out / MANIFEST).is_file():
            raise NaspruneError(f"{out} exists and is not a nasprune export; "
                                "choose an empty or new --out directory")
    tmp = out.with_name(out.name + ".tmp-export")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _publish(tmp: Path, out: Path) -> None:
    if out.exists():
        old = out.with_name(out.name + ".old-export")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def _label_names(config, preset) -> None:
    """Use the task's label names when the config still has the generic LABEL_i ones."""
    names = tuple(getattr(preset, "label_names", ()) or ())
    if not names or len(names) != config.num_labels:
        return
    current = [str(config.id2label.get(i, "")) for i in range(config.num_labels)]
    if all(c == f"LABEL_{i}" for i, c in enumerate(current)):
        config.id2label = dict(enumerate(names))
        config.label2id = {n: i for i, n in enumerate(names)}


def _cost(supernet, subnet: Subnet, seq_len: int) -> dict:
    try:
        from nasprune.cost import CostModel

        figures = CostModel(supernet, seq_len).summary(subnet)
    except (NaspruneError, ImportError, AttributeError):
        shape = supernet.shape
        figures = {
            "encoder_params": encoder_params(subnet, shape),
            "flops": encoder_flops(subnet, shape, seq_len),
            "flops_fraction": encoder_flops(subnet, shape, seq_len)
            / encoder_flops(shape.full, shape, seq_len),
        }
    figures["seq_len"] = seq_len
    return figures


def _unpack_validation(validation) -> tuple[Any, Any]:
    if validation is None:
        return None, None
    if isinstance(validation, dict):
        return validation["encoded"], validation["preset"]
    encoded, preset = validation
    return encoded, preset


def _measure(model, encoded, preset, pad_id: int, batch_size: int) -> dict:
    import torch

    from nasprune.training import evaluate

    with torch.inference_mode():
        return {k: float(v) for k, v in evaluate(model, encoded, preset, batch_size,
                                                 device=torch.device("cpu"),
                                                 pad_id=pad_id).items()}


def export_model(supernet, subnet: Subnet, out_dir: str | os.PathLike, *, tokenizer=None,
                 metrics: dict | None = None, source_model: str | None = None,
                 formats: Sequence[str] = ("hf",), quantize: str | None = None,
                 validation=None, seq_len: int = 128, batch_size: int = 64,
                 progress: Any = None, small=None) -> Path:
    """Write ``subnet`` of ``supernet`` as a deployable directory (see the module docstring).

    ``metrics``: what the search measured for this sub-network (stored as ``search``).
    ``validation``: ``(Encoded, TaskPreset)``; when given, the metric of every backend
    written (PyTorch float, ONNX float, int8) is measured on it. ``formats``: ``("hf",)`` or
    ``("hf", "onnx")`` (``"onnx"`` alone implies the HF files too). ``quantize``: ``"int8"``.
    ``progress``: optional ``callable(str)`` for status lines. ``small``: the extracted
    sub-network to write when it was changed after extraction (recovery), else extracted
    here. The directory is written beside ``out_dir`` and renamed into place, so a crash
    never leaves half an export.
    """
    import torch

    from nasprune import __version__

    say = progress or (lambda _msg: None)
    formats = tuple(dict.fromkeys(("hf", *formats)))
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise NaspruneError(f"unknown export format {bad[0]!r}; choose from {', '.join(FORMATS)}")
    if quantize is not None and quantize not in QUANTIZE:
        raise NaspruneError(f"unknown quantization {quantize!r}; choose from {', '.join(QUANTIZE)}")
    if "onnx" in formats:
        require("onnx", "onnx")
        require("onnxruntime", "onnx")
    subnet = subnet.validate(supernet.shape)
    out = Path(out_dir)
    encoded, preset = _unpack_validation(validation)
    pad_id = int(getattr(tokenizer, "pad_token_id", None) or 0)

    say(f"extracting {subnet}")
    if small is not None and tuple(map(tuple, small.config.nasprune_subnet)) != subnet.layers:
        raise NaspruneError("the model given to export is not the sub-network being exported")
    small = (small if small is not None else supernet.extract(subnet)).to("cpu").float().eval()
    config = copy.deepcopy(small.config)
    model_type = config.model_type
    cls = _remote_class(model_type)
    if source_model is None:
        source_model = getattr(supernet.model.config, "nasprune_source_model", None) or getattr(
            supernet.model.config, "_name_or_path", None) or None
    _label_names(config, preset)
    config.nasprune_source_model = source_model
    config.nasprune_version = __version__
    config.auto_map = {"AutoModelForSequenceClassification":
                       f"{Path(REMOTE_FILE).stem}.{cls.__name__}"}
    # Build the shipped class from the config and load the extracted weights strictly:
    # this proves the file users load with trust_remote_code matches nasprune's extraction.
    model = cls(config)
    try:
        model.load_state_dict(small.state_dict(), strict=True)
    except RuntimeError as exc:
        raise NaspruneError(f"the exported model class does not match the extraction: {exc}"
                            ) from exc
    model.eval()
    del small

    tmp = _prepare_out(out)
    try:
        model.save_pretrained(tmp)
        leftovers = [p.name for p in tmp.iterdir() if p.suffix in (".bin", ".pt", ".pth")]
        if leftovers or not (tmp / WEIGHTS).is_file():
            raise NaspruneError(f"unexpected weight files written: {leftovers or 'none'}")
        import nasprune.hf_remote.modeling_nasprune as remote

        shutil.copyfile(remote.__file__, tmp / REMOTE_FILE)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        shape = supernet.shape
        _write_json(tmp / SUBNET_FILE, {
            "layers": [list(layer) for layer in subnet.layers],
            "text": str(subnet),
            "kept_layers": subnet.kept_layers,
            "shape": shape.to_dict(),
            "model_type": model_type,
            "source_model": source_model,
        })
        backends = {"torch": WEIGHTS}
        report: dict[str, Any] = {"search": dict(metrics or {}),
                                  "cost": _cost(supernet, subnet, seq_len)}
        report["cost"]["params"] = int(sum(p.numel() for p in model.parameters()))
        measured: dict[str, dict] = {}
        if encoded is not None:
            report["task_metric"] = preset.metric
            say("measuring the float model")
            measured["float"] = _measure(model, encoded, preset, pad_id, batch_size)
        if "onnx" in formats:
            say("exporting ONNX")
            report["onnx_max_abs_diff"] = export_onnx(model, tmp / ONNX_FILE)
            backends["onnx"] = ONNX_FILE
            if encoded is not None:
                measured["onnx"] = _measure(OnnxClassifier(tmp / ONNX_FILE, model.config),
                                            encoded, preset, pad_id, batch_size)
        if quantize == "int8":
            if "onnx" in formats:
                say("quantizing ONNX to int8")
                quantize_onnx(tmp / ONNX_FILE, tmp / ONNX_INT8_FILE)
                backends["onnx_int8"] = ONNX_INT8_FILE
                report["int8_backend"] = "onnxruntime"
                int8_model = OnnxClassifier(tmp / ONNX_INT8_FILE, model.config)
            else:
                backends["torch_int8"] = f"{WEIGHTS} (dynamic quantization at load)"
                report["int8_backend"] = "pytorch"
                int8_model = quantize_torch(model)
            if encoded is not None:
                say("measuring the int8 model")
                measured["int8"] = _measure(int8_model, encoded, preset, pad_id, batch_size)
                name = preset.metric
                report["int8_change"] = measured["int8"][name] - measured["float"][name]
        report["validation"] = measured
        if encoded is not None:
            report["validation_examples"] = len(encoded)
        _write_json(tmp / METRICS_FILE, report)
        files = {}
        for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
            rel = path.relative_to(tmp).as_posix()
            files[rel] = {"sha256": _sha256(path), "bytes": path.stat().st_size}
        _write_json(tmp / MANIFEST, {
            "format": FORMAT, "format_version": FORMAT_VERSION, "nasprune": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "torch": torch.__version__, "model_type": model_type, "subnet": str(subnet),
            "quantize": quantize, "backends": backends, "files": files,
        })
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(f"wrote {out}")
    return out


# -------------------------------------------------------------------------------- load


@dataclass
class Export:
    """A loaded export: ``model, tokenizer = nasprune.load(DIR)`` also works.

    ``model`` is a PyTorch ``nn.Module`` (``backend == "torch"``) or an
    :class:`OnnxClassifier` (``"onnx"``); both answer ``model(**batch).logits``.
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

    def __iter__(self):
        yield self.model
        yield self.tokenizer


def verify(directory: str | os.PathLike) -> dict:
    """Check every file of the manifest (presence, size, sha256); return the manifest."""
    directory = Path(directory)
    if not directory.is_dir():
        raise NaspruneError(f"export directory not found: {directory}")
    manifest = _read_json(directory / MANIFEST, "manifest")
    if manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise NaspruneError(f"{directory / MANIFEST} is not a nasprune export manifest")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise NaspruneError(f"{directory} was written by a newer nasprune "
                            f"(format {manifest['format_version']}); upgrade nasprune")
    files = manifest["files"]
    for required in (CONFIG, WEIGHTS):
        if required not in files:
            raise NaspruneError(f"{directory}: the manifest lists no {required}")
    for rel, entry in files.items():
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise NaspruneError(f"{directory / MANIFEST} lists a path outside the export: {rel}")
        path = directory / rel
        if not path.is_file():
            raise NaspruneError(f"{directory}: {rel} is missing")
        size = path.stat().st_size
        if size != entry.get("bytes"):
            raise NaspruneError(f"{directory}: {rel} has {size} bytes, the manifest says "
                                f"{entry.get('bytes')} (truncated or replaced)")
        if _sha256(path) != entry.get("sha256"):
            raise NaspruneError(f"{directory}: {rel} fails its sha256 checksum (corrupted "
                                "or modified after export)")
    return manifest


def _choose_backend(backend: str, manifest: dict, quantized: bool) -> str:
    backends = manifest.get("backends", {})
    onnx_key = "onnx_int8" if quantized else "onnx"
    if backend == "auto":
        backend = os.environ.get(BACKEND_ENV, "auto").strip().lower() or "auto"
        if backend not in BACKENDS:
            raise NaspruneError(f"{BACKEND_ENV}={backend!r}; use one of {', '.join(BACKENDS)}")
    if backend == "auto":
        if onnx_key in backends:
            try:
                import onnxruntime  # noqa: F401

                return "onnx"
            except ImportError:
                pass
        return "torch"
    if backend not in BACKENDS:
        raise NaspruneError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "onnx" and onnx_key not in backends:
        what = "an int8 ONNX model" if quantized else "an ONNX model"
        raise NaspruneError(f"this export has no {what}; re-export with --format onnx"
                            + (" --quantize int8" if quantized else ""))
    return backend


def load(directory: str | os.PathLike, *, backend: str = "auto", quantized: bool | None = None,
         verify_checksums: bool = True, threads: int | None = None) -> Export:
    """Load an export after verifying its checksums; no code from the directory runs.

    ``backend``: ``"torch"``, ``"onnx"`` or ``"auto"`` (the ``NASPRUNE_BACKEND``
    environment variable if set, else ONNX Runtime when the export has the ONNX file for
    the chosen precision and onnxruntime is installed, else PyTorch). ``quantized``:
    default = what the export was made with (``--quantize int8``); PyTorch int8 is dynamic
    quantization applied here.
    """
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from transformers import AutoConfig

    directory = Path(directory)
    if verify_checksums:
        manifest = verify(directory)
    else:
        manifest = _read_json(directory / MANIFEST, "manifest")
    if not (directory / CONFIG).is_file():
        raise NaspruneError(f"{directory}: {CONFIG} is missing")
    quantized = (manifest.get("quantize") == "int8") if quantized is None else bool(quantized)
    chosen = _choose_backend(backend, manifest, quantized)
    try:
        config = AutoConfig.from_pretrained(str(directory))
    except (OSError, ValueError) as exc:
        raise NaspruneError(f"{directory / CONFIG}: {str(exc).splitlines()[0]}") from exc
    cls = _remote_class(config.model_type)
    try:
        state = load_file(str(directory / WEIGHTS))
    except (SafetensorError, OSError) as exc:
        raise NaspruneError(f"{directory / WEIGHTS}: unreadable weights ({exc})") from exc
    if chosen == "onnx":
        name = manifest["backends"]["onnx_int8" if quantized else "onnx"]
        model: Any = OnnxClassifier(directory / name, config, threads=threads,
                                    param_shapes=[tuple(t.shape) for t in state.values()])
    else:
        try:
            model = cls(config)
            model.load_state_dict(state, strict=True)
        except (RuntimeError, ValueError) as exc:
            raise NaspruneError(f"{directory}: weights do not fit the config: "
                                f"{str(exc).splitlines()[0]}") from exc
        model.eval()
        if quantized:
            model = quantize_torch(model)
    del state
    tokenizer = None
    if any((directory / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json",
                                               "vocab.txt")):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(directory))
    subnet = Subnet.from_json((directory / SUBNET_FILE).read_text()) if (
        directory / SUBNET_FILE).is_file() else Subnet(tuple(map(tuple, config.nasprune_subnet)))
    metrics = json.loads((directory / METRICS_FILE).read_text()) if (
        directory / METRICS_FILE).is_file() else {}
    if threads:
        torch.set_num_threads(threads)
    return Export(model=model, tokenizer=tokenizer, subnet=subnet, metrics=metrics,
                  manifest=manifest, path=directory, backend=chosen, quantized=quantized,
                  config=config)


# ------------------------------------------------------------------------ from a run


def export_from_run(run_dir: str | os.PathLike, pick: str, out: str | os.PathLike | None = None,
                    *, formats: Sequence[str] = ("hf",), quantize: str | None = None,
                    validate: bool = True, progress: Any = None) -> Path:
    """Pick a searched sub-network of ``RUN_DIR`` by a budget rule and export it.

    Reads ``RUN_DIR/supernet/`` (the reordered super-network and tokenizer) and
    ``RUN_DIR/search/trials.db``; ``pick`` is a rule of ``nasprune.search.pareto.pick``
    (``largest``, ``smallest``, a trial id, ``params<=0.5``, ...). With ``validate`` and a
    run made by ``nasprune run`` (``RUN_DIR/config.json``), the metrics are re-measured on
    the run's validation set. ``out`` defaults to ``RUN_DIR/export``.
    """
    from transformers import AutoTokenizer

    from nasprune.search.pareto import full_reference
    from nasprune.search.pareto import pick as pick_trial
    from nasprune.search.store import TrialStore
    from nasprune.supernet import Supernet

    run_dir = Path(run_dir)
    say = progress or (lambda _msg: None)
    supernet_dir = run_dir / "supernet"
    if not (supernet_dir / CONFIG).is_file():
        raise NaspruneError(f"{run_dir} has no super-network ({supernet_dir / CONFIG} missing)")
    with TrialStore.open_existing(run_dir) as store:
        trials = [t for t in store.trials() if t.is_full_fidelity]
        objectives = tuple(store.get_meta("objectives") or ("error", "params"))
        full = full_reference(trials, store.full_subnet())
    chosen = pick_trial(trials, pick, objectives, full)
    say(f"pick {pick!r} -> trial {chosen.id}: {chosen.subnet}")
    supernet = Supernet.from_pretrained(supernet_dir)
    supernet.model.eval()
    tokenizer = AutoTokenizer.from_pretrained(str(supernet_dir))
    validation, source = None, None
    if (run_dir / "config.json").is_file():
        from nasprune.data import encode, load_task_data
        from nasprune.pipeline import config_of_run

        cfg = config_of_run(run_dir)
        source = cfg.model
        if validate:
            data = load_task_data(cfg.data)
            validation = (encode(tokenizer, data, "validation", cfg.train.max_length),
                          data.preset)
    metrics = {"trial": chosen.id, **chosen.metrics}
    return export_model(supernet, chosen.subnet, out or run_dir / "export", tokenizer=tokenizer,
                        metrics=metrics, source_model=source, formats=formats,
                        quantize=quantize, validation=validation, progress=say)


# ``nasprune.export(...)`` calls export_model while ``nasprune.export.load`` stays reachable.
class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Path:
        return export_model(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
