"""The export stage: recover the pick (the run's ``--recover``), then write it with the run's
facts. ``nasprune run`` and ``nasprune export RUN`` both come here, so they agree."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

from nasprune.config import RunConfig
from nasprune.data.encode import Encoded, encode
from nasprune.data.tasks import TaskData
from nasprune.errors import NaspruneError
from nasprune.files import read_json_or_none
from nasprune.rundir import EXPORT_DIR, METRICS, SUPERTRAIN_DIR, RunDir


def export_stage(cfg: RunConfig, run_dir: Path, supernet, tokenizer, trial, data: TaskData,
                 train_encoded: Encoded | None, out: Path | None = None, reuse: bool = True,
                 layout: str = "auto", validate: bool = True,
                 card: dict | None = None) -> tuple[Path, dict | None]:
    """The picked sub-network as a deployable directory (``out``, default ``RUN/export``);
    kept when ``reuse`` and it already holds the pick.

    With ``cfg.recover`` the extracted pick is first trained on the teacher's outputs (or
    corrected by least squares), stopping on the search split; its metrics are reported
    before and after on the search split and the validation set (``train_encoded``, when
    None, is tokenised only then). The model card gets the run's facts, updated with
    ``card``.
    """
    from nasprune.deploy.export.format import MANIFEST, RECOVERY_FILE, SUBNET_FILE
    from nasprune.deploy.export.writer import export_model

    out = Path(out) if out is not None else RunDir(run_dir).export
    if reuse and (out / MANIFEST).is_file() and (out / SUBNET_FILE).is_file():
        stored = json.loads((out / SUBNET_FILE).read_text())
        if [list(layer) for layer in stored.get("layers", [])] == [
                list(layer) for layer in trial.subnet.layers]:
            recovery = out / RECOVERY_FILE
            return out, json.loads(recovery.read_text()) if recovery.is_file() else None
    validation = encode(tokenizer, data, "validation", cfg.train.max_length)
    if cfg.quantize and train_encoded is None:  # int8 is calibrated on training texts
        train_encoded = encode(tokenizer, data, "train", cfg.train.max_length)
    small, report = None, None
    if cfg.recover != "none":
        from nasprune.train.recovery.recover import RecoveryConfig, recover

        if train_encoded is None:
            train_encoded = encode(tokenizer, data, "train", cfg.train.max_length)
        search = encode(tokenizer, data, data.selection_split, cfg.train.max_length)
        unlabeled = (encode(tokenizer, data, "unlabeled", cfg.train.max_length)
                     if data.unlabeled is not None else None)
        teacher = _teacher(run_dir, supernet)
        small = supernet.extract(trial.subnet)
        report = recover(small, teacher, train_encoded, search=search, validation=validation,
                         preset=data.preset, config=RecoveryConfig(
                             method=cfg.recover, epochs=cfg.recovery_epochs(_kept(supernet, trial)),
                             seed=cfg.train.seed,
                             batch_size=cfg.recover_batch_size,
                             precision=cfg.train.precision),
                         pad_id=tokenizer.pad_token_id or 0, subnet=trial.subnet,
                         unlabeled=unlabeled, progress=cfg.train.progress,
                         state_file=out.with_name(f".{out.name}.recovery.pt")).to_dict()
    path = export_model(
        supernet, trial.subnet, out, tokenizer=tokenizer,
        metrics={"trial": trial.id, **trial.metrics}, source_model=cfg.model,
        formats=cfg.export_formats, quantize=cfg.quantize,
        validation=(validation, data.preset) if validate else None, small=small,
        recovery=report, layout=layout, calibration=train_encoded if cfg.quantize else None,
        card={**_facts(run_dir, cfg.pick, cfg.recover), **(card or {})})
    return path, report


def _kept(supernet, trial) -> float:
    """The share of the encoder's parameters that the pick keeps."""
    from nasprune.core.subnet import encoder_params

    shape = supernet.shape
    return encoder_params(trial.subnet, shape) / encoder_params(shape.full, shape)


def _teacher(run_dir: Path, supernet):
    """The fixed teacher: the fine-tuned model itself when the super-network was not
    trained further (same function, other order), else the fine-tuned checkpoint."""
    run = RunDir(run_dir)
    if not run.stage(SUPERTRAIN_DIR).is_dir():
        return supernet.model
    import torch
    from transformers import AutoModelForSequenceClassification

    from nasprune.core.models import model_device

    teacher = AutoModelForSequenceClassification.from_pretrained(run.finetuned,
                                                                 dtype=torch.float32)
    return teacher.to(model_device(supernet.model)).eval()


def trivial_pick(preset, metrics: dict, labels) -> str | None:
    """Why a pick's search figure is no better than a predictor that knows nothing, or
    None: accuracy at most the most frequent class's share, a correlation at most 0."""
    import numpy as np

    value = metrics.get("metric")
    if not isinstance(value, (int, float)):
        return None
    if preset.metric == "accuracy" and len(labels):
        majority = float(np.bincount(np.asarray(labels, dtype=np.int64)).max() / len(labels))
        if value <= majority:
            return (f"its search accuracy {value:.3f} does not beat always predicting the "
                    f"most frequent class ({majority:.3f})")
    elif preset.metric in ("matthews_correlation", "pearson", "spearman") and value <= 0:
        return f"its search {preset.metric} {value:.3f} is no better than chance (0)"
    return None


def export_pick(run_dir: str | Path, pick: str, out: str | Path | None = None, *,
                formats: Sequence[str] = ("hf",), quantize: str | None = None,
                recover: str | None = None, layout: str = "auto", validate: bool = True,
                card: dict | None = None, progress: Callable[[str], None] | None = None,
                force: bool = False, device: str = "auto") -> Path:
    """``nasprune export RUN``: another pick of a finished search, exported as the run's
    export stage would (its recovery unless ``recover`` says otherwise). The run's own
    ``RUN/export`` is reused when it was made with these options. A pick no better than a
    trivial predictor on the search split is refused unless ``force``. Recovery runs on
    ``device`` (``auto``: a GPU when there is one), not the run's: a run made on a GPU
    exports on a machine without one.

    A directory with only ``supernet/`` and ``search/trials.db`` (no ``config.json``: no
    data to recover or validate on) is exported as searched."""
    from transformers import AutoTokenizer

    from nasprune.core.models import pick_device
    from nasprune.core.supernet import Supernet
    from nasprune.search.pareto import full_reference
    from nasprune.search.pick import pick as pick_trial
    from nasprune.search.store import TrialStore

    run = RunDir(run_dir)
    say = progress or (lambda _msg: None)
    where = pick_device(device)  # a device this machine lacks is refused before any work
    if not (run.supernet / "config.json").is_file():
        raise NaspruneError(f"{run.path} has no super-network ({run.supernet / 'config.json'} "
                            "missing)")
    with TrialStore.open_existing(run.path) as store:
        trials = [t for t in store.trials() if t.is_full_fidelity]
        objectives = tuple(store.get_meta("objectives") or ("error", "params"))
        full = full_reference(trials, store.full_subnet())
    chosen = pick_trial(trials, pick, objectives, full)
    data = None
    if run.is_run():  # checked before the super-network loads
        from nasprune.data.tasks import load_task_data

        data = load_task_data(run.config().data)
        split = data.selection_split
        reason = trivial_pick(data.preset, chosen.metrics, getattr(data, split)["label"])
        if reason and not force:
            raise NaspruneError(f"pick {pick!r} is trial {chosen.id} ({chosen.subnet}): "
                                f"{reason}; pick a larger sub-network, or pass --force")
    say(f"pick {pick!r} -> trial {chosen.id}: {chosen.subnet}")
    supernet = Supernet.from_pretrained(run.supernet)
    supernet.model.eval()
    tokenizer = AutoTokenizer.from_pretrained(str(run.supernet))
    if data is None:
        from nasprune.deploy.export.writer import export_model

        return export_model(supernet, chosen.subnet, out or run.export, tokenizer=tokenizer,
                            metrics={"trial": chosen.id, **chosen.metrics}, formats=formats,
                            quantize=quantize, progress=say, layout=layout,
                            card={**_facts(run.path, pick, "none"), **(card or {})})
    from nasprune.rundir.fingerprints import fingerprints

    cfg = run.config()
    cfg = replace(cfg, pick=pick, export_formats=tuple(formats), quantize=quantize,
                  recover=recover or cfg.recover)
    wanted = fingerprints(cfg)[EXPORT_DIR]
    own = out is None or Path(out).resolve() == run.export.resolve()
    supernet.model.to(where)
    path, _ = export_stage(cfg, run.path, supernet, tokenizer, chosen, data, None,
                           out=Path(out) if out is not None else None,
                           reuse=own and run.matches(EXPORT_DIR, wanted), layout=layout,
                           validate=validate, card=card)
    if own:
        run.record(EXPORT_DIR, wanted)
    return path


# ------------------------------------------------------------------- facts from a run


def _json_object(path: Path) -> dict:
    data = read_json_or_none(path)
    return data if isinstance(data, dict) else {}


def _numbers(scores: Any) -> dict:
    if not isinstance(scores, dict):
        return {}
    return {k: v for k, v in scores.items() if k != "epoch" and isinstance(v, (int, float))
            and not isinstance(v, bool)}


def _facts(run_dir: str | Path, pick: str, recover: str) -> dict:
    """The run's card facts with the pick and recovery actually used for this export (not
    the run's own: ``export --recover none`` of a run made with distill recovers nothing)."""
    facts = run_card_facts(run_dir)
    facts["recipe"] = {**facts.get("recipe", {}), "pick rule": pick, "recovery": recover}
    return facts


def run_card_facts(run_dir: str | Path) -> dict:
    """Card facts from a ``nasprune run`` directory: the fine-tuned (unpruned) model's
    metrics per split and the split choices were made on (``RUN/finetune/metrics.json``),
    and the recipe (``RUN/config.json``). Missing or unreadable files give fewer facts,
    never an error."""
    run = RunDir(run_dir)
    facts: dict[str, Any] = {}
    finetune = _json_object(run.finetuned.parent / METRICS)
    best = finetune.get("best") if isinstance(finetune.get("best"), dict) else {}
    unpruned = {"validation": _numbers(best), "search": _numbers(best.get("search"))}
    unpruned = {split: scores for split, scores in unpruned.items() if scores}
    if unpruned:
        facts["unpruned"] = unpruned
    if finetune.get("selected_on") in ("search", "validation"):
        facts["search_split"] = finetune["selected_on"]
    config = _json_object(run.config_file)
    search = config.get("search") if isinstance(config.get("search"), dict) else {}
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    if isinstance(data.get("task"), str):
        facts["task"] = data["task"]
    recipe = {"search space": search.get("space"), "searcher": search.get("searcher"),
              "trials": search.get("trials"), "objectives": search.get("objectives"),
              "importance order": search.get("importance"), "pick rule": config.get("pick"),
              "recovery": config.get("recover")}
    recipe = {k: (", ".join(map(str, v)) if isinstance(v, list) else v)
              for k, v in recipe.items() if isinstance(v, (str, int, float, list))
              and not isinstance(v, bool)}
    if recipe:
        facts["recipe"] = recipe
    return facts
