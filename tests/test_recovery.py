"""Recovery of an extracted sub-network: least-squares correction and distillation from the
fixed teacher, stopped on the search split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nasprune.core.families.tiny import tiny_model
from nasprune.core.subnet import Subnet
from nasprune.core.supernet import Supernet
from nasprune.data.encode import Encoded
from nasprune.data.presets import PRESETS
from nasprune.errors import NaspruneError
from nasprune.train.batches import iter_batches
from nasprune.train.losses import DistillLoss
from nasprune.train.recovery import RECOVERY_METHODS
from nasprune.train.recovery.distillation import distill
from nasprune.train.recovery.least_squares import least_squares_correction
from nasprune.train.recovery.recover import RecoveryConfig, logits_mse, recover

# 3 layers x 4 heads x 8, FFN 48: partial blocks, a removed attention, a removed FFN
SUBNET = Subnet(((2, 24), (0, 16), (3, 0)))


def _encoded(n=96, seed=0) -> Encoded:
    rng = np.random.default_rng(seed)
    ids = [rng.integers(5, 100, size=int(rng.integers(6, 14))).astype(np.int32) for _ in range(n)]
    return Encoded(ids, [np.zeros_like(x, dtype=np.int8) for x in ids],
                   rng.integers(0, 2, size=n))


def _setup(family="bert"):
    full = tiny_model(family, layers=3, heads=4, head_dim=8, ffn=48, seed=2)
    with torch.no_grad():  # larger weights than the default init: outputs that differ
        for name, p in full.named_parameters():
            if p.dim() == 2 and "embeddings" not in name:
                p.normal_(0, 0.3)
    sn = Supernet(full)
    tt = family != "distilbert"
    sn.reorder_by_importance(iter_batches(_encoded(32, 5), 16, full) if tt else
                             _no_types(iter_batches(_encoded(32, 5), 16, full)))
    return sn, sn.extract(SUBNET)


def _no_types(batches):
    for b in batches:
        b.pop("token_type_ids", None)
        yield b


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_least_squares_lowers_the_calibration_error_and_keeps_shapes(family):
    sn, small = _setup(family)
    full_state = _state(sn.model)
    shapes = {k: v.shape for k, v in small.state_dict().items()}
    calib = list(iter_batches(_encoded(), 32, small))
    before = logits_mse(small.eval(), sn.model.eval(), calib)
    fits = least_squares_correction(small, sn.model, calib, ridge=1e-4)
    # one fit per kept block, in order; each one lowers (or keeps) its own error
    assert [(f.layer, f.block) for f in fits] == [(0, "attention"), (0, "ffn"), (1, "ffn"),
                                                 (2, "attention")]
    assert all(f.error_after <= f.error_before for f in fits)
    assert any(f.applied and f.error_after < 0.9 * f.error_before for f in fits)
    after = logits_mse(small, sn.model, calib)
    assert after < before
    assert {k: v.shape for k, v in small.state_dict().items()} == shapes
    assert all(torch.equal(v, full_state[k]) for k, v in sn.model.state_dict().items())


def test_least_squares_leaves_the_full_subnetwork_exact():
    """The full model's own weights already fit perfectly: nothing to change."""
    sn, _ = _setup()
    full = sn.extract(sn.shape.full)
    calib = list(iter_batches(_encoded(), 32, full))
    fits = least_squares_correction(full, sn.model, calib, ridge=1e-4)
    assert all(f.error_before < 1e-10 for f in fits)
    assert logits_mse(full, sn.model, calib) < 1e-10


def test_least_squares_needs_to_know_the_subnetwork():
    sn, _ = _setup()
    with pytest.raises(NaspruneError, match="sub-network"):
        least_squares_correction(tiny_model("bert", layers=3, heads=4, head_dim=8, ffn=48),
                                 sn.model, [])


def test_distillation_moves_the_subnetwork_towards_the_full_model():
    sn, small = _setup()
    shapes = {k: v.shape for k, v in small.state_dict().items()}
    train = _encoded(64, 1)
    calib = list(iter_batches(train, 32, small))
    before = logits_mse(small.eval(), sn.model.eval(), calib)
    info = distill(small, sn.model, train, loss=DistillLoss(temperature=1.0), epochs=10,
                   batch_size=16, learning_rate=3e-3)
    assert info["steps"] == 40  # 10 epochs of 4 batches
    assert logits_mse(small.eval(), sn.model, calib) < 0.5 * before
    assert {k: v.shape for k, v in small.state_dict().items()} == shapes


def test_distillation_keeps_the_epoch_with_the_best_search_error():
    sn, small = _setup()
    teacher_state = _state(sn.model)
    errors = iter([0.5, 0.3, 0.1, 0.4])  # before training, then after epochs 1, 2, 3
    seen = {}

    def select(model):
        epoch = len(seen)
        seen[epoch] = _state(model)
        return next(errors)

    info = distill(small, sn.model, _encoded(32, 1), epochs=3, batch_size=16,
                   learning_rate=3e-3, select=select)
    assert info["best_epoch"] == 2 and [e["epoch"] for e in info["epochs"]] == [0, 1, 2, 3]
    kept = small.state_dict()
    assert all(torch.equal(kept[k], v) for k, v in seen[2].items())
    assert not all(torch.equal(kept[k], v) for k, v in seen[3].items())
    assert all(torch.equal(v, teacher_state[k]) for k, v in sn.model.state_dict().items())


def test_distillation_keeps_the_extracted_weights_when_no_epoch_helps():
    sn, small = _setup()
    start = _state(small)
    errors = iter([0.1, 0.2, 0.3])
    distill(small, sn.model, _encoded(32, 1), epochs=2, batch_size=16, learning_rate=3e-3,
            select=lambda model: next(errors))
    assert all(torch.equal(small.state_dict()[k], v) for k, v in start.items())


def test_distillation_with_layer_outputs_and_unlabeled_texts():
    sn, small = _setup()
    unlabeled = _encoded(16, 9)
    unlabeled.labels[:] = -100
    cfg = RecoveryConfig(method="distill", epochs=1, hidden_weight=1.0, labels_weight=0.5,
                         learning_rate=1e-3, calibration_examples=32)
    report = recover(small, sn.model, _encoded(32, 1), search=_encoded(24, 3),
                     preset=PRESETS["sst2"], config=cfg, unlabeled=unlabeled)
    step = report.steps[-1]
    assert step["examples"] == 48 and step["steps"] == 3
    assert report.after["logits_mse"] < report.before["logits_mse"]


@pytest.mark.parametrize("method", list(RECOVERY_METHODS))
def test_recover_reports_before_and_after_and_never_changes_shapes(method):
    sn, small = _setup()
    shapes = {k: v.shape for k, v in small.state_dict().items()}
    cfg = RecoveryConfig(method=method, calibration_examples=64, epochs=3, learning_rate=1e-3)
    report = recover(small, sn.model, _encoded(96, 1), search=_encoded(40, 3),
                     validation=_encoded(40, 7), preset=PRESETS["sst2"], config=cfg)
    assert {k: v.shape for k, v in small.state_dict().items()} == shapes
    for record in (report.before, report.after):
        assert set(record) == {"logits_mse", "search", "validation"}
        assert {"accuracy", "error"} <= set(record["search"]) & set(record["validation"])
    expected = {"least-squares": ["least-squares"], "distill": ["distill"],
                "both": ["least-squares", "distill"], "none": []}[method]
    assert [s["step"] for s in report.steps] == expected
    if method == "none":
        assert report.after == report.before
    elif method == "least-squares":
        assert report.after["logits_mse"] < report.before["logits_mse"]
    else:  # distillation stops on the search split: never worse there than before
        assert report.after["search"]["error"] <= report.before["search"]["error"]
    assert report.to_dict()["config"]["method"] == method


def test_bad_recovery_config():
    for kwargs in ({"method": "magic"}, {"calibration_examples": 0}, {"temperature": 0},
                   {"labels_weight": -1.0}, {"epochs": -1}):
        with pytest.raises(NaspruneError):
            RecoveryConfig(**kwargs)


def test_a_tie_within_one_example_goes_to_the_epoch_closer_to_the_teacher():
    from nasprune.train.recovery.distillation import close_call
    from nasprune.train.recovery.recover import Selection

    before = Selection(0.20, loss=0.30, examples=400)
    # one example (0.0025) worse but much closer to the teacher: a tie, the loss decides
    assert Selection(0.2025, loss=0.10, examples=400).better(before)
    assert not Selection(0.20, loss=0.31, examples=400).better(before)  # exact tie, farther
    assert not Selection(0.2050, loss=0.01, examples=400).better(before)  # two examples worse
    assert Selection(0.1950, loss=0.90, examples=400).better(before)  # two examples better
    assert Selection(0.19).better(Selection(0.20)) and not Selection(0.2).better(Selection(0.2))
    history = [{"epoch": 0, **before.to_dict()},
               {"epoch": 1, **Selection(0.2025, 0.10, 400).to_dict()},
               {"epoch": 2, **Selection(0.2100, 0.05, 400).to_dict()}]
    assert close_call(history, history[1]) == {"within_one_example_of": [0], "examples": 400,
                                               "by": "search-split distillation loss"}
    assert close_call(history[2:], history[2])["within_one_example_of"] == []


def test_recovery_leaves_epoch_0_when_distilled_epochs_only_tie_it(tmp_path):
    """The small-split failure this rule fixes: epochs that tie the undistilled model on
    errors keep the distilled weights when they are closer to the teacher."""
    from test_export import make_supernet, tiny_validation

    from nasprune.core.subnet import Subnet
    from nasprune.train.recovery.distillation import distill
    from nasprune.train.recovery.recover import Selection

    sn = make_supernet("bert")
    small = sn.extract(Subnet(((2, 32), (4, 16), (1, 64), (0, 0))))
    data = tiny_validation(48)
    losses = iter([0.5, 0.3, 0.2])  # each epoch closer to the teacher, errors all equal
    info = distill(small, sn.model, data, epochs=2, batch_size=8, learning_rate=1e-3,
                   select=lambda model: Selection(0.25, next(losses), 40))
    assert info["best_epoch"] == 2
    assert info["selection"]["within_one_example_of"] == [0, 1]
