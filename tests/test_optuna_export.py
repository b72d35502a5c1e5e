"""``nasprune to-optuna``: a run's trials as an Optuna multi-objective study, read back by
``optuna.load_study`` (what optuna-dashboard opens)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nasprune.errors import NaspruneError
from nasprune.search.pareto import front_of, full_reference
from nasprune.search.store import TrialStore

optuna = pytest.importorskip("optuna")


def _searched_run(run_dir, n=20, low_fidelity=None):
    from nasprune.core.spaces import make_space
    from nasprune.core.subnet import ModelShape, encoder_params
    from nasprune.search.runner import run_search
    from nasprune.search.searchers import make_searcher

    shape = ModelShape(num_layers=3, num_heads=4, head_dim=8, hidden=32, ffn=64)
    space = make_space("layerwise", shape, unit_step=16)

    def evaluate(subnet, fidelity):
        cap = sum(w * (h / 4 + u / 64) / 2 for w, (h, u) in zip((.5, .3, .2), subnet.layers))
        enc = encoder_params(subnet, shape)
        return {"error": 0.05 + 0.6 * (1 - cap) ** 2 + (0.01 if fidelity < 1 else 0),
                "metric": 0.95 - 0.6 * (1 - cap) ** 2, "params": 1000 + enc,
                "encoder_params": enc, "latency": 1 + enc / 1e4}

    store = TrialStore.for_run(run_dir)
    store.set_meta("split", "search")
    run_search(space, make_searcher("random", space, seed=0), evaluate, store, n,
               ("error", "params", "latency"), progress=False, low_fidelity=low_fidelity)
    trials = store.trials()
    store.close()
    (run_dir / "config.json").write_text(json.dumps({"model": "minilm-l6",
                                                     "data": {"task": "rte"}, "pick": "largest"}))
    return trials


def test_study_read_back_by_optuna(tmp_path):
    from nasprune.search.optuna_export import export_to_optuna, param_name

    trials = _searched_run(tmp_path / "run", n=24)
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    done = export_to_optuna(tmp_path / "run", url)
    assert (done.n_trials, done.n_complete) == (24, 24)
    study = optuna.load_study(study_name="nasprune-run", storage=url)
    assert len(study.trials) == 24
    assert study.directions == [optuna.study.StudyDirection.MINIMIZE] * 3
    assert study.metric_names == ["error", "params", "latency"]
    assert study.user_attrs["split"] == "search" and study.user_attrs["task"] == "rte"
    full = full_reference(trials)
    assert study.user_attrs["unpruned"] == full
    for ours, theirs in zip(trials, study.trials):
        assert theirs.state == optuna.trial.TrialState.COMPLETE
        assert theirs.values == [ours.metrics[m] for m in ("error", "params", "latency")]
        assert theirs.params == {**{param_name(i, "heads"): h for i, (h, _) in
                                    enumerate(ours.subnet.layers)},
                                 **{param_name(i, "units"): u for i, (_, u) in
                                    enumerate(ours.subnet.layers)}}
        attrs = theirs.user_attrs
        assert json.loads(attrs["subnet"]) == json.loads(ours.subnet.to_json())
        assert attrs["subnet_text"] == str(ours.subnet) and attrs["split"] == "search"
        assert attrs["nasprune_trial_id"] == ours.id
        assert {k: attrs[k] for k in ours.metrics} == ours.metrics
        assert attrs["params_fraction"] == pytest.approx(ours.metrics["params"] / full["params"])
        assert theirs.datetime_complete is not None
    # Optuna's own Pareto front is ours
    ours_front = {t.id for t in front_of(trials, ("error", "params", "latency"), full)}
    assert {t.user_attrs["nasprune_trial_id"] for t in study.best_trials} == ours_front


def test_low_fidelity_trials_are_pruned_and_a_second_export_needs_replace(tmp_path):
    from nasprune.search.optuna_export import export_to_optuna

    trials = _searched_run(tmp_path / "run", n=16, low_fidelity=0.5)
    low = [t for t in trials if not t.is_full_fidelity]
    path = tmp_path / "sub" / "study.db"  # a plain path: made into sqlite:///, folder created
    done = export_to_optuna(tmp_path / "run", path, study_name="mine")
    assert done.storage == f"sqlite:///{path.resolve()}" and done.n_trials == len(trials)
    study = optuna.load_study(study_name="mine", storage=done.storage)
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert len(pruned) == len(low) and all(t.values is None for t in pruned)
    assert all(t.user_attrs["fidelity"] < 1 for t in pruned)
    with pytest.raises(NaspruneError, match="already holds a study named 'mine'"):
        export_to_optuna(tmp_path / "run", path, study_name="mine")
    export_to_optuna(tmp_path / "run", path, study_name="mine", replace=True)
    assert len(optuna.get_all_study_summaries(done.storage)) == 1
    with pytest.raises(NaspruneError, match="the run's own trial store"):
        export_to_optuna(tmp_path / "run", tmp_path / "run" / "search" / "trials.db")
    with pytest.raises(NaspruneError, match="no search results"):
        export_to_optuna(tmp_path / "missing", path)


def test_to_optuna_command(tmp_path):
    _searched_run(tmp_path / "run", n=6)
    url = f"sqlite:///{tmp_path / 'o.db'}"
    proc = subprocess.run([sys.executable, "-m", "nasprune", "to-optuna", str(tmp_path / "run"),
                           url, "--study", "s1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"optuna-dashboard {url}" in proc.stdout and "6 trials" in proc.stderr
    assert len(optuna.load_study(study_name="s1", storage=url).trials) == 6
    proc = subprocess.run([sys.executable, "-m", "nasprune", "to-optuna", str(tmp_path / "run"),
                           url, "--study", "s1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--replace" in proc.stderr and "Traceback" not in proc.stderr
