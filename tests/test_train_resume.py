"""A stopped training run continues from its last checkpoint (after an epoch, or inside one
once ``CHECKPOINT_SECONDS`` have passed), with the same result."""

from __future__ import annotations

import pytest
import torch
from test_training import toy_data

from nasprune.config import TrainConfig
from nasprune.train.loop import train
from nasprune.train.resume import STATE_FILE

from conftest import tiny_bert, tiny_tokenizer

CFG = TrainConfig(epochs=3, batch_size=16, learning_rate=3e-3, seed=0, progress=False)


class Stop(Exception):
    pass


def _stop_after(epoch: int):
    def on_epoch(record):
        if record["epoch"] == epoch:
            raise Stop
    return on_epoch


def test_resumed_run_equals_the_uninterrupted_one(tmp_path):
    whole = tiny_bert()
    expected = train(whole, tiny_tokenizer(), toy_data(), CFG, tmp_path / "whole")
    assert not (tmp_path / "whole" / STATE_FILE).exists()  # gone once finished

    with pytest.raises(Stop):  # e.g. Ctrl-C or the end of a session, during epoch 2
        train(tiny_bert(), tiny_tokenizer(), toy_data(), CFG, tmp_path / "part",
              on_epoch=_stop_after(2))
    assert (tmp_path / "part" / STATE_FILE).is_file()
    epochs_run = []
    resumed_model = tiny_bert()
    resumed = train(resumed_model, tiny_tokenizer(), toy_data(), CFG, tmp_path / "part",
                    on_epoch=lambda r: epochs_run.append(r["epoch"]))
    assert epochs_run == [2, 3]  # epoch 1 was finished and kept; epoch 2 was not
    assert [h["accuracy"] for h in resumed["history"]] == \
        [h["accuracy"] for h in expected["history"]]
    for (name, a), (_, b) in zip(whole.state_dict().items(), resumed_model.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)


def _stopping(strategy, at_step: int):
    """``strategy`` with a stop (Ctrl-C, the end of a session) before its ``at_step``-th step."""
    backward, calls = strategy.backward, []

    def stop_then(*args):
        calls.append(1)
        if len(calls) == at_step:
            raise Stop
        return backward(*args)
    strategy.backward = stop_then
    return strategy


@pytest.mark.parametrize("name", ["standard", "sandwich"])
def test_a_run_stopped_inside_an_epoch_resumes_from_its_last_step(tmp_path, monkeypatch, name):
    """A checkpoint after every step (``CHECKPOINT_SECONDS`` 0); stopped at step 21 of 48
    (epoch 2 of 3, 16 steps each) and resumed, the run ends where the whole one did,
    sampled sub-networks included (``sandwich`` draws them from its own generator)."""
    from nasprune.train import resume
    from nasprune.train.strategies import make_strategy

    monkeypatch.setattr(resume, "CHECKPOINT_SECONDS", 0.0)
    cfg = TrainConfig(epochs=3, batch_size=16, learning_rate=3e-3, seed=0, progress=False,
                      strategy=name)
    whole = tiny_bert()
    expected = train(whole, tiny_tokenizer(), toy_data(), cfg, tmp_path / "whole",
                     strategy=make_strategy(name, {}))
    with pytest.raises(Stop):
        train(tiny_bert(), tiny_tokenizer(), toy_data(), cfg, tmp_path / "part",
              strategy=_stopping(make_strategy(name, {}), 21))
    state = torch.load(tmp_path / "part" / STATE_FILE, weights_only=False)
    assert (state["loop"]["done"], state["loop"]["epoch"]) == (20, 1)  # inside epoch 2
    steps = []
    resumed_model = tiny_bert()
    strategy = make_strategy(name, {})
    backward = strategy.backward
    strategy.backward = lambda *a: steps.append(1) or backward(*a)
    resumed = train(resumed_model, tiny_tokenizer(), toy_data(), cfg, tmp_path / "part",
                    strategy=strategy)
    assert len(steps) == 48 - 20  # nothing trained twice, nothing skipped
    assert [h["accuracy"] for h in resumed["history"]] == \
        [h["accuracy"] for h in expected["history"]]
    for (key, a), (_, b) in zip(whole.state_dict().items(), resumed_model.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=key)


def test_a_state_of_other_options_is_not_used(tmp_path):
    with pytest.raises(Stop):
        train(tiny_bert(), tiny_tokenizer(), toy_data(), CFG, tmp_path, on_epoch=_stop_after(1))
    epochs_run = []
    other = TrainConfig(epochs=2, batch_size=16, learning_rate=1e-3, seed=0, progress=False)
    train(tiny_bert(), tiny_tokenizer(), toy_data(), other, tmp_path,
          on_epoch=lambda r: epochs_run.append(r["epoch"]))
    assert epochs_run == [1, 2]


def test_recovery_distillation_resumes_after_its_last_epoch(tmp_path):
    from test_export import make_supernet, tiny_validation

    from nasprune.core.subnet import Subnet
    from nasprune.train.recovery.distillation import distill

    sn = make_supernet("bert")
    subnet = Subnet(((2, 32), (4, 16), (1, 64), (0, 0)))
    data = tiny_validation(64)
    state = tmp_path / ".export.recovery.pt"
    calls = []

    def select(student, stop_at=None):  # called before training and after each epoch
        calls.append(1)
        if stop_at is not None and len(calls) == stop_at:
            raise Stop
        return 1.0 / len(calls)  # later epochs look better: the last one is kept

    kwargs = dict(epochs=3, batch_size=8, learning_rate=1e-3, seed=0)
    whole = sn.extract(subnet)
    expected = distill(whole, sn.model, data, select=select, **kwargs)
    calls.clear()
    part = sn.extract(subnet)
    with pytest.raises(Stop):  # stopped during epoch 2's selection: epoch 1 is on disk
        distill(part, sn.model, data, select=lambda s: select(s, stop_at=3),
                state_file=state, **kwargs)
    assert state.is_file()
    calls[:] = [1, 1]  # epochs 0 and 1 were scored before the stop
    resumed_model = sn.extract(subnet)
    resumed = distill(resumed_model, sn.model, data, select=select, state_file=state, **kwargs)
    assert len(calls) == 4 and not state.exists()  # epochs 2 and 3 only, then cleaned up
    assert resumed["steps"] == expected["steps"]
    assert [h["epoch"] for h in resumed["epochs"]] == [0, 1, 2, 3]
    for (name, a), (_, b) in zip(whole.state_dict().items(),
                                 resumed_model.state_dict().items()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)


def test_options_that_change_nothing_keep_the_checkpoint(tmp_path):
    """A checkpoint is keyed by what changes the result: a run resumed with other reporting
    (progress, threads) continues; the key leaves out fields at their default, so a field
    added later does not orphan a long run's checkpoint."""
    import dataclasses

    from nasprune.config.options import result_options

    assert result_options(TrainConfig()) == {}
    assert result_options(dataclasses.replace(CFG, progress=True, threads=1)) == \
        result_options(CFG)
    with pytest.raises(Stop):
        train(tiny_bert(), tiny_tokenizer(), toy_data(), CFG, tmp_path, on_epoch=_stop_after(2))
    epochs_run = []  # epoch 1 was kept, epoch 2 stopped before its checkpoint
    train(tiny_bert(), tiny_tokenizer(), toy_data(), dataclasses.replace(CFG, progress=True),
          tmp_path, on_epoch=lambda r: epochs_run.append(r["epoch"]))
    assert epochs_run == [2, 3]
