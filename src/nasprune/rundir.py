"""The run directory: its layout, one writer at a time, stage fingerprints and its log.

A stage's *fingerprint* is a hash of the options that determine its output plus the
fingerprint of the stage before it. ``RUN/fingerprints.json`` records the fingerprint each
finished stage was computed with, so a rerun reuses a stage only when its options are the
ones it was made with, and otherwise says which options changed and how to go on; nothing
in the run directory ever claims an option that was not applied.

    RUN/config.json        the RunConfig of the last command that ran (absolute paths)
    RUN/fingerprints.json  stage -> {hash, options}
    RUN/log.txt            what each command did: options, stages, timings, warnings
    RUN/.lock              held (fcntl) by the one process writing the run directory
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from nasprune.config import RunConfig
from nasprune.errors import NaspruneError
from nasprune.files import write_json

FINETUNE_DIR, SUPERTRAIN_DIR, SUPERNET_DIR, SEARCH_DIR, EXPORT_DIR = (
    "finetune", "supertrain", "supernet", "search", "export")
#: The stages in order; each folder is named after its stage.
ORDER = (FINETUNE_DIR, SUPERTRAIN_DIR, SUPERNET_DIR, SEARCH_DIR, EXPORT_DIR)
FINGERPRINTS, LOG, LOCK = "fingerprints.json", "log.txt", ".lock"
#: Options whose flag is not simply the field name with dashes.
FLAGS = {"train.learning_rate": "--lr", "export_formats": "--format",
         "train.strategy_options.epochs": "--supernet-epochs", "budget": "--pick"}
#: Fields that never change a result (where it runs, how it reports).
NEUTRAL = {"train.progress", "train.threads", "train.device", "train.eval_batch_size",
           "search.eval_batch_size", "search.backend", "search.workers", "search.address",
           "search.cpus_per_worker", "search.gpus_per_worker", "search.trials", "force",
           "data.distill_file"}


#: Run directories this process holds: path -> [open lock file, how many holders].
_HELD: dict[Path, list] = {}


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
    """Paths, fingerprints, log and lock of one run directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock_file = None

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # ------------------------------------------------------------------ lock
    def lock(self) -> RunDir:
        """Become the one writer of this run directory, or fail at once naming the holder.
        The lock is the kernel's: it goes with the process, also on a crash or kill -9.
        Taking it again in the same process (the CLI, then the pipeline) is allowed."""
        key = self.path.resolve()
        if key in _HELD:
            _HELD[key][1] += 1
            self._lock_file = _HELD[key][0]
            return self
        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self.path / LOCK, "a+")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise NaspruneError(f"{self.path} is in use by nasprune (PID {holder}); wait for "
                                "it to finish or use another --run-dir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock_file = handle
        _HELD[key] = [handle, 1]
        return self

    @property
    def held(self) -> bool:
        return self._lock_file is not None

    def release(self) -> None:
        if self._lock_file is None:
            return
        key = self.path.resolve()
        held = _HELD.get(key)
        self._lock_file = None
        if held is not None:
            held[1] -= 1
            if held[1] > 0:
                return
            del _HELD[key]
            fcntl.flock(held[0], fcntl.LOCK_UN)
            held[0].close()

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
        folder = self.path / stage
        marker = {FINETUNE_DIR: "metrics.json", SUPERTRAIN_DIR: "metrics.json",
                  SUPERNET_DIR: "config.json", SEARCH_DIR: "trials.db",
                  EXPORT_DIR: "manifest.json"}[stage]
        return (folder / marker).is_file()

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
