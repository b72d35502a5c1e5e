"""The run directory: its layout (every path in one place: the stages, the CLI, the report
and the search's store read paths from here), its configuration, one writer at a time
(``lock``), the record of finished stages (``fingerprints.json``) and its log. What a
fingerprint covers, and when a rerun is refused, is ``fingerprints``. No torch.

    RUN/config.json        the RunConfig of the last command that ran (absolute paths)
    RUN/summary.json       what the run measured (``nasprune run`` prints it)
    RUN/report.html        the run for people (``nasprune report``)
    RUN/finetune/          metrics.json, model/      the fine-tuned model
    RUN/supertrain/        metrics.json, model/      the super-network training (``--strategy``)
    RUN/supernet/          config.json, order.json   the reordered super-network
    RUN/search/            trials.db, pareto.csv     the search and its front
    RUN/export/            manifest.json, ...        the exported pick
    RUN/fingerprints.json  stage -> {hash, options}
    RUN/log.txt            what each command did: options, stages, timings, warnings
    RUN/.lock              held (fcntl, ``rundir.lock``) by the one process writing the run
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from nasprune.deploy.export.format import MANIFEST, METRICS_FILE, RECOVERY_FILE, SUBNET_FILE
from nasprune.errors import NaspruneError
from nasprune.files import write_json
from nasprune.rundir.lock import give_back, take

if TYPE_CHECKING:
    from nasprune.config import RunConfig

FINETUNE_DIR, SUPERTRAIN_DIR, SUPERNET_DIR, SEARCH_DIR, EXPORT_DIR = (
    "finetune", "supertrain", "supernet", "search", "export")
#: The stages in order; each folder is named after its stage.
ORDER = (FINETUNE_DIR, SUPERTRAIN_DIR, SUPERNET_DIR, SEARCH_DIR, EXPORT_DIR)
FINGERPRINTS, LOG = "fingerprints.json", "log.txt"
CONFIG, SUMMARY, REPORT = "config.json", "summary.json", "report.html"
MODEL, METRICS = "model", "metrics.json"
#: The search's SQLite store and its front (table, plot), inside ``RUN/search``.
STORE, PARETO, PARETO_PLOT = "trials.db", "pareto.csv", "pareto.png"
#: The file whose presence says a stage finished.
MARKERS = {FINETUNE_DIR: METRICS, SUPERTRAIN_DIR: METRICS, SUPERNET_DIR: CONFIG,
           SEARCH_DIR: STORE, EXPORT_DIR: MANIFEST}
#: Files any one of which makes a folder a run directory to read (a report of a run that
#: stopped early, or of a search made through the Python API).
EVIDENCE = (CONFIG, SUMMARY, *(f"{stage}/{MARKERS[stage]}" for stage in (FINETUNE_DIR,
                                                                          SEARCH_DIR)))


class RunDir:
    """Paths, configuration, recorded fingerprints, log and lock of one run directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock_file = None

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # ---------------------------------------------------------------- layout
    def stage(self, stage: str) -> Path:
        return self.path / stage

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG

    @property
    def summary_file(self) -> Path:
        return self.path / SUMMARY

    @property
    def report_file(self) -> Path:
        return self.path / REPORT

    @property
    def finetune_metrics(self) -> Path:
        return self.path / FINETUNE_DIR / METRICS

    @property
    def finetuned(self) -> Path:
        """The fine-tuned model (the teacher of distillation, the source of the supernet)."""
        return self.path / FINETUNE_DIR / MODEL

    @property
    def supertrained(self) -> Path:
        return self.path / SUPERTRAIN_DIR / MODEL

    @property
    def supernet(self) -> Path:
        return self.path / SUPERNET_DIR

    @property
    def store(self) -> Path:
        return self.path / SEARCH_DIR / STORE

    @property
    def pareto_dir(self) -> Path:
        """Where ``nasprune pareto`` writes the front's plot and table by default."""
        return self.path / SEARCH_DIR

    @property
    def export(self) -> Path:
        return self.path / EXPORT_DIR

    @property
    def export_metrics(self) -> Path:
        return self.path / EXPORT_DIR / METRICS_FILE

    @property
    def export_subnet(self) -> Path:
        return self.path / EXPORT_DIR / SUBNET_FILE

    @property
    def export_recovery(self) -> Path:
        return self.path / EXPORT_DIR / RECOVERY_FILE

    def is_run(self) -> bool:
        return self.config_file.is_file()

    def has_evidence(self) -> bool:
        """Whether any ``EVIDENCE`` file exists (what the report accepts)."""
        return any((self.path / name).exists() for name in EVIDENCE)

    def config(self) -> RunConfig:
        """The configuration the run directory was made with (``config.json``)."""
        from nasprune.config import RunConfig

        path = self.config_file
        if not path.is_file():
            raise NaspruneError(f"{self.path} is not a run directory (no config.json); "
                                "start one with: nasprune run --until finetune ...")
        try:
            saved = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise NaspruneError(f"{path} is not valid JSON ({exc}); repair it or start a new "
                                "--run-dir") from exc
        if not isinstance(saved, dict):
            raise NaspruneError(f"{path} does not hold a run configuration")
        return RunConfig.from_dict(saved)

    # ------------------------------------------------------------------ lock
    def lock(self) -> RunDir:
        """Become the one writer of this run directory, or fail at once naming the holder."""
        self._lock_file = take(self.path)
        return self

    @property
    def held(self) -> bool:
        return self._lock_file is not None

    def release(self) -> None:
        if self._lock_file is not None:
            self._lock_file = None
            give_back(self.path)

    def __enter__(self) -> RunDir:
        return self.lock()

    def __exit__(self, *exc) -> None:
        self.release()

    # ---------------------------------------------------------- fingerprints
    def recorded(self) -> dict:
        path = self.path / FINGERPRINTS
        if not path.is_file():
            return {}
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise NaspruneError(f"{path} is not valid JSON; delete it to trust the run "
                                "directory as it is") from exc

    def done(self, stage: str) -> bool:
        """Whether ``stage`` left its output (the same tests the stages use to reuse it)."""
        return (self.path / stage / MARKERS[stage]).is_file()

    def forget(self, stages) -> None:
        """Delete the outputs and fingerprints of ``stages``."""
        recorded = self.recorded()
        for stage in stages:
            shutil.rmtree(self.path / stage, ignore_errors=True)
            recorded.pop(stage, None)
        self._write(FINGERPRINTS, recorded)

    def record(self, stage: str, fingerprint: dict) -> None:
        recorded = self.recorded()
        recorded[stage] = fingerprint
        self._write(FINGERPRINTS, recorded)

    def matches(self, stage: str, fingerprint: dict) -> bool:
        return self.recorded().get(stage, {}).get("hash") == fingerprint["hash"]

    def _write(self, name: str, value) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        write_json(self.path / name, value)

    # ------------------------------------------------------------------- log
    def log(self, message: str) -> None:
        """Append one line to ``RUN/log.txt``."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / LOG, "a") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
