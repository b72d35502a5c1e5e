"""When a stage of a run directory may be reused: stage fingerprints and the refusal of a
rerun with other options.

A stage's *fingerprint* is a hash of the options that determine its output plus the
fingerprint of the stage before it. ``RUN/fingerprints.json`` (kept by ``rundir.RunDir``)
records the fingerprint each finished stage was computed with, so a rerun reuses a stage
only when its options are the ones it was made with, and otherwise says which options
changed and how to go on; nothing in the run directory ever claims an option that was not
applied. The strategy's options are the resolved ones (``RunConfig.strategy_options``),
so the API and the CLI fingerprint the same run alike.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from nasprune.errors import NaspruneError
from nasprune.rundir import (
    EXPORT_DIR,
    FINETUNE_DIR,
    ORDER,
    SEARCH_DIR,
    SUPERNET_DIR,
    SUPERTRAIN_DIR,
)
from nasprune.train.strategies import needs_teacher

if TYPE_CHECKING:
    from nasprune.config import RunConfig
    from nasprune.rundir import RunDir

#: Options whose flag is not simply the field name with dashes.
FLAGS = {"train.learning_rate": "--lr", "export_formats": "--format",
         "train.strategy_options.epochs": "--supernet-epochs",
         "train.strategy_options.budget": "--pick"}
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


def _number(value):
    """``1.0`` as ``1``: the API's ``epochs=1`` and the CLI's ``--epochs 1`` hash alike."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def stage_options(cfg: RunConfig, stage: str) -> dict:
    """The options that determine ``stage``'s output, flattened to dotted keys."""
    resolved = {**cfg.to_dict(), "train": cfg.training().to_dict()}
    flat = {k: v for k, v in _flat("", resolved).items() if k not in NEUTRAL}
    pick = lambda *prefixes: {k: v for k, v in flat.items()  # noqa: E731
                              if k.startswith(prefixes)}
    search_space = ("search.space", "search.unit_step", "search.any_heads")
    if stage == FINETUNE_DIR:
        out = {**pick("model", "data.", "train."), "model": cfg.model}
        if needs_teacher(cfg.train.strategy):  # the teacher is fine-tuned plainly; the
            out = {k: v for k, v in out.items()  # strategy runs in the next stage
                   if not k.startswith("train.strategy")}
        return out
    if stage == SUPERTRAIN_DIR:  # the resolved options hold its space, scores and budget
        return pick("train.strategy")
    if stage == SUPERNET_DIR:
        return pick("search.importance", "search.calibration_examples")
    if stage == SEARCH_DIR:
        return pick(*search_space, "search.searcher", "search.objectives",
                    "search.low_fidelity", "search.seed")
    return {**pick("pick", "export_formats", "quantize", "recover"),
            "data.distill_file": cfg.data.distill_file}


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
