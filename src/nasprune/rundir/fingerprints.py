"""When a stage of a run directory may be reused: stage fingerprints and the refusal of a
rerun with other options.

A stage's *fingerprint* is a hash of the options that determine its output plus the
fingerprint of the stage before it. ``RUN/fingerprints.json`` (kept by ``rundir.RunDir``)
records the fingerprint each finished stage was computed with, so a rerun reuses a stage
only when its options are the ones it was made with, and otherwise says which options
changed and how to go on; nothing in the run directory ever claims an option that was not
applied. Which stage an option determines is declared on its field (``nasprune.config``,
``OPTIONS``). The strategy's options are the resolved ones
(``RunConfig.strategy_options``), so the API and the CLI fingerprint the same run alike.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from nasprune.config import OPTIONS
from nasprune.errors import NaspruneError
from nasprune.rundir import EXPORT_DIR, ORDER, SUPERTRAIN_DIR
from nasprune.train.strategies import needs_teacher

if TYPE_CHECKING:
    from nasprune.config import RunConfig
    from nasprune.rundir import RunDir

def flag(key: str) -> str:
    """The flag a message names for a dotted option key (declared in ``nasprune.config``;
    a key of a dict option, such as ``train.strategy_options.epochs``, by its parent's)."""
    parent, _, last = key.rpartition(".")
    declared = OPTIONS[key].flag if key in OPTIONS else (
        OPTIONS[parent].sub_flags.get(last) if parent in OPTIONS else None)
    return declared or "--" + last.replace("_", "-")


def _flat(prefix: str, value) -> dict:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(_flat(f"{prefix}.{k}" if prefix else k, v))
        return out
    return {prefix: list(value) if isinstance(value, tuple) else value}


def _number(value):
    """``1.0`` as ``1``: the API's ``epochs=1`` and the CLI's ``--epochs 1`` hash alike."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _stage_of(key: str, teacher: bool) -> str | None:
    """The stage ``key`` determines, as declared; a strategy that needs a teacher runs in
    its own stage after plain fine-tuning, so its options determine that one."""
    while key not in OPTIONS:  # a key inside a dict option
        key = key.rpartition(".")[0]
    if teacher and key in ("train.strategy", "train.strategy_options"):
        return SUPERTRAIN_DIR
    return OPTIONS[key].stage


def stage_options(cfg: RunConfig, stage: str) -> dict:
    """The options that determine ``stage``'s output, flattened to dotted keys."""
    resolved = {**cfg.to_dict(), "train": cfg.training().to_dict()}
    teacher = needs_teacher(cfg.train.strategy)
    return {k: v for k, v in _flat("", resolved).items() if _stage_of(k, teacher) == stage}


def fingerprints(cfg: RunConfig) -> dict[str, dict]:
    """Every stage's options and hash (chained: a stage's hash covers the earlier ones)."""
    out, upstream = {}, ""
    for stage in ORDER:
        if stage == SUPERTRAIN_DIR and not needs_teacher(cfg.train.strategy):
            continue
        options = stage_options(cfg, stage)
        same = {k: _number(v) for k, v in options.items()}  # the check's ==: 1 is 1.0
        text = json.dumps({"options": same, "upstream": upstream}, sort_keys=True,
                          default=str)
        upstream = hashlib.sha256(text.encode()).hexdigest()[:16]
        out[stage] = {"hash": upstream, "options": options}
    return out


def check(run: RunDir, wanted: dict[str, dict], redo: str | None = None) -> None:
    """Refuse a rerun whose options differ from what a finished stage was made with;
    ``redo`` deletes that stage and every later one first. A changed export is redone
    (post-search options simply produce the export they ask for)."""
    if redo is not None:
        if redo not in ORDER:
            raise NaspruneError(f"unknown stage {redo!r} for --redo; choose one of "
                                + ", ".join(ORDER))
        run.forget(ORDER[ORDER.index(redo):])
    recorded = run.recorded()
    for stage, new in wanted.items():
        old = recorded.get(stage)
        if stage == EXPORT_DIR or not run.done(stage) or old is None:
            continue
        if old["hash"] != new["hash"]:
            changed = [k for k in sorted(set(old["options"]) | set(new["options"]))
                       if old["options"].get(k) != new["options"].get(k)]
            if not changed:  # an earlier stage changed: that one is named first
                continue
            what = ", ".join(f"{flag(k)} ({old['options'].get(k)!r} -> "
                             f"{new['options'].get(k)!r})" for k in changed)
            raise NaspruneError(
                f"{run.path} holds a {stage} stage made with other options: {what}; "
                f"use a new --run-dir, or --redo {stage} to recompute it and every later "
                "stage")
