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

The files of each runtime and the quantized step are the backends' (``backends``: a
backend declares the quantizations it writes); what to write is an ``ExportOptions``
(``options.py``), checked before any work. The validation metric of every model written is
measured here and stored next to the float. ``loader.load`` reads the directory back.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from nasprune.core.subnet import Subnet
from nasprune.deploy.export.backends import BASE
from nasprune.deploy.export.backends.base import SCRATCH
from nasprune.deploy.export.format import (
    CARD_FILE,
    FORMAT,
    FORMAT_VERSION,
    METRICS_FILE,
    RECOVERY_FILE,
    SUBNET_FILE,
    WEIGHTS,
)
from nasprune.deploy.export.manifest import write as write_manifest
from nasprune.deploy.export.measure import cost_figures, flips, measure, speed
from nasprune.deploy.export.options import ExportOptions
from nasprune.deploy.export.prepare import ExportJob, build, check, copy_remote_code
from nasprune.deploy.export.staging import prepare_out, publish, same_modes
from nasprune.files import write_json


def export_model(supernet, subnet: Subnet, out_dir: str | os.PathLike, *, tokenizer=None,
                 validation=None, calibration=None, small=None, progress: Any = None,
                 options: ExportOptions | None = None, **option_values) -> Path:
    """Write ``subnet`` of ``supernet`` as a deployable directory (see the module docstring).

    What to write: ``options`` or the fields of ``ExportOptions`` as keywords (formats,
    quantize, layout, metrics, card, recovery, ...). ``validation``: ``(Encoded,
    TaskPreset)``; when given, the metric of every backend written is measured on it.
    ``calibration``: an ``Encoded`` of training texts for a quantization (without it,
    ``validation``, as the card says). ``small``: the extracted sub-network when it was
    changed after extraction (recovery), else extracted here. ``progress``: optional
    ``callable(str)``. The directory is written beside ``out_dir`` and renamed into place,
    so a crash never leaves half an export.
    """
    if options is not None and option_values:
        raise TypeError("give options= or its fields as keywords, not both")
    opts = options or ExportOptions(**option_values)
    job = check(opts, supernet, subnet, Path(out_dir), tokenizer, validation, calibration,
                 progress or (lambda _msg: None))
    build(job, small)
    tmp = prepare_out(job.out)
    try:
        backends, report = _write_backends(job, tmp)
        shutil.rmtree(tmp / SCRATCH, ignore_errors=True)  # what steps left to later ones
        _write_descriptions(job, tmp, backends, report)
        same_modes(tmp, tmp / CARD_FILE)  # written with open, as the manifest was before
        publish(tmp, job.out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    job.say(f"wrote {job.out}")
    return job.out


def _write_backends(job: ExportJob, tmp: Path) -> tuple[dict, dict]:
    """Every backend's files (and the quantized one), each measured on the validation set
    when there is one: (manifest ``backends``, ``metrics.json``)."""
    opts, model, say = job.opts, job.model, job.say
    base, *extra = opts.backends
    backends = dict(base.write(model, tmp, say).backends)
    report: dict[str, Any] = {"search": dict(opts.metrics or {}),
                              "cost": cost_figures(job.supernet, job.subnet, opts.seq_len)}
    report["cost"]["params"] = int(sum(p.numel() for p in model.parameters()))
    measured: dict[str, dict] = {}
    predicted: dict[str, Any] = {}

    def validate(name: str, runtime) -> None:
        if job.encoded is not None:
            say(f"measuring the {name} model")
            measured[name], predicted[name] = measure(runtime, job.encoded, job.preset,
                                                      job.pad_id, opts.batch_size)

    if job.encoded is not None:
        report["task_metric"] = job.preset.metric
    validate("float", model)
    for backend in extra:
        written = backend.write(model, tmp, say)
        backends.update(written.backends)
        report.update(written.report)
        validate(backend.name, written.runtime())
        if opts.time_backends:  # which float backend load(backend="auto") serves
            say(f"timing PyTorch and {backend.label} (float)")
            report["speed"] = speed({BASE: model, backend.name: written.runtime()},
                                     model.config)
    if opts.quantizer is not None:
        q = opts.quantize
        written = opts.quantizer.quantize(model, tmp, say, job.calibration)
        backends.update(written.backends)
        report.update(written.report)
        validate(q, written.runtime())
        if q in measured:
            name = job.preset.metric
            report[f"{q}_change"] = measured[q][name] - measured["float"][name]
            changed = flips(predicted["float"], predicted[q], job.encoded.labels)
            if changed is not None:
                report[f"{q}_flips"] = changed
    report["validation"] = measured
    if job.encoded is not None:
        report["validation_examples"] = len(job.encoded)
    if not job.vanilla:
        copy_remote_code(tmp)
    if job.tokenizer is not None:
        job.tokenizer.save_pretrained(tmp)
    return backends, report


def _write_descriptions(job: ExportJob, tmp: Path, backends: dict, report: dict) -> None:
    """subnet.json, metrics.json, recovery.json, the model card and the manifest."""
    import torch

    from nasprune import __version__
    from nasprune.deploy.export.card import CardInfo, model_card
    from nasprune.deploy.export.modeling_nasprune import PREFIX

    opts, subnet, shape = job.opts, job.subnet, job.supernet.shape
    write_json(tmp / SUBNET_FILE, {
        "layers": [list(layer) for layer in subnet.layers], "text": str(subnet),
        "kept_layers": subnet.kept_layers, "shape": shape.to_dict(),
        "model_type": job.model_type, "source_model": job.source_model, "layout": job.layout,
        **({"vanilla_layers": list(job.plan.kept)} if job.vanilla
           else {"why_remote": job.why_remote})})
    write_json(tmp / METRICS_FILE, report)
    if opts.recovery is not None:
        write_json(tmp / RECOVERY_FILE, opts.recovery)
    job.say("writing the model card")
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (tmp / CARD_FILE).write_text(model_card(CardInfo(
        name=job.out.name, layout=job.layout, subnet=subnet, shape=shape,
        model_type=job.model_type,
        remote_type=None if job.vanilla else PREFIX + job.model_type,
        source_model=job.source_model, report=report, params=report["cost"]["params"],
        full_params=int(sum(p.numel() for p in job.supernet.model.parameters())),
        file_bytes={n: (tmp / n).stat().st_size for n in (WEIGHTS, *backends.values())
                    if (tmp / n).is_file()},
        version=__version__, created=created,
        task=getattr(job.preset, "name", None) or (opts.card or {}).get("task"),
        reason=job.why_remote, kept=job.plan.kept if job.vanilla else (),
        has_tokenizer=job.tokenizer is not None, backends=backends,
        recovery=opts.recovery, facts=dict(opts.card or {}), quantize=opts.quantize)))
    write_manifest(tmp, {
        "format": FORMAT, "format_version": FORMAT_VERSION, "nasprune": __version__,
        "created": created, "torch": torch.__version__, "model_type": job.model_type,
        "layout": job.layout, "subnet": str(subnet), "quantize": opts.quantize,
        "backends": backends,
        **{k: v for b in opts.extra for k, v in b.manifest(report, opts.quantize).items()}})
