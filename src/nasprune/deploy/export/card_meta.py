"""The Hugging Face metadata (YAML front matter) of an export's model card: the base
model as a Hub id, its license, the dataset with its config, the validation metric."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def _hub_id(name: str | None) -> str | None:
    """The Hub model id of ``name``: a packaged alias's original (``minilm-l6`` ->
    ``sentence-transformers/all-MiniLM-L6-v2``), ``name`` when it can be a hub id (not a
    local path), else None."""
    from nasprune.core.models import ALIAS_HUB

    if name in ALIAS_HUB:
        return ALIAS_HUB[name][0]
    if not name or not _HUB_ID.fullmatch(name) or Path(name).expanduser().exists():
        return None
    return name


def _license(info: Any) -> str | None:
    """The license given, else the base model's: a packaged alias's, or the ``license`` of
    a local base model's own card (``README.md`` front matter)."""
    import yaml

    from nasprune.core.models import ALIAS_HUB

    if info.facts.get("license"):
        return str(info.facts["license"])
    if info.source_model in ALIAS_HUB:
        return ALIAS_HUB[info.source_model][1]
    card = Path(info.source_model).expanduser() / "README.md" if info.source_model else None
    if card is None or not card.is_file():
        return None
    text = card.read_text(errors="replace")
    if not text.startswith("---\n") or "\n---" not in text[4:]:
        return None
    try:
        meta = yaml.safe_load(text[4:].split("\n---", 1)[0])
    except yaml.YAMLError:
        return None
    value = meta.get("license") if isinstance(meta, dict) else None
    return str(value) if isinstance(value, str) else None


def _dataset(info: Any) -> tuple[str | None, str | None]:
    """(Hub dataset id, its config): given, or ``glue`` with the task for a GLUE task."""
    from nasprune.data.presets import PRESETS

    if info.facts.get("dataset"):
        return str(info.facts["dataset"]), info.task
    if info.task in PRESETS:
        return "glue", info.task
    return None, None


def metadata(info, rows) -> dict:
    meta: dict[str, Any] = {"library_name": "transformers", "pipeline_tag": "text-classification"}
    base = _hub_id(info.source_model)
    if base:
        meta["base_model"] = base
    license_ = _license(info)
    if license_:
        meta["license"] = license_
    tags = ["nasprune", "pruned", "structured-pruning", "text-classification", info.model_type]
    if info.layout == "remote":
        tags.append("custom_code")
    meta["tags"] = tags
    dataset, config = _dataset(info)
    if dataset:
        meta["datasets"] = [dataset]
    # float32 and, when the export has one, the quantized model that serve answers with
    validation = [r for r in rows if r[0].startswith(("exported, PyTorch", "exported, int8"))
                  and r[3] is not None]
    if validation:
        meta["metrics"] = sorted({r[2] for r in validation})
        task = info.task or "text-classification"
        meta["model-index"] = [{"name": info.name, "results": [{
            "task": {"type": "text-classification"},
            "dataset": {"name": f"{dataset} {config}" if dataset and config else task,
                        "type": dataset or task, **({"config": config} if config else {}),
                        "split": "validation"},
            "metrics": [{"type": r[2], "value": float(r[3]), "name": f"{r[2]} (validation"
                         + (", int8)" if "int8" in r[0] else ")")} for r in validation],
        }]}]
    return meta


