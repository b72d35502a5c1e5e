"""The run directory: its layout (every path in one place), one writer at a time, stage
fingerprints and its log.

A stage's *fingerprint* is a hash of the options that determine its output plus the
fingerprint of the stage before it. ``RUN/fingerprints.json`` records the fingerprint each
finished stage was computed with, so a rerun reuses a stage only when its options are the
ones it was made with, and otherwise says which options changed and how to go on; nothing
in the run directory ever claims an option that was not applied.

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
    RUN/.lock              held (fcntl, ``runlock``) by the one process writing the run
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

from nasprune import runlock
from nasprune.errors import NaspruneError
from nasprune.files import write_json

if TYPE_CHECKING:
    from nasprune.config import RunConfig

FINETUNE_DIR, SUPERTRAIN_DIR, SUPERNET_DIR, SEARCH_DIR, EXPORT_DIR = (
    "finetune", "supertrain", "supernet", "search", "export")
#: The stages in order; each folder is named after its stage.
ORDER = (FINETUNE_DIR, SUPERTRAIN_DIR, SUPERNET_DIR, SEARCH_DIR, EXPORT_DIR)
FINGERPRINTS, LOG = "fingerprints.json", "log.txt"
CONFIG, SUMMARY, REPORT = "config.json", "summary.json", "report.html"
MODEL, METRICS = "model", "metrics.json"
#: The search's SQLite store and its front, inside ``RUN/search``.
STORE, PARETO = "trials.db", "pareto.csv"
#: The file whose presence says a stage finished.
MARKERS = {FINETUNE_DIR: METRICS, SUPERTRAIN_DIR: METRICS, SUPERNET_DIR: "config.json",
           SEARCH_DIR: STORE, EXPORT_DIR: "manifest.json"}
#: Options whose flag is not simply the field name with dashes.
FLAGS = {"train.learning_rate": "--lr", "export_formats": "--format",
         "train.strategy_options.epochs": "--supernet-epochs", "budget": "--pick"}
#: Fields that never change a result (where it runs, how it reports).
NEUTRAL = {"train.progress", "train.threads", "train.device", "train.eval_batch_size",
           "search.eval_batch_size", "search.backend", "search.workers", "search.address",
           "search.cpus_per_worker", "search.gpus_per_worker", "search.trials", "force",
           "data.distill_file"}


def flag(key: str) -> str:
    return FLAGS.get(key, "--" + key.split(".")[-1].replace("_", "-"))


def _flat(prefix: str, value) -> dict:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(_flat(f"{prefix}.{k}" if prefix else k, v))
        return out
    return {prefix: list(value) if isinstance(value, tuple) else value}


def stage_options(cfg: RunConfig, stage: str, teacher_strategy: bool) -> dict:
    """The options that determine ``stage``'s output, flattened to dotted keys."""
    flat = {k: v for k, v in _flat("", cfg.to_dict()).items() if k not in NEUTRAL}
    pick = lambda *prefixes: {k: v for k, v in flat.items()  # noqa: E731
                              if k.startswith(prefixes)}
    search_space = ("search.space", "search.unit_step", "search.any_heads")
    if stage == FINETUNE_DIR:
        out = {**pick("model", "data.", "train."), "model": cfg.model}
        if teacher_strategy:  # the teacher is fine-tuned plainly; the strategy runs later
            out = {k: v for k, v in out.items() if not k.startswith("train.strategy")}
        return out
    if stage == SUPERTRAIN_DIR:
        return {**pick("train.strategy", *search_space, "search.importance",
                       "search.calibration_examples"), "budget": cfg.budget()}
    if stage == SUPERNET_DIR:
        return pick("search.importance", "search.calibration_examples")
    if stage == SEARCH_DIR:
        return pick(*search_space, "search.searcher", "search.objectives",
                    "search.low_fidelity", "search.seed")
    return {**pick("pick", "export_formats", "quantize", "recover"),
            "data.distill_file": cfg.data.distill_file}


def fingerprints(cfg: RunConfig, teacher_strategy: bool) -> dict[str, dict]:
    """Every stage's options and hash (chained: a stage's hash covers the earlier ones)."""
    out, upstream = {}, ""
    for stage in ORDER:
        if stage == SUPERTRAIN_DIR and not teacher_strategy:
            continue
        options = stage_options(cfg, stage, teacher_strategy)
        text = json.dumps({"options": options, "upstream": upstream}, sort_keys=True,
                          default=str)
        upstream = hashlib.sha256(text.encode()).hexdigest()[:16]
        out[stage] = {"hash": upstream, "options": options}
    return out


class RunDir:
    """Paths, configuration, fingerprints, log and lock of one run directory."""

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
    def export(self) -> Path:
        return self.path / EXPORT_DIR

    def is_run(self) -> bool:
        return self.config_file.is_file()

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
        self._lock_file = runlock.take(self.path)
        return self

    @property
    def held(self) -> bool:
        return self._lock_file is not None

    def release(self) -> None:
        if self._lock_file is not None:
            self._lock_file = None
            runlock.give_back(self.path)

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

    def check(self, wanted: dict[str, dict], redo: str | None = None) -> None:
        """Refuse a rerun whose options differ from what a finished stage was made with;
        ``redo`` deletes that stage and every later one first. A changed export is redone
        (post-search options simply produce the export they ask for)."""
        if redo is not None:
            if redo not in ORDER:
                raise NaspruneError(f"unknown stage {redo!r} for --redo; choose one of "
                                    + ", ".join(ORDER))
            self.forget(ORDER[ORDER.index(redo):])
        recorded = self.recorded()
        for stage, new in wanted.items():
            old = recorded.get(stage)
            if stage == EXPORT_DIR or not self.done(stage) or old is None:
                continue
            if old["hash"] != new["hash"]:
                changed = [k for k in sorted(set(old["options"]) | set(new["options"]))
                           if old["options"].get(k) != new["options"].get(k)]
                if not changed:  # an earlier stage changed: that one is named first
                    continue
                what = ", ".join(f"{flag(k)} ({old['options'].get(k)!r} -> "
                                 f"{new['options'].get(k)!r})" for k in changed)
                raise NaspruneError(
                    f"{self.path} holds a {stage} stage made with other options: {what}; "
                    f"use a new --run-dir, or --redo {stage} to recompute it and every later "
                    "stage")

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
