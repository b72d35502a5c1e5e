"""Dominance, fronts, hypervolume (hand-computed cases) and pick-by-budget edge cases."""

from __future__ import annotations

import itertools
import random

import pytest

from nasprune.core.subnet import Subnet
from nasprune.errors import NaspruneError
from nasprune.search.pareto import (
    REFERENCE,
    crowding_distance,
    dominates,
    front_of,
    full_reference,
    hypervolume,
    hypervolume_trace,
    non_dominated_sort,
    normalise,
    pareto_front,
    trials_hypervolume,
)
from nasprune.search.pick import parse_rule, pick
from nasprune.search.store import Trial, TrialStore

# ----------------------------------------------------------------------------- dominance


def test_dominates_needs_no_worse_everywhere_and_better_somewhere():
    assert dominates((1, 1), (2, 2))
    assert dominates((1, 2), (2, 2))
    assert not dominates((2, 2), (2, 2))  # equal: neither dominates
    assert not dominates((1, 3), (2, 2))  # trade-off
    assert not dominates((2, 2), (1, 2))
    assert dominates((0, 0, 1), (0, 0, 2))


def test_dominates_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        dominates((1, 2), (1, 2, 3))


def test_pareto_front_indices():
    pts = [(3, 1), (1, 3), (2, 2), (3, 3), (2, 2), (4, 0.5), (5, 5)]
    # (3,3) and (5,5) dominated; duplicates (2,2) both kept
    assert pareto_front(pts) == [0, 1, 2, 4, 5]
    assert pareto_front([]) == []


def test_non_dominated_sort_and_crowding():
    pts = [(1, 3), (2, 2), (3, 1), (2, 3), (3, 3)]
    assert non_dominated_sort(pts) == [[0, 1, 2], [3], [4]]
    dist = crowding_distance(pts, [0, 1, 2])
    assert dist[0] == dist[2] == float("inf")
    assert dist[1] == pytest.approx(2.0)  # (3-1)/2 + (3-1)/2


# ----------------------------------------------------------------------------- hypervolume


def test_hypervolume_2d_staircase():
    pts = [(1, 3), (2, 2), (3, 1)]
    # strips: 3*1 + 2*1 + 1*1
    assert hypervolume(pts, (4, 4)) == pytest.approx(6.0)
    # dominated, beyond-reference and on-the-boundary points add nothing
    assert hypervolume(pts + [(3, 3), (5, 0), (4, 0)], (4, 4)) == pytest.approx(6.0)
    assert hypervolume([], (1, 1)) == 0.0
    assert hypervolume([(0.5, 0.5)], (1, 1)) == pytest.approx(0.25)


def test_hypervolume_3d_hand_computed():
    assert hypervolume([(0, 0, 0)], (1, 2, 3)) == pytest.approx(6.0)
    # boxes 2*2*1 and 1*1*2 overlapping in a unit cube
    assert hypervolume([(0, 0, 1), (1, 1, 0)], (2, 2, 2)) == pytest.approx(5.0)
    # three axis-aligned corners: 3 boxes of volume 2*2*1... each 1x2x2, pairwise overlap
    pts = [(1, 0, 0), (0, 1, 0), (0, 0, 1)]
    # union of [1,2]x[0,2]x[0,2], [0,2]x[1,2]x[0,2], [0,2]x[0,2]x[1,2] = 8 - [0,1]^3 = 7
    assert hypervolume(pts, (2, 2, 2)) == pytest.approx(7.0)


def test_hypervolume_matches_optuna_on_random_fronts():
    optuna_hv = pytest.importorskip("optuna._hypervolume").compute_hypervolume
    np = pytest.importorskip("numpy")
    rng = random.Random(0)
    for k in (2, 3):
        for _ in range(5):
            pts = [tuple(rng.random() for _ in range(k)) for _ in range(30)]
            ref = (REFERENCE,) * k
            assert hypervolume(pts, ref) == pytest.approx(
                optuna_hv(np.array(pts), np.array(ref)), rel=1e-9
            )


def test_hypervolume_trace_is_monotone_and_ends_at_total():
    rng = random.Random(1)
    pts = [(rng.random(), rng.random()) for _ in range(40)]
    trace = hypervolume_trace(pts, (1.1, 1.1))
    assert all(b >= a for a, b in itertools.pairwise(trace))
    assert trace[-1] == pytest.approx(hypervolume(pts, (1.1, 1.1)))


# ----------------------------------------------------------------------------- normalising

FULL = {"error": 0.10, "metric": 0.90, "params": 100.0, "flops": 1000.0, "latency": 20.0}


def test_normalise_keeps_error_and_scales_costs_by_full_model():
    m = {"error": 0.2, "params": 25.0, "latency": 5.0}
    assert normalise(m, ("error", "params"), FULL) == (0.2, 0.25)
    assert normalise(m, ("error", "params", "latency"), FULL) == (0.2, 0.25, 0.25)
    assert normalise(FULL, ("error", "params"), FULL) == (0.1, 1.0)
    with pytest.raises(NaspruneError, match="flops"):
        normalise(m, ("error", "flops"), FULL)
    with pytest.raises(NaspruneError, match="positive"):
        normalise(m, ("error", "params"), {"params": 0})


def _trial(tid, error, params, **extra):
    metrics = {"error": error, "metric": 1 - error, "params": params, **extra}
    return Trial(tid, Subnet(((tid, 1),)), metrics)


@pytest.fixture()
def trials():
    return [
        _trial(1, 0.10, 100.0, flops=1000.0, latency=20.0),  # full model
        _trial(2, 0.50, 5.0, flops=50.0, latency=2.0),  # smallest
        _trial(3, 0.12, 50.0, flops=500.0, latency=11.0),
        _trial(4, 0.20, 20.0, flops=200.0, latency=6.0),
        _trial(5, 0.15, 60.0, flops=600.0, latency=12.0),  # dominated by 3
    ]


def test_front_and_hypervolume_of_trials(trials):
    full = full_reference(trials)
    assert full["params"] == 100.0
    assert [t.id for t in front_of(trials, ("error", "params"), full)] == [2, 4, 3, 1]
    # normalised points (0.1,1) (0.5,.05) (0.12,.5) (0.2,.2); hand-computed staircase
    # sorted by error: .1->1.0, .12->.5, .2->.2, .5->.05 ; ref 1.1
    hv = (1.1 - 0.1) * (1.1 - 1.0) + (1.1 - 0.12) * (1.0 - 0.5) + (1.1 - 0.2) * (0.5 - 0.2)
    hv += (1.1 - 0.5) * (0.2 - 0.05)
    assert trials_hypervolume(trials, ("error", "params"), full) == pytest.approx(hv)


# ----------------------------------------------------------------------------- pick


def test_pick_largest_and_smallest(trials):
    assert pick(trials, "largest").id == 1
    assert pick(trials, "smallest").id == 2
    assert pick(trials, " Smallest ").id == 2


def test_pick_params_fraction_boundary_inclusive(trials):
    assert pick(trials, "params<=0.5").id == 3  # exactly half of the full model
    assert pick(trials, "params<0.5").id == 4
    assert pick(trials, "params<=50%").id == 3
    assert pick(trials, "params<=1").id == 1


def test_pick_absolute_counts_and_other_costs(trials):
    assert pick(trials, "params<=20").id == 4  # a plain count above 1 is absolute
    assert pick(trials, "params<=0.00006M").id == 3
    assert pick(trials, "flops<=0.2").id == 4
    assert pick(trials, "latency<=12ms").id == 3
    assert pick(trials, "latency<=0.006s").id == 4
    assert pick(trials, "latency<=0.3").id == 4  # fraction of the full model's 20 ms


def test_pick_error_constraints_choose_the_cheapest(trials):
    assert pick(trials, "error<=0.12").id == 3
    assert pick(trials, "error<=15%").id == 3
    assert pick(trials, "error<=0.2").id == 4
    assert pick(trials, "metric>=0.85").id == 3


def test_pick_by_id(trials):
    assert pick(trials, "5").id == 5  # any trial, even off the front
    assert pick(trials, "#4").id == 4
    with pytest.raises(NaspruneError, match="no trial with id 17"):
        pick(trials, "17")


@pytest.mark.parametrize("rule", ["params<=0.01", "error<=0.05", "latency<=1ms", "params<0.05"])
def test_pick_none_fits(trials, rule):
    with pytest.raises(NaspruneError, match="no evaluated sub-network satisfies"):
        pick(trials, rule)


@pytest.mark.parametrize(
    "rule", ["", "fast", "params<=abc", "params==0.5", "speed<=3", "params<=3ms", "error<=3M"]
)
def test_pick_malformed_rules(trials, rule):
    with pytest.raises(NaspruneError):
        pick(trials, rule)


def test_pick_unmeasured_metric_and_empty():
    plain = [_trial(1, 0.1, 100.0), _trial(2, 0.3, 10.0)]
    with pytest.raises(NaspruneError, match="latency"):
        pick(plain, "latency<=12ms")
    with pytest.raises(NaspruneError, match="run the search first"):
        pick([], "largest")


def test_parse_rule_units():
    assert parse_rule("params<=0.5", FULL) == ("params", "<=", 50.0)
    assert parse_rule("params <= 2k", FULL) == ("params", "<=", 2000.0)
    assert parse_rule("flops<=1G", FULL) == ("flops", "<=", 1e9)
    assert parse_rule("latency<=12ms", FULL) == ("latency", "<=", 12.0)
    assert parse_rule("latency<=1.5s", FULL) == ("latency", "<=", 1500.0)
    assert parse_rule("error<10%", FULL) == ("error", "<", pytest.approx(0.1))


# ----------------------------------------------------------------------------- report + CLI


def _searched_run(run_dir, n=30, seed=0, searcher="random"):
    from nasprune.core.spaces import make_space
    from nasprune.core.subnet import ModelShape, encoder_params
    from nasprune.search.runner import run_search
    from nasprune.search.searchers import make_searcher
    from nasprune.search.store import TrialStore

    shape = ModelShape(num_layers=4, num_heads=4, head_dim=8, hidden=32, ffn=64)
    space = make_space("layerwise", shape, unit_step=16)

    def evaluate(subnet, fidelity):
        cap = sum(w * (h / 4 + u / 64) / 2 for w, (h, u) in zip((.4, .3, .2, .1), subnet.layers))
        return {"error": 0.05 + 0.6 * (1 - cap) ** 2, "params": encoder_params(subnet, shape),
                "latency": 1 + encoder_params(subnet, shape) / 1e4}

    store = TrialStore.for_run(run_dir)
    result = run_search(space, make_searcher(searcher, space, seed=seed), evaluate, store, n,
                        progress=False)
    store.close()
    return result


def test_plot_pareto_single_and_labelled_runs(tmp_path):
    from nasprune.report.plots import plot_pareto

    a = _searched_run(tmp_path / "a", seed=0)
    b = _searched_run(tmp_path / "b", seed=1, searcher="local")
    one = plot_pareto(a.trials, tmp_path / "one.png")
    many = plot_pareto({"random": a.trials, "local": b.trials}, tmp_path / "many.png",
                       title="two arms")
    for path in (one, many):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_pareto_command_prints_front_and_writes_files(tmp_path):
    import csv
    import subprocess
    import sys

    result = _searched_run(tmp_path / "run", n=30)
    front_ids = [t.id for t in result.front]
    proc = subprocess.run(
        [sys.executable, "-m", "nasprune", "pareto", str(tmp_path / "run"), "--pick",
         "params<=0.5"], capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "160"},
    )
    assert proc.returncode == 0, proc.stderr
    assert f"hypervolume {result.hypervolume:.4f}" in proc.stdout
    picked = pick(result.front, "params<=0.5", full=result.full)
    assert f"trial {picked.id}" in proc.stderr
    png = tmp_path / "run" / "search" / "pareto.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader((tmp_path / "run" / "search" / "pareto.csv").open()))
    assert [int(r["id"]) for r in rows] == front_ids
    assert float(rows[-1]["params_fraction"]) == pytest.approx(1.0)  # the full model

    # other objectives: the 3-objective front is a superset of the 2-objective one
    out = tmp_path / "three"
    proc = subprocess.run(
        [sys.executable, "-m", "nasprune", "pareto", str(tmp_path / "run"), "--objectives",
         "error,params,latency", "--out", str(out)], capture_output=True, text=True,
        timeout=120, env={"PATH": "/usr/bin:/bin", "COLUMNS": "160"},
    )
    assert proc.returncode == 0, proc.stderr
    ids3 = {int(r["id"]) for r in csv.DictReader((out / "pareto.csv").open())}
    assert set(front_ids) <= ids3


@pytest.mark.parametrize("args, message", [
    (["pareto", "{tmp}/missing"], "no search results"),
    (["pareto", "{tmp}/empty"], "no finished trials yet"),
    (["pareto", "{run}", "--pick", "error<=0.001"], "no evaluated sub-network satisfies"),
    (["pareto", "{run}", "--pick", "tiny"], "cannot read the pick rule"),
    (["pareto", "{run}", "--objectives", "error,flops"], "objective 'flops' was not measured"),
])
def test_pareto_command_user_errors(tmp_path, args, message):
    import subprocess
    import sys

    _searched_run(tmp_path / "run", n=6)
    TrialStore.for_run(tmp_path / "empty").close()
    args = [a.format(tmp=tmp_path, run=tmp_path / "run") for a in args]
    proc = subprocess.run([sys.executable, "-m", "nasprune", *args], capture_output=True,
                          text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2 and message in proc.stderr
    assert "Traceback" not in proc.stderr


def _ticks(ax):
    ax.figure.canvas.draw()
    return [t.get_text() for t in ax.get_xticklabels() if t.get_text()]


def test_pareto_plot_in_percent_of_the_encoder_with_plain_ticks_and_the_pick(tmp_path):
    import matplotlib.pyplot as plt

    from nasprune.report.plots import front_figure, plot_pareto
    from nasprune.report.text import compact

    trials = _searched_run(tmp_path / "run", n=20).trials
    with_encoder = [type(t)(t.id, t.subnet, {**t.metrics, "encoder_params":
                                             t.metrics["params"] - 100}) for t in trials]
    chosen = with_encoder[5]
    fig = front_figure(with_encoder, pick=chosen, title="rte · minilm-l6")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "encoder parameters (% of the unpruned encoder)"
    assert ax.get_xscale() == "linear" and ax.get_title() == "rte · minilm-l6"
    assert all(t.endswith("%") for t in _ticks(ax))
    labels = ax.get_legend_handles_labels()[1]
    assert "pick" in labels and "un-pruned model" in labels
    (note,) = [c for c in ax.get_children() if type(c).__name__ == "Annotation"]
    assert note.get_text() == f"pick: trial {chosen.id}\n{compact(chosen.subnet)}"
    star = ax.collections[-2].get_offsets()[0]  # the un-pruned model at 100 %
    assert star[0] == pytest.approx(100.0)
    plt.close(fig)

    # total parameters: plain tick labels (k/M), never an offset or 1e7 exponent
    big = [type(t)(t.id, t.subnet, {**t.metrics, "params": t.metrics["params"] * 4000})
           for t in trials]
    for log_x in (False, True):
        fig = front_figure(big, x="params", log_x=log_x)
        ax = fig.axes[0]
        ticks = _ticks(ax)
        assert ticks and all("e" not in t and "^" not in t and "×" not in t for t in ticks)
        assert any(t.endswith(("k", "M")) for t in ticks)
        assert ax.xaxis.get_offset_text().get_text() == ""
        assert ax.get_xlabel().startswith("total parameters")
        plt.close(fig)
    # the benchmark's call keeps working: labelled runs, encoder params, linear, a split
    path = plot_pareto({"a": with_encoder, "b": with_encoder[:10]}, tmp_path / "b.png",
                       x="encoder_params", log_x=False, split="search", title="arms")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_pareto_summary_marks_the_runs_pick_and_names_task_and_model(tmp_path, monkeypatch):
    import json

    import nasprune.report.front as report

    run = tmp_path / "run"
    result = _searched_run(run, n=20)
    (run / "config.json").write_text(json.dumps({
        "model": str(tmp_path / "models" / "my-minilm"), "data": {"task": "rte"},
        "pick": "params<=0.5"}))
    (tmp_path / "models" / "my-minilm").mkdir(parents=True)
    seen = {}

    def spy(trials, path, **kwargs):
        seen.update(kwargs)
        return path

    monkeypatch.setattr(report, "plot_pareto", spy)
    summary = report.pareto_summary(run)
    expected = pick([t for t in result.trials if t.is_full_fidelity], "params<=0.5",
                    full=result.full)
    assert summary.pick == expected and summary.pick_rule == "params<=0.5"
    assert seen["pick"] == expected and "trial" in seen["pick_label"]
    assert seen["title"].startswith("rte · my-minilm: 20 sub-networks")
    assert seen["x"] == "params"  # no encoder_params measured in this search
    assert report.pareto_summary(run, pick=False).pick is None
    assert report.pareto_summary(run, pick="smallest").pick_rule == "smallest"
    (run / "config.json").write_text(json.dumps({"pick": "error<=0.0001"}))  # unmet: no mark
    assert report.pareto_summary(run).pick is None
