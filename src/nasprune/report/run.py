"""What the report reads from a run directory: its configuration, summaries and search.

Every part is optional (a stage that has not run leaves it out), and a missing or broken
file reads as empty, never as an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nasprune.core.subnet import Subnet
from nasprune.errors import NaspruneError
from nasprune.files import read_json_or_none
from nasprune.rundir import EVIDENCE, RunDir
from nasprune.search.pareto import full_reference
from nasprune.search.store import Trial, TrialStore


def as_dict(value: Any) -> dict:
    """``value`` when it is a dict, else ``{}`` (a part of a file that is not as expected)."""
    return value if isinstance(value, dict) else {}


def run_config(run_dir: str | Path) -> dict[str, Any]:
    """``RUN/config.json`` as a plain dict (``{}`` when the run has none, e.g. a search
    made through the Python API)."""
    return as_dict(read_json_or_none(RunDir(run_dir).config_file))


def model_name(model: str | None) -> str | None:
    """A model as a title shows it: an alias or hub id as given, a local folder by name."""
    if not model:
        return None
    text = str(model).rstrip("/\\")
    local = text.startswith((".", "/", "~")) or Path(text).is_dir()
    return Path(text).name if local else text


def run_title(run_dir: str | Path, config: Mapping[str, Any] | None = None) -> str:
    """``"sst2 · minilm-l6"`` from the run's configuration ('' when it has none)."""
    config = run_config(run_dir) if config is None else config
    task = (config.get("data") or {}).get("task")
    parts = [p for p in (task, model_name(config.get("model"))) if p]
    return " · ".join(parts)


def check_run_dir(run_dir: str | Path) -> Path:
    """The run directory as a path, or a ``NaspruneError`` naming what is missing."""
    path = Path(run_dir)
    if not path.is_dir():
        raise NaspruneError(f"{run_dir} is not a directory: give a run directory "
                            "(the --run-dir of nasprune run)")
    if not RunDir(path).has_evidence():
        raise NaspruneError(f"{run_dir} is not a run directory: it has none of "
                            f"{', '.join(EVIDENCE)}")
    return path


class RunContents:
    """What the report reads from a run directory (each part None when absent)."""

    def __init__(self, path: Path):
        self.path, run = path, RunDir(path)
        self.config = run_config(path)
        self.summary = as_dict(read_json_or_none(run.summary_file))
        self.finetune = as_dict(read_json_or_none(run.finetune_metrics))
        self.export = as_dict(read_json_or_none(run.export_metrics))
        self.export_subnet = as_dict(read_json_or_none(run.export_subnet))
        self.recovery = as_dict(read_json_or_none(run.export_recovery))
        self.trials: list[Trial] = []
        self.meta: dict[str, Any] = {}
        self.full: dict[str, float] = {}
        self.full_trial: Trial | None = None
        if run.store.is_file():
            with TrialStore.open_existing(path) as store:
                self.trials = [t for t in store.trials() if t.is_full_fidelity]
                self.meta = store.meta()
                full_subnet = store.full_subnet()
            if self.trials:
                self.full = full_reference(self.trials, full_subnet)
                self.full_trial = next((t for t in self.trials if t.subnet == full_subnet),
                                       max(self.trials, key=lambda t: t.get("params", 0.0)))
        self.metric = (self.summary.get("metric") or self.finetune.get("metric")
                       or self.export.get("task_metric") or "metric")
        self.split = self.meta.get("split") or self.summary.get("split") or "search"
        self.pick, self.pick_exported = self._pick()

    def _pick(self) -> tuple[Trial | None, bool]:
        """The exported sub-network's trial (True), else the summary's pick (False)."""
        layers = self.export_subnet.get("layers")
        if layers:
            subnet = Subnet(tuple(tuple(layer) for layer in layers))
            for t in self.trials:
                if t.subnet == subnet:
                    return t, True
        picked = as_dict(self.summary.get("pick"))
        for t in self.trials:
            if t.id == picked.get("id"):
                return t, False
        return None, False

    @property
    def pick_rule(self) -> str | None:
        return self.summary.get("pick_rule") or self.config.get("pick")

    def unpruned_validation(self) -> float | None:
        value = as_dict(self.summary.get("unpruned")).get("validation")
        if value is None:
            value = as_dict(self.finetune.get("best")).get(self.metric)
        return value

    def exported_validation(self) -> float | None:
        value = as_dict(as_dict(self.export.get("validation")).get("float")).get(self.metric)
        if value is None:
            value = as_dict(self.summary.get("exported")).get("validation")
        return value

    def shape(self) -> dict[str, int]:
        return as_dict(self.meta.get("shape")) or as_dict(self.export_subnet.get("shape"))
