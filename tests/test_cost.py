"""Cost model: exact parameter counts, analytic FLOPs checked by counting, cached latency."""

from __future__ import annotations

import pytest
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nasprune.core.cost import CostModel, count_params, dummy_inputs
from nasprune.core.families import FAMILIES
from nasprune.core.families.base import get_adapter
from nasprune.core.families.tiny import tiny_model
from nasprune.core.subnet import Subnet
from nasprune.core.supernet import Supernet
from nasprune.errors import NaspruneError

SUBNETS = [
    Subnet(((4, 48), (4, 48), (4, 48))),
    Subnet(((2, 20), (1, 48), (4, 7))),
    Subnet(((0, 48), (3, 0), (0, 0))),
    Subnet(((0, 0), (0, 0), (0, 0))),
]


def _supernet(family="bert", **kw):
    return Supernet(tiny_model(family, layers=3, heads=4, head_dim=8, ffn=48, **kw))


@pytest.mark.parametrize("family", FAMILIES)
def test_params_equal_the_extracted_models_count(family):
    sn = _supernet(family)
    cost = CostModel(sn)
    assert cost.params(sn.shape.full) == count_params(sn.model)
    for subnet in SUBNETS:
        small = sn.extract(subnet)
        assert cost.params(subnet) == count_params(small) == sum(
            p.numel() for p in small.parameters())
        in_layers = sum(p.numel() for p in get_adapter(small).layers.parameters())
        assert cost.encoder_params(subnet) == in_layers
    # the fixed part (embeddings, pooler/classifier head) survives even with no layers left
    assert cost.params(SUBNETS[-1]) == cost.fixed_params > 0


@pytest.mark.parametrize("family", ["bert", "distilbert", "electra"])
def test_analytic_flops_match_counted_matmuls(family):
    """Encoder FLOPs = what torch's FLOP counter sees in the extracted encoder (eager attention)."""
    sn = _supernet(family)
    cost = CostModel(sn, seq_len=16)
    for subnet in SUBNETS:
        small = sn.extract(subnet)
        small.config._attn_implementation = "eager"  # matmuls the counter can see
        with FlopCounterMode(display=False) as counter:
            small(**dummy_inputs(small, 1, 16))
        counts = counter.get_flop_counts()
        prefix = f"{type(small).__name__}.{small.base_model_prefix}."
        encoder = prefix + ("transformer" if family == "distilbert" else "encoder")
        assert sum(counts.get(encoder, {}).values()) == cost.flops(subnet)


def test_fractions():
    sn = _supernet()
    cost = CostModel(sn)
    full = sn.shape.full
    assert cost.fraction(full, "params") == cost.fraction(full, "flops") == 1.0
    half = Subnet(((2, 24),) * 3)
    assert 0 < cost.fraction(half, "encoder_params") < 1
    # the fixed part keeps the total fraction above the encoder-only one
    assert cost.fraction(half, "params") > cost.fraction(half, "encoder_params")
    assert cost.fraction(SUBNETS[-1], "flops") == 0.0
    with pytest.raises(NaspruneError, match="metric"):
        cost.fraction(full, "joules")


def test_latency_is_measured_once_per_subnet_and_batch_size(monkeypatch):
    sn = _supernet()
    cost = CostModel(sn, seq_len=16, repeats=3, warmup=1)
    calls = []
    real_extract = sn.extract
    monkeypatch.setattr(sn, "extract", lambda s: calls.append(s) or real_extract(s))
    sub = SUBNETS[1]
    first = cost.latency_ms(sub, batch_size=1)
    assert first > 0 and cost.latency_ms(sub, batch_size=1) == first
    assert cost.latency_ms(sub, batch_size=32) > 0
    assert calls == [sub, sub]
    assert sn.active is None


def test_counting_is_checked_against_the_module_tree():
    sn = _supernet()
    get_adapter(sn.model).layers[0].extra = nn.Linear(2, 2)  # a layout the formula misses
    with pytest.raises(NaspruneError, match="not supported"):
        CostModel(sn)


def test_invalid_subnet():
    cost = CostModel(_supernet())
    with pytest.raises(ValueError):
        cost.params(Subnet(((9, 1),) * 3))
