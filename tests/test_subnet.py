"""Subnet value type, search spaces and analytic costs (pure Python, no torch)."""

from __future__ import annotations

import json
import random

import pytest

from nasprune.core.spaces import make_space
from nasprune.core.subnet import (
    ModelShape,
    Subnet,
    SubnetError,
    encoder_flops,
    encoder_params,
)

MINILM = ModelShape(num_layers=6, num_heads=12, head_dim=32, hidden=384, ffn=1536)
SPACES = ["small", "layer", "layerwise", "uniform"]


def test_subnet_is_hashable_and_canonical():
    a = Subnet(((12, 1536), (3, 64)))
    b = Subnet([[12, 1536], [3, 64]])  # lists are normalised to tuples
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a.layers == ((12, 1536), (3, 64))
    with pytest.raises(AttributeError):
        a.layers = ()  # frozen


def test_json_round_trip():
    sub = Subnet(((12, 1536), (0, 0), (1, 64), (0, 128)))
    text = sub.to_json()
    assert json.loads(text) == {"layers": [[12, 1536], [0, 0], [1, 64], [0, 128]]}
    assert Subnet.from_json(text) == sub


@pytest.mark.parametrize("bad", ["", "[1, 2]", '{"layers": 3}', '{"nope": []}'])
def test_from_json_rejects_garbage(bad):
    with pytest.raises(SubnetError):
        Subnet.from_json(bad)


def test_validation_errors_are_specific():
    with pytest.raises(SubnetError, match="negative"):
        Subnet(((-1, 3),))
    with pytest.raises(SubnetError, match="13 heads"):
        Subnet(((13, 10),) * 6).validate(MINILM)
    with pytest.raises(SubnetError, match="FFN units"):
        Subnet(((12, 2000),) * 6).validate(MINILM)
    with pytest.raises(SubnetError, match="5 layers"):
        Subnet(((12, 10),) * 5).validate(MINILM)


def test_kept_layers():
    assert Subnet(((0, 0), (1, 0), (0, 5), (0, 0))).kept_layers == 2


@pytest.mark.parametrize("name", SPACES)
def test_sampling_stays_in_bounds_and_round_trips(name):
    space = make_space(name, MINILM)
    rng = random.Random(0)
    for _ in range(200):
        sub = space.sample(rng)
        sub.validate(MINILM)
        index = space.index(sub)
        assert all(0 <= i < len(dim) for i, dim in zip(index, space.dims))
        assert space.from_index(index) == sub
        enc = space.encode(sub)
        assert len(enc) == len(space.dims) and all(0.0 <= v <= 1.0 for v in enc)
    assert space.full() == MINILM.full
    space.smallest().validate(MINILM)


@pytest.mark.parametrize("name", SPACES)
def test_sampling_near_a_size_reaches_both_ends_of_the_range(name):
    space = make_space(name, MINILM)
    rng = random.Random(0)
    full = encoder_params(MINILM.full, MINILM)

    def size(fraction):
        subs = [space.sample_near(rng, fraction) for _ in range(50)]
        for sub in subs:
            space.index(sub)  # in the space
        return sum(encoder_params(s, MINILM) for s in subs) / len(subs) / full

    small, middle, large = size(0.1), size(0.5), size(0.9)
    assert small < middle < large
    if name == "layerwise":  # uniform samples of 12 dimensions stay near the middle
        uniform = [encoder_params(space.sample(rng), MINILM) / full for _ in range(200)]
        assert small < min(uniform) and large > max(uniform)


@pytest.mark.parametrize("name", SPACES)
def test_neighbours_differ_in_exactly_one_dimension(name):
    space = make_space(name, MINILM)
    rng = random.Random(1)
    for _ in range(30):
        sub = space.sample(rng)
        base = space.index(sub)
        neighbours = space.neighbours(sub)
        assert neighbours and len(set(neighbours)) == len(neighbours)
        for n in neighbours:
            diff = [a != b for a, b in zip(base, space.index(n))]
            assert sum(diff) == 1


def test_small_space_matches_the_tutorial():
    space = make_space("small", MINILM)
    assert space.dims[1] == (1, 3, 6, 12)
    assert make_space("small", MINILM, any_heads=True).dims[1] == tuple(range(1, 13))
    sub = space.to_subnet((2, 6, 512))
    assert sub.layers == ((6, 512), (6, 512)) + ((0, 0),) * 4
    with pytest.raises(SubnetError):
        space.from_subnet(Subnet(((6, 512), (3, 512)) + ((0, 0),) * 4))


def test_uniform_space_keeps_every_head_and_one_width():
    space = make_space("uniform", MINILM, unit_step=512)
    assert space.dim_names == ("layers", "units")
    assert space.dims == (tuple(range(1, 7)), (512, 1024, 1536))
    sub = space.to_subnet((4, 1024))
    assert sub.layers == ((12, 1024),) * 4 + ((0, 0),) * 2
    assert space.from_subnet(sub) == (4, 1024)
    assert space.smallest().layers == ((12, 512),) + ((0, 0),) * 5
    assert space.size() == 18
    for outside in (Subnet(((6, 1024),) * 4 + ((0, 0),) * 2),  # fewer heads
                    Subnet(((12, 1024), (12, 512)) + ((0, 0),) * 4),  # two widths
                    Subnet(((0, 0), (12, 1024)) + ((0, 0),) * 4),  # not the first layers
                    Subnet(((0, 0),) * 6)):
        with pytest.raises(SubnetError, match="not in the 'uniform' space"):
            space.from_subnet(outside)


def test_every_uniform_sub_network_has_a_stock_config_form():
    from nasprune.deploy.export.vanilla import VanillaPlan, plan

    space = make_space("uniform", MINILM)
    rng = random.Random(3)
    for _ in range(50):
        sub = space.sample(rng)
        assert isinstance(plan(sub, MINILM), VanillaPlan)
    layerwise = make_space("layerwise", MINILM)
    assert isinstance(plan(layerwise.sample(random.Random(0)), MINILM), str)


def test_unknown_space():
    with pytest.raises(SubnetError, match="choose one of"):
        make_space("nope", MINILM)


def test_costs_are_additive_and_monotone():
    full = MINILM.full
    layer = MINILM.block.params(12, 1536, MINILM.head_dim, MINILM.hidden)
    assert encoder_params(full, MINILM) == 6 * layer
    # MiniLM-L6's published encoder size: 6 x 1,774,464
    assert layer == 1_774_464
    assert encoder_params(Subnet(((0, 0),) * 6), MINILM) == 0
    half = Subnet(((6, 768),) * 6)
    assert encoder_flops(half, MINILM) < encoder_flops(full, MINILM)
    assert encoder_flops(half, MINILM, seq_len=64) < encoder_flops(half, MINILM)
