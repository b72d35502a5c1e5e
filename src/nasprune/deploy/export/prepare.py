"""The first steps of an export: check what was asked (before any work) and build the
model to write (extracted, with the export's config and class, stock or remote)."""

from __future__ import annotations

import copy
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nasprune.core.subnet import Subnet
from nasprune.deploy.export import vanilla as export_vanilla
from nasprune.deploy.export.backends.base import Calibration
from nasprune.deploy.export.examples import example_inputs
from nasprune.deploy.export.format import REMOTE_FILE
from nasprune.deploy.export.measure import unpack_validation
from nasprune.deploy.export.options import ExportOptions
from nasprune.errors import NaspruneError


@dataclass
class ExportJob:
    """One export in progress: what was asked and what the steps found out."""

    opts: ExportOptions
    supernet: Any
    subnet: Subnet
    out: Path
    tokenizer: Any
    encoded: Any  # validation texts (an Encoded) or None
    preset: Any
    calibration: Calibration | None
    plan: Any  # export_vanilla.plan: a plan, or why there is no stock form (a str)
    say: Any
    model: Any = None
    model_type: str = ""
    source_model: str | None = None

    @property
    def vanilla(self) -> bool:
        return self.opts.layout != "remote" and not isinstance(self.plan, str)

    @property
    def layout(self) -> str:
        return "vanilla" if self.vanilla else "remote"

    @property
    def why_remote(self) -> str:
        return self.plan if isinstance(self.plan, str) else "layout 'remote' requested"

    @property
    def pad_id(self) -> int:
        return int(getattr(self.tokenizer, "pad_token_id", None) or 0)


def check(opts, supernet, subnet, out, tokenizer, validation, calibration, say) -> ExportJob:
    """Everything that can be refused, before any work."""
    for backend in opts.extra:
        backend.check()
    subnet = subnet.validate(supernet.shape)
    encoded, preset = unpack_validation(validation)
    job = ExportJob(opts, supernet, subnet, out, tokenizer, encoded, preset, None,
               export_vanilla.plan(subnet, supernet.shape), say)
    if opts.quantize:
        if calibration is None and encoded is None:
            raise NaspruneError(f"{opts.quantize} needs calibration texts: pass calibration= "
                                "(training texts) or validation=")
        job.calibration = Calibration(
            *((calibration, "training texts") if calibration is not None
              else (encoded, "validation texts (none other given)")), job.pad_id)
    if opts.layout == "vanilla" and isinstance(job.plan, str):
        raise NaspruneError(f"{subnet} has no stock-config form: {job.plan}")
    return job


def build(job: ExportJob, small) -> None:
    """The model to write: extracted (or ``small``), with the export's config and class."""
    from nasprune import __version__

    supernet, subnet = job.supernet, job.subnet
    job.say(f"extracting {subnet}")
    if small is not None and tuple(map(tuple, small.config.nasprune_subnet)) != subnet.layers:
        raise NaspruneError("the model given to export is not the sub-network being exported")
    small = (small if small is not None else supernet.extract(subnet)).to("cpu").float().eval()
    config = copy.deepcopy(small.config)
    job.model_type = config.model_type
    cls = _remote_class(job.model_type)
    job.source_model = job.opts.source_model or getattr(
        supernet.model.config, "nasprune_source_model", None) or getattr(
        supernet.model.config, "_name_or_path", None) or None
    _label_names(config, job.preset)
    config.nasprune_source_model = job.source_model
    config.nasprune_version = __version__
    if job.vanilla:
        job.say(f"stock {job.model_type} layout: {len(job.plan.kept)} layers of "
                f"{job.plan.units} units")
        job.model = export_vanilla.build(small, job.plan, config,
                                         example_inputs(config, 2, 9, seed=0))
    else:
        job.model = _remote_model(small, config, cls)


def copy_remote_code(directory: Path) -> None:
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
