"""Supernet: importance reordering, use() slicing views, extract(), persistence."""

from __future__ import annotations

import json

import pytest
import torch
import transformers as tf

from nasprune.core.extract import load_prefix_weights, shrink_structure, subnet_of
from nasprune.core.families import FAMILIES
from nasprune.core.families.base import get_adapter
from nasprune.core.families.tiny import tiny_model
from nasprune.core.subnet import Subnet, encoder_params
from nasprune.core.supernet import Supernet
from nasprune.errors import NaspruneError

# heads 4 x 8, FFN 48, 3 layers: a mix of partial, removed blocks and a removed layer
SUBNETS = [
    Subnet(((4, 48), (4, 48), (4, 48))),
    Subnet(((2, 20), (1, 48), (4, 7))),
    Subnet(((0, 48), (3, 0), (0, 0))),
    Subnet(((1, 1), (0, 0), (2, 0))),
    Subnet(((0, 0), (0, 0), (0, 0))),
]


def _model(family="bert", **kw):
    return tiny_model(family, layers=3, heads=4, head_dim=8, ffn=48, **kw)


def _batch(n=6, seq=10, seed=0, regression=False):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 100, (n, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[0, seq // 2:] = 0  # one padded example
    labels = torch.rand(n, generator=g) if regression else torch.randint(0, 2, (n,), generator=g)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _logits(model, batch):
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_intact(sn, state, logits, batch):
    model = sn.model
    assert not any("forward" in m.__dict__ for m in model.modules()), "patched forward left behind"
    now = model.state_dict()
    assert now.keys() == state.keys()
    assert all(torch.equal(now[k], state[k]) for k in state)
    assert torch.equal(_logits(model, batch), logits)
    assert sn.active is None


@pytest.fixture(params=FAMILIES)
def reordered(request):
    sn = Supernet(_model(request.param))
    sn.reorder_by_importance([_batch(seed=1), _batch(seed=2)])
    return sn


# ------------------------------------------------------------------------- importance


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ["fisher", "taylor", "magnitude"])
def test_reordering_keeps_the_function(family, method):
    sn = Supernet(_model(family))
    batch = _batch(seed=3)
    before = _logits(sn.model, batch)
    order = sn.reorder_by_importance([_batch(seed=1), _batch(seed=2)], method=method)
    after = _logits(sn.model, batch)
    assert torch.allclose(before, after, atol=1e-5, rtol=0)
    assert order is sn.order
    json.loads(json.dumps(order))  # JSON-serialisable
    for heads, units in zip(order["heads"], order["units"]):
        assert sorted(heads) == list(range(4)) and sorted(units) == list(range(48))
    for scores in order["head_scores"] + order["unit_scores"]:
        assert scores == sorted(scores, reverse=True)
    if method != "magnitude":
        assert order["examples"] == 12


def test_reordering_moves_weights_as_recorded():
    model = _model()
    a = get_adapter(model)
    original_q = a.query(1).weight.detach().clone().view(4, 8, -1)
    original_in = a.ffn_in(1).weight.detach().clone()
    sn = Supernet(model)
    order = sn.reorder_by_importance([_batch()])
    order2 = sn.reorder_by_importance([_batch(seed=5)], method="magnitude")  # composes
    assert order2["heads"] != order["heads"] or order2["units"] != order["units"]
    for o in (order2,):
        q = a.query(1).weight.detach().view(4, 8, -1)
        for pos, head in enumerate(o["heads"][1]):
            assert torch.equal(q[pos], original_q[head])
        for pos, unit in enumerate(o["units"][1][:5]):
            assert torch.equal(a.ffn_in(1).weight[pos], original_in[unit])
    assert order2["method"] == "magnitude"


def test_dead_head_and_unit_rank_last():
    model = _model()
    a = get_adapter(model)
    with torch.no_grad():
        a.attn_out(0).weight[:, 8:16] = 0  # head 1 of layer 0 contributes nothing
        a.ffn_out(0).weight[:, 5] = 0  # unit 5 of layer 0 contributes nothing
    order = Supernet(model).reorder_by_importance([_batch(), _batch(seed=1)])
    assert order["heads"][0][-1] == 1 and order["head_scores"][0][-1] == 0.0
    assert order["units"][0][-1] == 5 and order["unit_scores"][0][-1] == 0.0
    assert order["head_scores"][0][0] > 0


def test_regression_model_scores_with_mse():
    sn = Supernet(_model(num_labels=1))
    batch = _batch(regression=True)
    before = _logits(sn.model, batch)
    order = sn.reorder_by_importance([batch], max_batches=1)
    assert torch.allclose(before, _logits(sn.model, batch), atol=1e-5, rtol=0)
    assert sum(order["head_scores"][0]) > 0


def test_max_batches_and_errors():
    sn = Supernet(_model())
    assert sn.reorder_by_importance([_batch(n=3)] * 5, max_batches=2)["examples"] == 6
    with pytest.raises(NaspruneError, match="method"):
        sn.reorder_by_importance([_batch()], method="nope")
    with pytest.raises(NaspruneError, match="no calibration"):
        sn.reorder_by_importance([])
    with pytest.raises(NaspruneError, match="labels"):
        sn.reorder_by_importance([{"input_ids": _batch()["input_ids"]}])
    with sn.use(SUBNETS[1]), pytest.raises(NaspruneError, match="inside use"):
        sn.reorder_by_importance([_batch()])


# ------------------------------------------------------------------------- use / extract


@pytest.mark.parametrize("subnet", SUBNETS, ids=str)
def test_use_equals_extract(reordered, subnet):
    sn, batch = reordered, _batch(seed=7)
    with sn.use(subnet) as model:
        assert model is sn.model
        via_use = _logits(model, batch)
    small = sn.extract(subnet)
    assert torch.allclose(via_use, _logits(small, batch), atol=1e-4, rtol=0)
    if subnet != sn.shape.full:
        assert not torch.allclose(via_use, _logits(sn.model, batch), atol=1e-4)


@pytest.mark.parametrize("subnet", SUBNETS[:2], ids=str)
def test_use_equals_masking_when_no_block_is_removed(reordered, subnet):
    batch = _batch(seed=8)
    with reordered.use(subnet):
        sliced = _logits(reordered.model, batch)
    with reordered.masked(subnet):
        masked = _logits(reordered.model, batch)
    assert torch.allclose(sliced, masked, atol=1e-5, rtol=0)


def test_use_computes_with_prefix_sizes_not_masks():
    """Inside use() the matmuls are sub-network sized and removed layers never run."""
    sn = Supernet(_model())
    a = get_adapter(sn.model)
    sizes: dict[str, tuple] = {}
    handles = [
        a.query(0).register_forward_hook(lambda m, i, o: sizes.__setitem__("q0", o.shape[-1])),
        a.ffn_in(0).register_forward_hook(lambda m, i, o: sizes.__setitem__("in0", o.shape[-1])),
        a.attn_out(0).register_forward_hook(
            lambda m, i, o: sizes.__setitem__("o0_in", i[0].shape[-1])),
        a.query(1).register_forward_hook(lambda m, i, o: sizes.__setitem__("q1", 1)),
        a.ffn_in(2).register_forward_hook(lambda m, i, o: sizes.__setitem__("in2", 1)),
    ]
    with sn.use(Subnet(((2, 20), (0, 0), (3, 0)))):
        _logits(sn.model, _batch())
    for h in handles:
        h.remove()
    assert sizes == {"q0": 16, "in0": 20, "o0_in": 16}


def test_model_is_intact_after_use_even_when_the_body_raises(reordered):
    batch = _batch(seed=9)
    state, logits = _snapshot(reordered.model), _logits(reordered.model, batch)
    with pytest.raises(RuntimeError, match="boom"):
        with reordered.use(SUBNETS[2]):
            _logits(reordered.model, batch)
            raise RuntimeError("boom")
    _assert_intact(reordered, state, logits, batch)
    with reordered.use(SUBNETS[1]):  # and it still works afterwards
        pass
    _assert_intact(reordered, state, logits, batch)


def test_nested_and_repeated_use(reordered):
    batch = _batch(seed=10)
    state, logits = _snapshot(reordered.model), _logits(reordered.model, batch)
    outer, inner = SUBNETS[1], SUBNETS[2]
    with reordered.use(inner):
        expect_inner = _logits(reordered.model, batch)
    with reordered.use(outer):
        expect_outer = _logits(reordered.model, batch)
        with reordered.use(inner):
            assert reordered.active == inner
            assert torch.equal(_logits(reordered.model, batch), expect_inner)
        assert reordered.active == outer
        assert torch.equal(_logits(reordered.model, batch), expect_outer)
        small = reordered.extract(inner)  # extract inside use() sees the full model
        assert reordered.active == outer
    assert torch.allclose(_logits(small, batch), expect_inner, atol=1e-4, rtol=0)
    for _ in range(3):
        with reordered.use(outer):
            assert torch.equal(_logits(reordered.model, batch), expect_outer)
    _assert_intact(reordered, state, logits, batch)


def test_backward_inside_use_reaches_the_full_weights():
    sn = Supernet(_model())
    sn.model.train()  # dropout on: train mode must work too
    a = get_adapter(sn.model)
    batch = _batch()
    with sn.use(Subnet(((2, 20), (0, 0), (4, 0)))) as model:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    labels=batch["labels"])
        out.loss.backward()
    assert sn.model.training
    q, inp = a.query(0).weight.grad, a.ffn_in(0).weight.grad
    assert q.shape == (32, 32) and q[:16].abs().sum() > 0 and q[16:].abs().sum() == 0
    assert inp[:20].abs().sum() > 0 and inp[20:].abs().sum() == 0
    assert a.attn_out(0).weight.grad[:, 16:].abs().sum() == 0
    assert a.query(1).weight.grad is None  # removed layer
    assert a.ffn_in(2).weight.grad is None and a.query(2).weight.grad.abs().sum() > 0
    # one optimiser step on the full weights changes the sub-network's output
    opt = torch.optim.SGD(sn.model.parameters(), lr=0.1)
    sn.model.eval()
    with sn.use(Subnet(((2, 20), (0, 0), (4, 0)))):
        before = _logits(sn.model, batch)
        opt.step()
        assert not torch.equal(before, _logits(sn.model, batch))


@pytest.mark.parametrize("subnet", SUBNETS, ids=str)
def test_extracted_model_is_small_dense_and_counted_exactly(reordered, subnet):
    small = reordered.extract(subnet)
    full_total = sum(p.numel() for p in reordered.model.parameters())
    fixed = full_total - encoder_params(reordered.shape.full, reordered.shape)
    assert sum(p.numel() for p in small.parameters()) == fixed + encoder_params(
        subnet, reordered.shape)
    big = {p.data_ptr() for p in reordered.model.parameters()}
    assert not big & {p.data_ptr() for p in small.parameters()}  # own tensors
    assert subnet_of(small) == subnet
    assert subnet_of(reordered.model) is None  # the super-network's config is untouched
    a = get_adapter(small)
    for i, (h, u) in enumerate(subnet.layers):
        if h and u:
            assert a.query(i).weight.shape[0] == h * 8 and a.ffn_in(i).weight.shape[0] == u


@pytest.mark.parametrize("family", FAMILIES)
def test_structure_rebuilds_from_config_and_loads_saved_weights(family, tmp_path):
    """The export path: config with the sub-network -> same structure -> strict load."""
    sn = Supernet(_model(family))
    subnet, batch = SUBNETS[2], _batch(seed=11)
    small = sn.extract(subnet)
    small.save_pretrained(tmp_path)
    config = tf.AutoConfig.from_pretrained(tmp_path)
    rebuilt = tf.AutoModelForSequenceClassification.from_config(config)
    shrink_structure(rebuilt, subnet_of(rebuilt))
    from safetensors.torch import load_file

    rebuilt.load_state_dict(load_file(tmp_path / "model.safetensors"), strict=True)
    rebuilt.eval()
    assert torch.allclose(_logits(rebuilt, batch), _logits(small, batch), atol=1e-6, rtol=0)
    # and load_prefix_weights fills a shrunk copy straight from the full weights
    other = shrink_structure(tf.AutoModelForSequenceClassification.from_config(config), subnet)
    load_prefix_weights(other, sn.model.state_dict())
    assert torch.allclose(_logits(other.eval(), batch), _logits(small, batch), atol=1e-6, rtol=0)


def test_save_and_from_pretrained_keep_the_order(tmp_path):
    sn = Supernet(_model())
    sn.reorder_by_importance([_batch()])
    batch = _batch(seed=12)
    with sn.use(SUBNETS[1]):
        sn.save(tmp_path)  # saves the full model even inside use()
        expect = _logits(sn.model, batch)
    loaded = Supernet.from_pretrained(tmp_path)
    assert loaded.order == json.loads((tmp_path / "order.json").read_text()) == sn.order
    with loaded.use(SUBNETS[1]):
        assert torch.allclose(_logits(loaded.model.eval(), batch), expect, atol=1e-6, rtol=0)
    assert Supernet.from_pretrained(sn.model).model is sn.model


def test_invalid_subnet_is_rejected_before_touching_the_model():
    sn = Supernet(_model())
    with pytest.raises(ValueError, match="heads"):
        with sn.use(Subnet(((5, 1), (1, 1), (1, 1)))):
            pass
    assert sn.active is None
    with pytest.raises(ValueError, match="layers"):
        sn.extract(Subnet(((1, 1),)))


def test_an_extracted_model_is_not_a_supernet():
    sn = Supernet(_model())
    with pytest.raises(NaspruneError, match="extracted sub-network"):
        Supernet(sn.extract(SUBNETS[1]))
    Supernet(sn.extract(sn.shape.full))  # the full structure is fine


@pytest.mark.slow
def test_minilm_on_real_sst2_inputs(minilm, shared_data):
    """MiniLM-L6 with real SST-2 sentences: reordering, use == extract, exact counts."""
    import csv

    import pandas as pd

    data = shared_data / "sst2"
    from nasprune.core.cost import CostModel

    torch.manual_seed(0)
    model = tf.AutoModelForSequenceClassification.from_pretrained(minilm, num_labels=2).eval()
    tok = tf.AutoTokenizer.from_pretrained(minilm)
    df = pd.read_csv(data / "validation.tsv", sep="\t", quoting=csv.QUOTE_NONE).head(16)
    enc = tok(df["sentence"].tolist(), padding=True, return_tensors="pt")
    batch = {**enc, "labels": torch.tensor(df["label"].to_numpy())}
    sn = Supernet(model)
    before = _logits(model, batch)
    order = sn.reorder_by_importance([batch], method="fisher")
    assert torch.allclose(before, _logits(model, batch), atol=1e-5, rtol=0)
    assert [sorted(h) for h in order["heads"]] == [list(range(12))] * 6
    subnet = Subnet(((6, 768), (12, 384), (3, 1536), (0, 512), (12, 0), (0, 0)))
    with sn.use(subnet):
        via_use = _logits(model, batch)
    small = sn.extract(subnet)
    assert torch.allclose(via_use, _logits(small, batch), atol=1e-4, rtol=0)
    assert CostModel(sn).params(subnet) == sum(p.numel() for p in small.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_use_and_extract_on_cuda():
    sn = Supernet(_model().cuda())
    batch = {k: v.cuda() for k, v in _batch().items()}
    sn.reorder_by_importance([batch])
    with sn.use(SUBNETS[1]):
        via_use = _logits(sn.model, batch)
    assert torch.allclose(via_use, _logits(sn.extract(SUBNETS[1]), batch), atol=1e-4, rtol=0)
