"""Deployable pruned models: a self-describing directory that loads in one line.

``export_model`` extracts a sub-network (a physically smaller dense model) and writes::

    OUT/config.json            the model config (see "layouts" below), label names,
                               nasprune_source_model, nasprune_version
    OUT/model.safetensors      the weights (never pickle)
    OUT/modeling_nasprune.py   remote layout only: the model class for trust_remote_code
                               (imports torch + transformers only)
    OUT/tokenizer files        when a tokenizer is given
    OUT/subnet.json            the sub-network, the full model's shape, the source model
    OUT/metrics.json           validation metric per backend (float, ONNX, int8) + cost figures
    OUT/recovery.json          when export_model(recovery=...) is given
    OUT/README.md              the model card, with Hugging Face metadata
    OUT/model.onnx             --format onnx: dynamic batch and sequence axes
    OUT/model.int8.onnx        --format onnx --quantize int8: ONNX Runtime dynamic quantization
    OUT/manifest.json          sha256 and size of every file above, the layout and backends

Layouts (``manifest.json`` ``layout``):

- ``vanilla``: the sub-network has a stock form (all heads and the same FFN width in every
  kept layer, other layers removed whole; the rule and its reason: ``export_vanilla``).
  ``config.json`` is a stock ``BertConfig``/``RobertaConfig``/... with the kept layers
  renumbered; ``AutoModelForSequenceClassification.from_pretrained(OUT)`` loads it with
  no remote code and no nasprune.
- ``remote``: any other sub-network. ``config.json`` has ``model_type`` ``nasprune_<family>``
  and ``nasprune_subnet`` (per-layer heads/units); stock transformers refuses it unless
  ``trust_remote_code=True`` is passed (then ``modeling_nasprune.py`` builds it).

``load`` verifies the export whole (``export_manifest.verify``: every file listed and
intact, nothing unlisted) and returns an :class:`Export` (unpacks as ``model,
tokenizer``); it builds the model from the classes of transformers and of
``nasprune.deploy.export.modeling_nasprune``, so no code from the directory runs.
``load_model_dir`` is the loader for servers:
a nasprune export (any nasprune file present) goes through ``load``, a plain Hugging Face
directory through ``from_pretrained``.

int8 is dynamic quantization of the linear layers: with ONNX, a quantized copy of the graph
is written; without, the float safetensors are the only weights and ``load`` quantizes them
with PyTorch at load time (quantized PyTorch modules cannot be stored as safetensors).
Either way the validation metric is re-measured at export time and stored next to the float.
"""

from __future__ import annotations

import copy
import json
import os
import re
import secrets
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from nasprune.core.models import uses_token_types  # noqa: F401
from nasprune.core.subnet import Subnet, SubnetError, encoder_flops, encoder_params
from nasprune.deploy.export import vanilla as export_vanilla
from nasprune.deploy.export.manifest import (  # noqa: F401  (re-exported names)
    CARD_FILE,
    CONFIG,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    METRICS_FILE,
    ONNX_FILE,
    ONNX_INT8_FILE,
    RECOVERY_FILE,
    REMOTE_FILE,
    SUBNET_FILE,
    WEIGHTS,
    file_entries,
    nasprune_markers,
    read_manifest,
    read_object,
    verify,
)
from nasprune.deploy.export.onnx import (  # noqa: F401  (re-exported names)
    ONNX_OPSET,
    OnnxClassifier,
    _example_inputs,
    export_onnx,
    input_names,
    quantize_onnx,
    quantize_torch,
    write_onnx,
)
from nasprune.errors import NaspruneError, require

FORMATS = ("hf", "onnx")
QUANTIZE = ("int8",)
BACKENDS = ("auto", "torch", "onnx")
#: ``export_model(layout=...)``: vanilla when possible, always vanilla (or fail), remote code.
LAYOUT_CHOICES = ("auto", "vanilla", "remote")
#: Environment variable that overrides ``backend="auto"`` (e.g. for ``nasprune serve``).
BACKEND_ENV = "NASPRUNE_BACKEND"
TMP_SUFFIX = ".tmp-export"
OLD_SUFFIX = ".old-export"


# ------------------------------------------------------------------------------ helpers


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=float) + "\n")


def _families() -> dict:
    from nasprune.deploy.export.modeling_nasprune import CLASSES

    return CLASSES


def _remote_class(model_type: str):
    classes = _families()
    if model_type not in classes:
        raise NaspruneError(f"cannot export model type {model_type!r}; supported: "
                            + ", ".join(sorted(classes)))
    return classes[model_type]

# ------------------------------------------------------------------------------ export


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid < 2**31  # another user's live process, or an absurd number
    return True


_HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"
_TEMP_NAME = re.compile(r"-(\d+)@([A-Za-z0-9._]+)-[0-9a-f]{8}")
#: A temporary directory of another machine (shared disk) is removed when older than this.
FOREIGN_TEMP_AGE_S = 24 * 3600


def _clean_stale(out: Path) -> None:
    """Remove ``out``'s temporary and old directories whose writer died (kill -9): the
    fixed names of older versions, and unique names (``-<pid>@<host>-<random>``) of this
    host whose process is gone, or of another host when older than a day."""
    if not out.parent.is_dir():
        return
    for suffix in (TMP_SUFFIX, OLD_SUFFIX):
        stem = out.name + suffix
        for path in out.parent.iterdir():
            if not path.name.startswith(stem) or path.is_symlink() or not path.is_dir():
                continue
            rest = path.name[len(stem):]
            match = _TEMP_NAME.fullmatch(rest)
            if rest == "":
                stale = True
            elif match is None:
                continue  # not one of ours
            elif match.group(2) == _HOST:
                stale = not _pid_alive(int(match.group(1)))
            else:
                stale = time.time() - path.stat().st_mtime > FOREIGN_TEMP_AGE_S
            if stale:
                shutil.rmtree(path, ignore_errors=True)


def _unique(out: Path, suffix: str) -> Path:
    return out.with_name(f"{out.name}{suffix}-{os.getpid()}@{_HOST}-{secrets.token_hex(4)}")


def _prepare_out(out: Path) -> Path:
    """A fresh temporary sibling of ``out`` (unique per process, so a concurrent or killed
    export never shares it); an existing ``out`` must be an export or empty."""
    if out.exists():
        if not out.is_dir():
            raise NaspruneError(f"{out} exists and is not a directory")
        if any(out.iterdir()) and not (out / MANIFEST).is_file():
            raise NaspruneError(f"{out} exists and is not a nasprune export; "
                                "choose an empty or new --out directory")
    _clean_stale(out)
    tmp = _unique(out, TMP_SUFFIX)
    tmp.mkdir(parents=True)
    return tmp


def _publish(tmp: Path, out: Path) -> None:
    if out.exists():
        old = _unique(out, OLD_SUFFIX)
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def _same_modes(directory: Path, reference: Path) -> None:
    """Every file gets the mode of ``reference`` (written with ``open``: 0666 less the
    umask, 0644 usually); safetensors creates its file 0600."""
    mode = reference.stat().st_mode & 0o777
    for path in directory.rglob("*"):
        if path.is_file():
            path.chmod(mode)


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
        from nasprune.core.cost import CostModel

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

    from nasprune.train.loop import evaluate

    with torch.inference_mode():
        return {k: float(v) for k, v in evaluate(model, encoded, preset, batch_size,
                                                 device=torch.device("cpu"),
                                                 pad_id=pad_id).items()}


def _remote_model(small, config, cls):
    """The shipped class built from a ``nasprune_<family>`` config, with the extracted
    weights loaded strictly: proves that what users load with trust_remote_code matches
    nasprune's extraction."""
    from nasprune.deploy.export import modeling_nasprune as remote

    data = {k: v for k, v in config.to_dict().items() if k != "model_type"}
    remote_config = remote.CONFIGS[config.model_type].from_dict(data)
    stem = Path(REMOTE_FILE).stem
    remote_config.auto_map = {
        "AutoConfig": f"{stem}.{type(remote_config).__name__}",
        "AutoModelForSequenceClassification": f"{stem}.{cls.__name__}",
    }
    model = cls(remote_config)
    try:
        model.load_state_dict(small.state_dict(), strict=True)
    except RuntimeError as exc:
        raise NaspruneError(f"the exported model class does not match the extraction: {exc}"
                            ) from exc
    return model.eval()


def export_model(supernet, subnet: Subnet, out_dir: str | os.PathLike, *, tokenizer=None,
                 metrics: dict | None = None, source_model: str | None = None,
                 formats: Sequence[str] = ("hf",), quantize: str | None = None,
                 validation=None, seq_len: int = 128, batch_size: int = 64,
                 progress: Any = None, small=None, layout: str = "auto",
                 card: dict | None = None, recovery: dict | None = None) -> Path:
    """Write ``subnet`` of ``supernet`` as a deployable directory (see the module docstring).

    ``metrics``: what the search measured for this sub-network (stored as ``search``).
    ``validation``: ``(Encoded, TaskPreset)``; when given, the metric of every backend
    written (PyTorch float, ONNX float, int8) is measured on it. ``formats``: ``("hf",)`` or
    ``("hf", "onnx")`` (``"onnx"`` alone implies the HF files too). ``quantize``: ``"int8"``.
    ``progress``: optional ``callable(str)`` for status lines. ``small``: the extracted
    sub-network to write when it was changed after extraction (recovery), else extracted
    here. ``layout``: ``"auto"`` (a stock config when the sub-network has one, else remote
    code), ``"vanilla"`` (fail when it has none) or ``"remote"``. ``card``: extra facts for
    the model card (``export_card``: the unpruned model's metrics per split, measured
    speed-up, the search split's name, ...). ``recovery``: the recovery report
    (``RecoveryReport.to_dict()``), written as ``recovery.json`` and shown on the card.
    The directory is written beside ``out_dir`` and renamed into place, so a crash never
    leaves half an export.
    """
    import torch

    from nasprune import __version__
    from nasprune.deploy.export.card import CardInfo, model_card
    from nasprune.deploy.export.modeling_nasprune import PREFIX

    say = progress or (lambda _msg: None)
    formats = tuple(dict.fromkeys(("hf", *formats)))
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise NaspruneError(f"unknown export format {bad[0]!r}; choose from {', '.join(FORMATS)}")
    if quantize is not None and quantize not in QUANTIZE:
        raise NaspruneError(f"unknown quantization {quantize!r}; choose from {', '.join(QUANTIZE)}")
    if layout not in LAYOUT_CHOICES:
        raise NaspruneError(f"unknown layout {layout!r}; choose from {', '.join(LAYOUT_CHOICES)}")
    for name, value in (("card", card), ("recovery", recovery)):
        if value is not None and not isinstance(value, dict):
            raise NaspruneError(f"{name} must be a dict, not {type(value).__name__}")
    if "onnx" in formats:
        require("onnx", "onnx")
        require("onnxruntime", "onnx")
    subnet = subnet.validate(supernet.shape)
    out = Path(out_dir)
    encoded, preset = _unpack_validation(validation)
    pad_id = int(getattr(tokenizer, "pad_token_id", None) or 0)
    vanilla_plan = export_vanilla.plan(subnet, supernet.shape)
    if layout == "vanilla" and isinstance(vanilla_plan, str):
        raise NaspruneError(f"{subnet} has no stock-config form: {vanilla_plan}")
    vanilla = layout != "remote" and not isinstance(vanilla_plan, str)

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
    if vanilla:
        say(f"stock {model_type} layout: {len(vanilla_plan.kept)} layers of "
            f"{vanilla_plan.units} units")
        model = export_vanilla.build(small, vanilla_plan, config,
                                     _example_inputs(config, 2, 9, seed=0))
    else:
        model = _remote_model(small, config, cls)
    del small

    tmp = _prepare_out(out)
    try:
        model.save_pretrained(tmp)
        leftovers = [p.name for p in tmp.iterdir() if p.suffix in (".bin", ".pt", ".pth")]
        if leftovers or not (tmp / WEIGHTS).is_file():
            raise NaspruneError(f"unexpected weight files written: {leftovers or 'none'}")
        if not vanilla:
            import nasprune.deploy.export.modeling_nasprune as remote

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
            "layout": "vanilla" if vanilla else "remote",
            **({"vanilla_layers": list(vanilla_plan.kept)} if vanilla else
               {"why_remote": vanilla_plan if isinstance(vanilla_plan, str)
                else "layout 'remote' requested"}),
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
            onnx_report = write_onnx(model, tmp / ONNX_FILE)
            if not onnx_report["optimized"]:
                say(f"ONNX graph not optimised: {onnx_report['why_not_optimized']}")
            report["onnx_max_abs_diff"] = onnx_report["max_abs_diff"]
            report["onnx"] = onnx_report
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
        if recovery is not None:
            _write_json(tmp / RECOVERY_FILE, recovery)
        say("writing the model card")
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        full_params = sum(p.numel() for p in supernet.model.parameters())
        (tmp / CARD_FILE).write_text(model_card(CardInfo(
            name=out.name, layout="vanilla" if vanilla else "remote", subnet=subnet,
            shape=shape, model_type=model_type,
            remote_type=None if vanilla else PREFIX + model_type, source_model=source_model,
            report=report, params=report["cost"]["params"], full_params=int(full_params),
            file_bytes={n: (tmp / n).stat().st_size for n in (WEIGHTS, ONNX_FILE, ONNX_INT8_FILE)
                        if (tmp / n).is_file()},
            version=__version__, created=created,
            task=getattr(preset, "name", None) or (card or {}).get("task"),
            reason=vanilla_plan if isinstance(vanilla_plan, str) else "layout 'remote' requested",
            kept=vanilla_plan.kept if vanilla else (), has_tokenizer=tokenizer is not None,
            backends=backends, recovery=recovery, facts=dict(card or {}))))
        _write_json(tmp / MANIFEST, {
            "format": FORMAT, "format_version": FORMAT_VERSION, "nasprune": __version__,
            "created": created, "torch": torch.__version__, "model_type": model_type,
            "layout": "vanilla" if vanilla else "remote", "subnet": str(subnet),
            "quantize": quantize, "backends": backends, "files": file_entries(tmp),
            **({"onnx": _onnx_manifest(report["onnx"], quantize)} if "onnx" in report else {}),
        })
        _same_modes(tmp, tmp / MANIFEST)
        _publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(f"wrote {out}")
    return out


def _onnx_manifest(onnx_report: dict, quantize: str | None) -> dict:
    """What the manifest says about the ONNX files: exporter, opset, whether the graph is
    ONNX Runtime's fused one (it then uses com.microsoft contrib ops) or why not."""
    out = {k: onnx_report[k] for k in ("exporter", "opset", "optimized") if k in onnx_report}
    if not onnx_report.get("optimized"):
        out["why_not_optimized"] = onnx_report.get("why_not_optimized")
    if quantize == "int8":
        from nasprune.deploy.export.onnx import INT8_PER_CHANNEL, INT8_REDUCE_RANGE

        out["int8"] = {"method": "onnxruntime dynamic", "per_channel": INT8_PER_CHANNEL,
                       "reduce_range": INT8_REDUCE_RANGE,
                       "of": "optimised graph" if onnx_report.get("optimized") else "plain graph"}
    return out


# -------------------------------------------------------------------------------- load


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
        what = "int8 ONNX model" if quantized else "ONNX model"
        raise NaspruneError(f"this export has no {what}; re-export with --format onnx"
                            + (" --quantize int8" if quantized else ""))
    return backend


def _read_config(directory: Path, layout: str):
    """The stock-family config of an export (``model_type`` ``nasprune_bert`` is read as a
    ``BertConfig`` carrying ``nasprune_subnet``)."""
    from transformers import CONFIG_MAPPING

    from nasprune.deploy.export.modeling_nasprune import PREFIX

    path = directory / CONFIG
    data = read_object(path, "config")
    model_type = data.get("model_type")
    families = _families()
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


def _build(config, layout: str):
    from transformers import AutoModelForSequenceClassification

    if layout == "vanilla":
        return AutoModelForSequenceClassification.from_config(config)
    return _families()[config.model_type](config)


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
         verify_checksums: bool = True, threads: int | None = None) -> Export:
    """Load an export after verifying it whole; no code from the directory runs.

    ``backend``: ``"torch"``, ``"onnx"`` or ``"auto"`` (the ``NASPRUNE_BACKEND``
    environment variable if set, else ONNX Runtime when the export has the ONNX file for
    the chosen precision and onnxruntime is installed, else PyTorch). ``quantized``:
    default = what the export was made with (``--quantize int8``); PyTorch int8 is dynamic
    quantization applied here. ``verify_checksums=False`` skips hashing and the check for
    unlisted files (the manifest must still be well-formed).
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
    chosen = _choose_backend(backend, manifest, quantized)
    config = _read_config(directory, layout)
    subnet = _read_subnet(directory, config, layout)
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
            model = _build(config, layout)
            model.load_state_dict(state, strict=True)
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:
            raise NaspruneError(f"{directory}: weights do not fit the config: "
                                f"{str(exc).splitlines()[0]}") from exc
        model.eval()
        if quantized:
            model = quantize_torch(model)
    del state
    tokenizer = _load_tokenizer(directory, config)
    metrics = read_object(directory / METRICS_FILE, "metrics") if (
        directory / METRICS_FILE).is_file() else {}
    if threads:
        torch.set_num_threads(threads)
    return Export(model=model, tokenizer=tokenizer, subnet=subnet, metrics=metrics,
                  manifest=manifest, path=directory, backend=chosen, quantized=quantized,
                  config=config, layout=layout)


def load_model_dir(model_dir: str | os.PathLike, *, threads: int | None = None):
    """The loader for servers: an :class:`Export` when ``model_dir`` holds any nasprune
    file (verified whole by ``load``; a damaged export is refused, never loaded another
    way), else ``(model, tokenizer)`` of a plain Hugging Face directory."""
    path = Path(model_dir).expanduser()
    if not path.is_dir():
        raise NaspruneError(f"model directory not found: {path}")
    if nasprune_markers(path):
        return load(path, threads=threads)
    if not (path / CONFIG).is_file():
        raise NaspruneError(f"{path} is not a model directory (no config.json)")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        model = AutoModelForSequenceClassification.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NaspruneError(f"cannot load {path}: {first}") from exc
    return model.eval(), tokenizer


# ------------------------------------------------------------------------ from a run


def export_from_run(run_dir: str | os.PathLike, pick: str, out: str | os.PathLike | None = None,
                    *, formats: Sequence[str] = ("hf",), quantize: str | None = None,
                    validate: bool = True, progress: Any = None, layout: str = "auto",
                    card: dict | None = None) -> Path:
    """Pick a searched sub-network of ``RUN_DIR`` by a budget rule and export it.

    Reads ``RUN_DIR/supernet/`` (the reordered super-network and tokenizer) and
    ``RUN_DIR/search/trials.db``; ``pick`` is a rule of ``nasprune.search.pareto.pick``
    (``largest``, ``smallest``, a trial id, ``params<=0.5``, ...). With ``validate`` and a
    run made by ``nasprune run`` (``RUN_DIR/config.json``), the metrics are re-measured on
    the run's validation set. ``out`` defaults to ``RUN_DIR/export``. ``layout`` as for
    ``export_model``; the model card gets the run's facts (``export_card.run_card_facts``)
    updated with ``card``.
    """
    from transformers import AutoTokenizer

    from nasprune.core.supernet import Supernet
    from nasprune.deploy.export.card import run_card_facts
    from nasprune.search.pareto import full_reference
    from nasprune.search.pareto import pick as pick_trial
    from nasprune.search.store import TrialStore

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
        from nasprune.data.tasks import encode, load_task_data
        from nasprune.pipeline import config_of_run

        cfg = config_of_run(run_dir)
        source = cfg.model
        if validate:
            data = load_task_data(cfg.data)
            validation = (encode(tokenizer, data, "validation", cfg.train.max_length),
                          data.preset)
    metrics = {"trial": chosen.id, **chosen.metrics}
    facts = {**run_card_facts(run_dir), **(card or {})}
    return export_model(supernet, chosen.subnet, out or run_dir / "export", tokenizer=tokenizer,
                        metrics=metrics, source_model=source, formats=formats,
                        quantize=quantize, validation=validation, progress=say,
                        layout=layout, card=facts)

