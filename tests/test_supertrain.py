"""Super-network strategies: which weights each step trains, the fixed teacher, checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_training import toy_data

from nasprune.config import TrainConfig
from nasprune.core.families.base import get_adapter
from nasprune.core.families.tiny import tiny_model
from nasprune.core.subnet import Subnet
from nasprune.core.supernet import ORDER_FILE, Supernet
from nasprune.data.encode import Encoded, encode
from nasprune.data.presets import PRESETS
from nasprune.errors import NaspruneError
from nasprune.train.evaluation import evaluate
from nasprune.train.loop import train
from nasprune.train.strategies import STRATEGIES, make_strategy
from nasprune.train.strategies.base import SUPERNET_FILE, TrainContext, read_supernet_info
from nasprune.train.strategies.distill import DistillStrategy
from nasprune.train.strategies.random_linear import RandomLinearStrategy
from nasprune.train.strategies.sandwich import SandwichStrategy
from nasprune.train.strategies.sandwich_kd import SandwichKDStrategy

from conftest import tiny_tokenizer

HEAD_DIM = 8
SUB = Subnet(((2, 16), (1, 32)))  # the "random" sub-network forced in gradient tests


# ---------------------------------------------------------------- which weights learn


def _encoded(n=24, seed=0) -> Encoded:
    rng = np.random.default_rng(seed)
    ids = [rng.integers(5, 100, size=int(rng.integers(6, 12))).astype(np.int32) for _ in range(n)]
    return Encoded(ids, [np.zeros_like(x, dtype=np.int8) for x in ids],
                   rng.integers(0, 2, size=n))


def _prepared(cls, **options):
    model = tiny_model("bert", layers=2, heads=4, head_dim=HEAD_DIM, ffn=64, seed=1)
    strategy = cls(space="layerwise", unit_step=16, calibration_examples=16,
                   calibration_batch_size=8, **options)
    ctx = TrainContext(TrainConfig(progress=False), PRESETS["sst2"], torch.device("cpu"), 0)
    strategy.prepare(model, _encoded(), ctx)
    model.eval()  # no dropout: the gradients of two passes are comparable exactly
    return model, strategy


def _batch(seed=3):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 100, (6, 9), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "token_type_ids": torch.zeros_like(ids),
            "labels": torch.randint(0, 2, (6,), generator=g)}


def _grads(model):
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
            for n, p in model.named_parameters()}


def _full_only_grads(model, batch):
    model.zero_grad(set_to_none=True)
    model(**batch).loss.backward()
    out = _grads(model)
    model.zero_grad(set_to_none=True)
    return out


def _assert_prefix_trained(model, delta, subnet):
    """``delta`` (gradient beyond the full network's) is non-zero exactly on ``subnet``'s
    prefix weights in the encoder layers."""
    a = get_adapter(model)
    names = {id(p): n for n, p in model.named_parameters()}
    for i, (h, u) in enumerate(subnet.layers):
        rows = h * HEAD_DIM
        q = delta[names[id(a.query(i).weight)]]
        assert q[:rows].abs().sum() > 0 and q[rows:].abs().sum() == 0
        o = delta[names[id(a.attn_out(i).weight)]]
        assert o[:, :rows].abs().sum() > 0 and o[:, rows:].abs().sum() == 0
        fin = delta[names[id(a.ffn_in(i).weight)]]
        assert fin[:u].abs().sum() > 0 and fin[u:].abs().sum() == 0
        fout = delta[names[id(a.ffn_out(i).weight)]]
        assert fout[:, :u].abs().sum() > 0 and fout[:, u:].abs().sum() == 0


@pytest.mark.parametrize("cls", [SandwichStrategy, SandwichKDStrategy])
def test_sandwich_step_trains_the_sampled_subnetworks(cls, monkeypatch):
    model, strategy = _prepared(cls, k=1)
    monkeypatch.setattr(strategy, "sample", lambda: SUB)
    assert strategy.subnets() == [Subnet(((0, 0), (0, 0))), SUB]
    batch = _batch()
    full = _full_only_grads(model, batch)
    loss = strategy.backward(model, batch, progress=0.3)
    assert loss == pytest.approx(float(model(**batch).loss.detach()), rel=1e-5)
    delta = {n: g - full[n] for n, g in _grads(model).items()}
    _assert_prefix_trained(model, delta, SUB)  # the smallest trains no encoder weights
    assert delta["classifier.weight"].abs().sum() > 0  # shared head learns from every net
    assert strategy.supernet.active is None  # the full model is restored after each step


def test_kd_uses_the_full_networks_predictions(monkeypatch):
    """With ``alpha=0`` the labels never reach the sub-networks: flipping them changes
    only the full network's gradient."""
    model, strategy = _prepared(SandwichKDStrategy, k=1, smallest=False, temperature=2.0)
    monkeypatch.setattr(strategy, "sample", lambda: SUB)
    batch = _batch()
    flipped = {**batch, "labels": 1 - batch["labels"]}
    deltas = []
    for b in (batch, flipped):
        full = _full_only_grads(model, b)
        strategy.backward(model, b, 0.5)
        deltas.append({n: g - full[n] for n, g in _grads(model).items()})
        model.zero_grad(set_to_none=True)
    for name in deltas[0]:
        torch.testing.assert_close(deltas[0][name], deltas[1][name])


def test_random_linear_samples_more_as_training_progresses(monkeypatch):
    model, strategy = _prepared(RandomLinearStrategy)
    assert [strategy.probability(p) for p in (0.0, 0.5, 1.0)] == [0.0, 0.5, 1.0]
    monkeypatch.setattr(strategy, "sample", lambda: SUB)
    batch = _batch()
    strategy.backward(model, batch, progress=0.0)  # always the full network at the start
    full = _full_only_grads(model, batch)
    assert "full" in strategy.last
    strategy.backward(model, batch, progress=1.0)  # always a sub-network at the end
    assert "subnet" in strategy.last
    _assert_prefix_trained(model, _grads(model), SUB)
    assert full[next(iter(full))].abs().sum() > 0
    rng_counts = sum(strategy.rng.random() < strategy.probability(0.25) for _ in range(4000))
    assert 0.2 < rng_counts / 4000 < 0.3


def test_prepare_reorders_by_importance_without_changing_the_function():
    model = tiny_model("bert", layers=2, heads=4, head_dim=HEAD_DIM, ffn=64, seed=1)
    batch = _batch()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        before = model(**inputs).logits
    strategy = SandwichStrategy(calibration_examples=16, calibration_batch_size=8)
    ctx = TrainContext(TrainConfig(progress=False), PRESETS["sst2"], torch.device("cpu"), 0)
    strategy.prepare(model, _encoded(), ctx)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).logits, before, atol=1e-5, rtol=1e-4)
    order = strategy.supernet.order
    assert order["method"] == "fisher" and order["examples"] == 16
    assert any(h != sorted(h) for h in order["units"])  # something moved
    for scores in order["head_scores"]:
        assert scores == sorted(scores, reverse=True)


# ------------------------------------------------------------------- through the loop


@pytest.mark.parametrize("name", ["sandwich", "sandwich-kd", "random-linear"])
def test_strategy_trains_through_the_loop_and_saves_its_order(name, tmp_path):
    from conftest import tiny_bert

    model, tokenizer = tiny_bert(layers=2, heads=4, hidden=32, ffn=64), tiny_tokenizer()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    options = {"space": "layerwise", "unit_step": 16, "calibration_examples": 64}
    if name != "random-linear":
        options["k"] = 1
    cfg = TrainConfig(epochs=2, batch_size=16, learning_rate=3e-3, seed=0, progress=False,
                      strategy=name, strategy_options=options)
    result = train(model, tokenizer, toy_data(), cfg, tmp_path)
    assert result["best"]["accuracy"] > 0.9  # the full network learns the toy task

    saved = tmp_path / "model"
    order = json.loads((saved / ORDER_FILE).read_text())
    assert order["method"] == "fisher" and len(order["heads"]) == 2
    info = read_supernet_info(saved)
    assert info["strategy"] == name and info["options"]["unit_step"] == 16
    assert info["space"]["space"] == "layerwise"

    sn = Supernet.from_pretrained(saved)
    assert sn.order == order
    changed = [k for k, v in sn.model.state_dict().items() if not torch.equal(v, initial[k])]
    assert any(".layer.1.intermediate" in k for k in changed)
    # a half-size sub-network of the reloaded checkpoint also solves the toy task
    enc = encode(tokenizer, toy_data(), "validation", cache=False)
    with torch.inference_mode(), sn.use(Subnet(((2, 32), (2, 32)))) as m:
        assert evaluate(m, enc, PRESETS["sst2"])["accuracy"] > 0.85


def test_registry_and_option_errors():
    assert {"standard", "sandwich", "sandwich-kd", "random-linear"} <= set(STRATEGIES)
    assert isinstance(make_strategy("sandwich-kd", {"k": 3}), SandwichKDStrategy)
    bad = [("sandwich", {"kk": 1}), ("sandwich", {"space": "nope"}),
           ("sandwich-kd", {"temperature": 0}), ("random-linear", {"k": 2}),
           ("random-linear", {"max_probability": 2}), ("sandwich", {"importance": "x"}),
           ("sandwich", {"k": -1})]
    for name, options in bad:
        with pytest.raises(NaspruneError):
            make_strategy(name, options)
    with pytest.raises(NaspruneError, match="before prepare"):
        SandwichStrategy().backward(None, {}, 0.0)


def test_standard_checkpoint_has_no_supernet_files(tmp_path):
    from conftest import tiny_bert

    cfg = TrainConfig(epochs=0.25, batch_size=16, progress=False)
    train(tiny_bert(), tiny_tokenizer(), toy_data(), cfg, tmp_path)
    assert not (tmp_path / "model" / ORDER_FILE).exists()
    assert not (tmp_path / "model" / SUPERNET_FILE).exists()


# ------------------------------------------- super-network distillation (fixed teacher)


def test_distill_strategy_teacher_is_fixed_and_every_subnetwork_learns_from_it(tmp_path):
    from conftest import tiny_bert

    model, tokenizer = tiny_bert(layers=2, heads=4, hidden=32, ffn=64), tiny_tokenizer()
    train(model, tokenizer, toy_data(), TrainConfig(epochs=2, batch_size=16, learning_rate=3e-3,
                                                    progress=False), tmp_path / "teacher")
    enc = encode(tokenizer, toy_data(), "validation", cache=False)
    small = Subnet(((1, 16), (1, 16)))
    sn = Supernet(model)
    with torch.inference_mode(), sn.use(small) as m:
        before = evaluate(m, enc, PRESETS["sst2"])["accuracy"]
    strategy = make_strategy("distill", {"space": "layerwise", "unit_step": 16, "k": 2,
                                         "calibration_examples": 64, "budget": 0.3})
    cfg = TrainConfig(epochs=2, batch_size=16, learning_rate=3e-3, progress=False,
                      strategy="distill")
    original = {k: v.clone() for k, v in model.state_dict().items()}
    ctx_teacher = {}

    def keep_teacher(record):  # after each epoch: the frozen copy never moved
        ctx_teacher.setdefault("state", {k: v.clone() for k, v in
                                         strategy.teacher.state_dict().items()})
        for k, v in strategy.teacher.state_dict().items():
            assert torch.equal(v, ctx_teacher["state"][k])
        assert all(not p.requires_grad for p in strategy.teacher.parameters())

    train(model, tokenizer, toy_data(), cfg, tmp_path / "student", strategy=strategy,
          on_epoch=keep_teacher)
    assert strategy.teacher is not model
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, original[k])]
    assert changed  # the student trained; the teacher kept the reordered fine-tuned weights
    reloaded = Supernet.from_pretrained(tmp_path / "student" / "model")
    assert reloaded.order is not None
    assert read_supernet_info(tmp_path / "student" / "model")["strategy"] == "distill"
    with torch.inference_mode(), reloaded.use(small) as m:
        after = evaluate(m, enc, PRESETS["sst2"])["accuracy"]
    assert after >= before and after > 0.8  # a small sub-network learned the task too


def test_distill_strategy_samples_around_the_budget(monkeypatch):
    model, strategy = _prepared(DistillStrategy, k=4, budget=0.4, near_budget=0.5)
    space = strategy.space
    nets = [s for _ in range(20) for s in strategy.subnets()]
    assert nets[0] == space.smallest()
    near = [s for i, s in enumerate(nets) if i % 5 in (1, 2)]  # ceil(4 * 0.5) = 2 per step
    assert all(0.36 <= space.encoder_fraction(s) <= 0.44 for s in near)
    for s in nets:
        space.index(s)  # every sample is a point of the space


def test_sample_budget_centres_where_asked():
    import random

    from nasprune.core.spaces import make_space
    from nasprune.core.subnet import ModelShape

    space = make_space("layerwise", ModelShape(6, 12, 32, 384, 1536))
    rng = random.Random(0)
    for budget in (0.2, 0.3, 0.5, 0.8):
        fractions = [space.encoder_fraction(space.sample_budget(rng, budget))
                     for _ in range(50)]
        assert all(budget * 0.9 <= f <= budget * 1.1 for f in fractions)
        assert abs(np.mean(fractions) - budget) < 0.05 * budget


def test_distill_strategy_option_errors():
    for options in ({"budget": 1.5}, {"near_budget": 2}, {"epochs": 0}, {"temperature": 0}):
        with pytest.raises(NaspruneError):
            make_strategy("distill", options)
