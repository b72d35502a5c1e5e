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
    OUT/model.int8.onnx        --quantize int8: ONNX Runtime static quantization (calibrated)
    OUT/manifest.json          sha256 and size of every file above, the layout and backends

Layouts (``manifest.json`` ``layout``):

- ``vanilla``: the sub-network has a stock form (all heads and the same FFN width in every
  kept layer, other layers removed whole; the rule and its reason: ``vanilla``).
  ``config.json`` is a stock ``BertConfig``/``RobertaConfig``/... with the kept layers
  renumbered; ``AutoModelForSequenceClassification.from_pretrained(OUT)`` loads it with
  no remote code and no nasprune.
- ``remote``: any other sub-network. ``config.json`` has ``model_type`` ``nasprune_<family>``
  and ``nasprune_subnet`` (per-layer heads/units); stock transformers refuses it unless
  ``trust_remote_code=True`` is passed (then ``modeling_nasprune.py`` builds it).

The files of each runtime and the int8 step are the backends' (``backends``); the
validation metric of every model written is measured here and stored next to the float.
``loader.load`` reads the directory back.
"""

from __future__ import annotations

import copy
import os
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

from nasprune.core.subnet import Subnet
from nasprune.deploy.export import vanilla as export_vanilla
from nasprune.deploy.export.backends import BACKENDS, BASE, FORMATS
from nasprune.deploy.export.examples import example_inputs
from nasprune.deploy.export.format import (
    CARD_FILE,
    FORMAT,
    FORMAT_VERSION,
    LAYOUT_CHOICES,
    METRICS_FILE,
    QUANTIZE,
    RECOVERY_FILE,
    REMOTE_FILE,
    SUBNET_FILE,
    WEIGHTS,
)
from nasprune.deploy.export.manifest import write as write_manifest
from nasprune.deploy.export.measure import cost_figures, measure, speed, unpack_validation
from nasprune.deploy.export.staging import prepare_out, publish, same_modes
from nasprune.errors import NaspruneError
from nasprune.files import write_json


def _copy_remote_code(directory: Path) -> None:
    """The remote layout's model class, for ``trust_remote_code``: ``modeling_nasprune.py``
    copied as ``REMOTE_FILE`` (it imports torch and transformers only), and next to it the
    shared shrinking it imports relatively, the modules of ``nasprune.core.structure``
    (listed in the manifest like every file)."""
    import nasprune.core.structure as shared
    import nasprune.deploy.export.modeling_nasprune as remote

    shutil.copyfile(remote.__file__, directory / REMOTE_FILE)
    shared.copy_to(directory)


def _remote_class(model_type: str):
    from nasprune.deploy.export.modeling_nasprune import CLASSES

    if model_type not in CLASSES:
        raise NaspruneError(f"cannot export model type {model_type!r}; supported: "
                            + ", ".join(sorted(CLASSES)))
    return CLASSES[model_type]


def _label_names(config, preset) -> None:
    """Use the task's label names when the config still has the generic LABEL_i ones."""
    names = tuple(getattr(preset, "label_names", ()) or ())
    if not names or len(names) != config.num_labels:
        return
    current = [str(config.id2label.get(i, "")) for i in range(config.num_labels)]
    if all(c == f"LABEL_{i}" for i, c in enumerate(current)):
        config.id2label = dict(enumerate(names))
        config.label2id = {n: i for i, n in enumerate(names)}


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
        "AutoModel": f"{stem}.{remote.ENCODERS[config.model_type].__name__}",
        "AutoModelForSequenceClassification": f"{stem}.{cls.__name__}",
    }
    model = cls(remote_config)
    try:
        model.load_state_dict(small.state_dict(), strict=True)
    except RuntimeError as exc:
        raise NaspruneError(f"the exported model class does not match the extraction: {exc}"
                            ) from exc
    return model.eval()


def _calibration(calibration, encoded, config, pad_id: int) -> tuple[list, str]:
    """(feeds, where they come from) for int8: the training texts given, else validation."""
    from nasprune.deploy.export.backends.onnx import calibration_feeds

    if calibration is not None:
        return calibration_feeds(calibration, config, pad_id), "training texts"
    return calibration_feeds(encoded, config, pad_id), "validation texts (none other given)"


def export_model(supernet, subnet: Subnet, out_dir: str | os.PathLike, *, tokenizer=None,
                 metrics: dict | None = None, source_model: str | None = None,
                 formats: Sequence[str] = ("hf",), quantize: str | None = None,
                 validation=None, seq_len: int = 128, batch_size: int = 64,
                 progress: Any = None, small=None, layout: str = "auto",
                 card: dict | None = None, recovery: dict | None = None,
                 calibration=None, time_backends: bool = True) -> Path:
    """Write ``subnet`` of ``supernet`` as a deployable directory (see the module docstring).

    ``metrics``: what the search measured for this sub-network (stored as ``search``).
    ``validation``: ``(Encoded, TaskPreset)``; when given, the metric of every backend
    written (PyTorch float, ONNX float, int8) is measured on it. ``formats``: ``("hf",)`` or
    ``("hf", "onnx")`` (``"onnx"`` alone implies the HF files too). ``quantize``: ``"int8"``
    (ONNX Runtime static int8, so it implies ``"onnx"``), calibrated on ``calibration``
    (an ``Encoded`` of training texts; without it, on ``validation``, as the card says).
    ``time_backends``: time PyTorch and ONNX Runtime float at batch 1, 8 and 32
    (``metrics.json`` ``speed``), so that ``load(backend="auto")`` serves the faster.
    ``progress``: optional ``callable(str)`` for status lines. ``small``: the extracted
    sub-network to write when it was changed after extraction (recovery), else extracted
    here. ``layout``: ``"auto"`` (a stock config when the sub-network has one, else remote
    code), ``"vanilla"`` (fail when it has none) or ``"remote"``. ``card``: extra facts for
    the model card (``card``: the unpruned model's metrics per split, measured
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
    formats = tuple(dict.fromkeys(("hf", *formats, *(("onnx",) if quantize else ()))))
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
    extra = [BACKENDS[name] for name in formats[1:]]  # the backends besides the base one
    for backend in extra:
        backend.check()
    subnet = subnet.validate(supernet.shape)
    out = Path(out_dir)
    encoded, preset = unpack_validation(validation)
    if quantize and calibration is None and encoded is None:
        raise NaspruneError("int8 needs calibration texts: pass calibration= (training "
                            "texts) or validation=")
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
                                     example_inputs(config, 2, 9, seed=0))
    else:
        model = _remote_model(small, config, cls)
    del small

    tmp = prepare_out(out)
    try:
        backends = dict(BACKENDS[BASE].write(model, tmp, say).backends)
        if not vanilla:
            _copy_remote_code(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        shape = supernet.shape
        write_json(tmp / SUBNET_FILE, {
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
        report: dict[str, Any] = {"search": dict(metrics or {}),
                                  "cost": cost_figures(supernet, subnet, seq_len)}
        report["cost"]["params"] = int(sum(p.numel() for p in model.parameters()))
        measured: dict[str, dict] = {}
        if encoded is not None:
            report["task_metric"] = preset.metric
            say("measuring the float model")
            measured["float"] = measure(model, encoded, preset, pad_id, batch_size)
        for backend in extra:
            written = backend.write(model, tmp, say)
            backends.update(written.backends)
            report.update(written.report)
            if encoded is not None:
                measured[backend.name] = measure(written.runtime(), encoded, preset, pad_id,
                                                 batch_size)
            if time_backends:  # which float backend load(backend="auto") serves
                say(f"timing PyTorch and {backend.label} (float)")
                report["speed"] = speed({BASE: model, backend.name: written.runtime()},
                                         model.config)
        if quantize == "int8":  # ONNX Runtime's static int8 (batch-independent)
            written = BACKENDS["onnx"].quantize(model, tmp, say, _calibration(
                calibration, encoded, model.config, pad_id))
            backends.update(written.backends)
            report.update(written.report)
            if encoded is not None:
                say("measuring the int8 model")
                measured["int8"] = measure(written.runtime(), encoded, preset, pad_id,
                                           batch_size)
                name = preset.metric
                report["int8_change"] = measured["int8"][name] - measured["float"][name]
        report["validation"] = measured
        if encoded is not None:
            report["validation_examples"] = len(encoded)
        write_json(tmp / METRICS_FILE, report)
        if recovery is not None:
            write_json(tmp / RECOVERY_FILE, recovery)
        say("writing the model card")
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        full_params = sum(p.numel() for p in supernet.model.parameters())
        (tmp / CARD_FILE).write_text(model_card(CardInfo(
            name=out.name, layout="vanilla" if vanilla else "remote", subnet=subnet,
            shape=shape, model_type=model_type,
            remote_type=None if vanilla else PREFIX + model_type, source_model=source_model,
            report=report, params=report["cost"]["params"], full_params=int(full_params),
            file_bytes={n: (tmp / n).stat().st_size for n in (WEIGHTS, *backends.values())
                        if (tmp / n).is_file()},
            version=__version__, created=created,
            task=getattr(preset, "name", None) or (card or {}).get("task"),
            reason=vanilla_plan if isinstance(vanilla_plan, str) else "layout 'remote' requested",
            kept=vanilla_plan.kept if vanilla else (), has_tokenizer=tokenizer is not None,
            backends=backends, recovery=recovery, facts=dict(card or {}))))
        write_manifest(tmp, {
            "format": FORMAT, "format_version": FORMAT_VERSION, "nasprune": __version__,
            "created": created, "torch": torch.__version__, "model_type": model_type,
            "layout": "vanilla" if vanilla else "remote", "subnet": str(subnet),
            "quantize": quantize, "backends": backends,
            **{k: v for backend in extra for k, v in backend.manifest(report, quantize).items()},
        })
        same_modes(tmp, tmp / CARD_FILE)  # written with open, as the manifest was before
        publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(f"wrote {out}")
    return out
