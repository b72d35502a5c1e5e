"""Contract tests run over every registered searcher (add one to SEARCHERS, it is tested)."""

from __future__ import annotations

import pytest

from nasprune.core.spaces import make_space
from nasprune.core.subnet import ModelShape, encoder_params
from nasprune.errors import NaspruneError
from nasprune.search.pareto import hypervolume, normalise, reference_point
from nasprune.search.runner import run_search
from nasprune.search.searchers import SEARCHERS, make_searcher
from nasprune.search.store import TrialStore

SHAPE = ModelShape(num_layers=4, num_heads=4, head_dim=8, hidden=32, ffn=64)
WEIGHTS = (0.4, 0.3, 0.2, 0.1)  # early layers matter more, so the front is not trivial


def toy_evaluate(subnet, fidelity=1.0):
    """A smooth error falling with weighted capacity, and the exact parameter count."""
    capacity = sum(
        w * (h / SHAPE.num_heads + u / SHAPE.ffn) / 2 for w, (h, u) in zip(WEIGHTS, subnet.layers)
    )
    error = 0.05 + 0.6 * (1 - capacity) ** 2
    return {"error": error, "metric": 1 - error, "params": encoder_params(subnet, SHAPE)}


def spaces():
    return [
        make_space("small", SHAPE, unit_step=16),
        make_space("layer", SHAPE),
        make_space("layerwise", SHAPE, unit_step=16),
    ]


@pytest.mark.parametrize("name", sorted(n for n in SEARCHERS if n != "optuna"))  # alias
class TestSearcherContract:
    def test_first_proposals_are_full_and_smallest(self, name):
        for space in spaces():
            s = make_searcher(name, space, seed=0)
            first = s.ask()
            s.tell(first, (0.1, 1.0))
            second = s.ask()
            assert first == space.full() == SHAPE.full
            assert second == space.smallest()

    def test_only_valid_subnets_of_the_space(self, name):
        for space in spaces():
            s = make_searcher(name, space, seed=3)
            full = toy_evaluate(space.full())
            for _ in range(30):
                subnet = s.ask()
                subnet.validate(SHAPE)
                space.index(subnet)  # raises if the sub-network is not in the space
                s.tell(subnet, normalise(toy_evaluate(subnet), ("error", "params"), full))

    def test_already_told_initial_points_are_not_proposed_again(self, name):
        space = spaces()[2]
        s = make_searcher(name, space, seed=0)
        s.tell(space.full(), (0.05, 1.0))
        s.tell(space.smallest(), (0.65, 0.0))
        assert s.ask() not in (space.full(), space.smallest())

    def test_same_seed_same_proposals(self, name):
        space = spaces()[2]
        runs = []
        for _ in range(2):
            s = make_searcher(name, space, seed=7)
            full = toy_evaluate(space.full())
            seq = []
            for _ in range(25):
                subnet = s.ask()
                seq.append(subnet)
                s.tell(subnet, normalise(toy_evaluate(subnet), ("error", "params"), full))
            runs.append(seq)
        assert runs[0] == runs[1]

    def test_improves_hypervolume_over_first_proposals(self, name, tmp_path):
        space = spaces()[2]  # layerwise: 10^4 x 5^4 points, far from exhaustible
        store = TrialStore(tmp_path / "trials.db")
        result = run_search(
            space, make_searcher(name, space, seed=1), toy_evaluate, store, 40, progress=False
        )
        assert len(result.trials) == 40
        full = result.full
        first = [normalise(t.metrics, ("error", "params"), full) for t in result.trials[:2]]
        hv_first = hypervolume(first, reference_point(2))
        assert result.hypervolume > hv_first + 0.1
        assert result.history[-1] == pytest.approx(result.hypervolume)
        assert len(result.front) >= 5


def test_local_search_spreads_along_the_front(tmp_path):
    """Gap filling puts candidates across the size range; one-step moves alone cluster."""
    space = make_space("layerwise", SHAPE, unit_step=16)

    def widest_gap(searcher):
        with TrialStore(tmp_path / f"{searcher.fill}.db") as store:
            result = run_search(space, searcher, toy_evaluate, store, 40, progress=False)
        sizes = sorted(t.metrics["params"] / result.full["params"] for t in result.trials)
        return max(b - a for a, b in zip(sizes, sizes[1:]))

    gap_filled = widest_gap(make_searcher("local", space, seed=0))
    gap_steps = widest_gap(make_searcher("local", space, seed=0, fill=0.0))
    assert gap_filled < 0.15
    assert gap_filled <= gap_steps


def test_unknown_searcher():
    with pytest.raises(NaspruneError, match="unknown searcher"):
        make_searcher("grid", spaces()[0])


def test_three_objectives_with_optuna():
    space = spaces()[2]
    s = make_searcher("optuna-tpe", space, seed=0, n_objectives=3)
    for _ in range(15):
        subnet = s.ask()
        s.tell(subnet, (0.1, 0.5, 0.5))
    assert len(s.study.trials) >= 15
