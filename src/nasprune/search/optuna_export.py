"""A run's trial store copied into an Optuna RDB storage, so Optuna's tools open it.

``nasprune to-optuna RUN sqlite:///study.db`` writes one multi-objective study (every
objective of the search minimised: ``error`` and each cost) with one trial per evaluated
sub-network:

- ``params``: the sub-network's per-layer dimensions, ``layer_00_heads``,
  ``layer_00_units``, ... (integers from 0 to the model's heads / FFN units), so the
  dashboard's parallel-coordinate and importance plots read per layer;
- ``values``: the search's objectives in their own units (``error`` a fraction, ``params``
  a count, ``flops`` per sequence, ``latency`` ms), named with ``set_metric_names``;
- user attributes: the sub-network as JSON (``subnet``) and as text, the split the metrics
  were measured on, every stored metric, cost fractions of the unpruned model, the trial's
  id in the nasprune store, fidelity and searcher.

Trials measured only on a subset (multi-fidelity candidates that were not promoted) are
written as ``PRUNED`` with their subset metrics as user attributes; every other trial is
``COMPLETE``. The study's own user attributes name the run, its objectives, split and the
unpruned model's metrics. The nasprune store stays the source of truth (see ``store.py``
for why it is not Optuna's storage); this is a one-way copy, repeated with ``replace``.
"""

from __future__ import annotations

import datetime
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nasprune.core import COSTS
from nasprune.errors import NaspruneError
from nasprune.files import read_json_or_none
from nasprune.rundir import RunDir
from nasprune.search.pareto import full_reference
from nasprune.search.store import Trial, TrialStore

#: Metrics whose fraction of the unpruned model is added as a user attribute.


@dataclass
class OptunaExport:
    """What ``export_to_optuna`` wrote."""

    storage: str
    study_name: str
    n_trials: int
    n_complete: int
    objectives: tuple[str, ...]


def storage_url(target: str | Path) -> str:
    """An SQLAlchemy URL as given (``sqlite:///x.db``, ``postgresql://...``), or a file path
    made into ``sqlite:///ABSOLUTE``."""
    text = str(target)
    if "://" in text:
        return text
    return f"sqlite:///{Path(text).expanduser().resolve()}"


def param_name(layer: int, part: str) -> str:
    """``layer_00_heads``: numbered from 0 like the model's own ``encoder.layer.N``, the
    card and the report; zero-padded so the dashboard lists layers in order."""
    return f"layer_{layer:02d}_{part}"


def _datetime(seconds: float) -> datetime.datetime | None:
    if not seconds:
        return None
    return datetime.datetime.fromtimestamp(seconds)


def _user_attrs(trial: Trial, split: str, full: dict[str, float]) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "subnet": trial.subnet.to_json(),
        "subnet_text": str(trial.subnet),
        "kept_layers": trial.subnet.kept_layers,
        "split": split,
        "fidelity": trial.fidelity,
        "nasprune_trial_id": trial.id,
        "searcher": trial.searcher,
        "wall_s": trial.wall_s,
    }
    attrs.update(trial.metrics)
    for name in COSTS:
        if name in trial.metrics and full.get(name):
            attrs[f"{name}_fraction"] = trial.metrics[name] / full[name]
    if trial.low_metrics is not None:
        attrs["low_fidelity"] = trial.low_fidelity
        attrs["low_metrics"] = json.dumps(trial.low_metrics)
        attrs["promoted"] = bool(trial.promoted)
    return attrs


def export_to_optuna(run_dir: str | Path, storage: str | Path, study_name: str | None = None,
                     *, replace: bool = False) -> OptunaExport:
    """Write the search of ``run_dir`` into ``storage`` as study ``study_name`` (default
    ``nasprune-<run folder name>``); ``replace`` deletes a study of that name first,
    otherwise an existing one is refused."""
    import optuna
    from optuna.distributions import IntDistribution
    from optuna.trial import FrozenTrial, TrialState

    run_dir = Path(run_dir)
    url = storage_url(storage)
    store_path = RunDir(run_dir).store.resolve()
    if url.startswith("sqlite:///") and Path(url[len("sqlite:///"):]).resolve() == store_path:
        raise NaspruneError(f"{storage} is the run's own trial store: give another file, "
                            "e.g. sqlite:///optuna.db")
    with TrialStore.open_existing(run_dir) as store:
        trials = store.trials()
        meta = store.meta()
        full_subnet = store.full_subnet()
    if not trials:
        raise NaspruneError(f"the search in {run_dir} has no trials yet")
    objectives = tuple(meta.get("objectives") or ("error", "params"))
    complete = [t for t in trials if t.is_full_fidelity]
    for name in objectives:
        missing = [t.id for t in complete if name not in t.metrics]
        if missing:
            raise NaspruneError(f"objective {name!r} was not measured for trial {missing[0]}")
    full = full_reference(complete, full_subnet) if complete else {}
    split = meta.get("split", "validation")
    shape = meta.get("shape") or {}
    heads = int(shape.get("num_heads") or max(h for t in trials for h, _ in t.subnet.layers))
    units = int(shape.get("ffn") or max(u for t in trials for _, u in t.subnet.layers))
    name = study_name or f"nasprune-{run_dir.resolve().name}"

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    try:
        rdb = optuna.storages.RDBStorage(url)
    except Exception as exc:  # SQLAlchemy: bad URL, missing driver, unreachable server
        raise NaspruneError(f"cannot open the Optuna storage {url}: {exc}") from exc
    existing = {s.study_name for s in optuna.get_all_study_summaries(rdb)}
    if name in existing:
        if not replace:
            raise NaspruneError(f"{url} already holds a study named {name!r}: "
                                "pass --replace to overwrite it or --study another name")
        optuna.delete_study(study_name=name, storage=rdb)
    study = optuna.create_study(storage=rdb, study_name=name,
                                directions=["minimize"] * len(objectives))
    with warnings.catch_warnings():  # experimental in Optuna 3.2+, read by the dashboard
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(objectives))
    config = _run_config(run_dir)
    for key, value in {
        "nasprune_run_dir": str(run_dir.resolve()), "objectives": list(objectives),
        "split": split, "unpruned": full, "space": meta.get("space"),
        "searcher": meta.get("searcher"), "shape": shape,
        "task": (config.get("data") or {}).get("task"), "model": config.get("model"),
        "pick_rule": config.get("pick"),
    }.items():
        if value is not None:
            study.set_user_attr(key, value)

    frozen = []
    for number, trial in enumerate(trials):
        params: dict[str, int] = {}
        distributions = {}
        for i, (h, u) in enumerate(trial.subnet.layers):
            params[param_name(i, "heads")] = int(h)
            params[param_name(i, "units")] = int(u)
            distributions[param_name(i, "heads")] = IntDistribution(0, heads)
            distributions[param_name(i, "units")] = IntDistribution(0, units)
        done = trial.is_full_fidelity
        frozen.append(FrozenTrial(
            number=number, state=TrialState.COMPLETE if done else TrialState.PRUNED,
            value=None, values=[trial.metrics[o] for o in objectives] if done else None,
            datetime_start=_datetime(trial.created - trial.wall_s),
            datetime_complete=_datetime(trial.created), params=params,
            distributions=distributions, user_attrs=_user_attrs(trial, split, full),
            system_attrs={}, intermediate_values={}, trial_id=number))
    study.add_trials(frozen)
    return OptunaExport(url, name, len(frozen), len(complete), objectives)


def _run_config(run_dir: Path) -> dict:
    value = read_json_or_none(RunDir(run_dir).config_file)
    return value if isinstance(value, dict) else {}
