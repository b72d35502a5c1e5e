"""Adapter contract: every family on a tiny random config exposes the same parts."""

from __future__ import annotations

import pytest
import torch
import transformers as tf
from torch import nn

from nasprune.core.families import FAMILIES
from nasprune.core.families.base import get_adapter
from nasprune.core.families.tiny import tiny_model
from nasprune.core.structure.blocks import Block
from nasprune.core.structure.layouts import LAYOUTS, BertLayout
from nasprune.core.subnet import Subnet, encoder_params
from nasprune.core.supernet import Supernet
from nasprune.errors import NaspruneError


@pytest.fixture(scope="module", params=FAMILIES)
def model(request):
    return tiny_model(request.param, layers=3, heads=4, head_dim=8, ffn=48)


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_is_picked_by_the_model_type_it_is_registered_under(family):
    """The key in ``LAYOUTS`` is the ``config.model_type`` that selects the layout: a model
    of that family gets exactly its layout, and no two keys share one."""
    built = tiny_model(family, layers=1, heads=2, head_dim=4, ffn=8)
    assert built.config.model_type == family
    assert get_adapter(built).layout is LAYOUTS[family]
    assert len({id(LAYOUTS[f]) for f in FAMILIES}) == len(FAMILIES)


def test_what_is_derived_from_the_layouts_agrees_with_them():
    """One registration per family: the families, the remote-code classes and the stock
    export all hold exactly the ``LAYOUTS`` keys."""
    from nasprune.deploy.export import modeling_nasprune

    assert FAMILIES == tuple(LAYOUTS)
    assert list(modeling_nasprune.CLASSES) == list(modeling_nasprune.CONFIGS) == list(LAYOUTS)
    for family, layout in LAYOUTS.items():
        assert modeling_nasprune.CLASSES[family].nasprune_layout is layout
        assert getattr(tf, layout.prefix + "Config")().model_type == family


def test_a_bert_shaped_family_is_one_layout_entry(monkeypatch):
    """CamemBERT is not registered; one ``LAYOUTS`` entry makes it a family that is
    adapted, costed, viewed and extracted like the others."""
    monkeypatch.setitem(LAYOUTS, "camembert", BertLayout("Camembert"))
    model = tiny_model("camembert", layers=2, heads=4, head_dim=8, ffn=32)
    supernet = Supernet(model)
    assert supernet.adapter.family == "camembert"
    in_layers = sum(p.numel() for layer in supernet.adapter.layers for p in layer.parameters())
    assert in_layers == encoder_params(supernet.shape.full, supernet.shape)
    subnet = Subnet(((2, 16), (0, 8)))
    ids = torch.randint(5, 100, (2, 7))
    with torch.no_grad(), supernet.use(subnet) as net:
        viewed = net(input_ids=ids).logits
    with torch.no_grad():
        torch.testing.assert_close(supernet.extract(subnet)(input_ids=ids).logits, viewed)


class _NoBiases(Block):
    def params(self, heads, units, head_dim, hidden):
        return 4 * hidden * heads * head_dim + 2 * hidden * units


def test_the_cost_formula_is_the_layouts(monkeypatch):
    """A family with another block shape states its own cost through its layout."""
    layout = BertLayout("Bert")
    layout.block = _NoBiases()
    monkeypatch.setitem(LAYOUTS, "bert", layout)
    shape = get_adapter(tiny_model("bert", layers=2, heads=4, head_dim=8, ffn=32)).shape
    assert shape.block is layout.block
    no_biases = 4 * 32 * 32 + 2 * 32 * 32 + 4 * 32 * 16  # (4 heads, 32 units), (2 heads, 0)
    assert encoder_params(Subnet(((4, 32), (2, 0))), shape) == no_biases


def test_a_model_is_bound_once(monkeypatch):
    """``get_adapter`` sits on hot paths: the layout binds a model on the first call only."""
    model = tiny_model("mpnet", layers=2, heads=4, head_dim=8, ffn=32)
    get_adapter(model)
    monkeypatch.setattr(type(LAYOUTS["mpnet"]), "bind", lambda *_: pytest.fail("bound again"))
    get_adapter(model)


class TestAdapterContract:
    def test_shape_from_config(self, model):
        shape = get_adapter(model).shape
        assert (shape.num_layers, shape.num_heads, shape.head_dim, shape.hidden, shape.ffn) == (
            3, 4, 8, 32, 48)

    def test_parts_have_the_expected_shapes(self, model):
        a = get_adapter(model)
        s = a.shape
        assert len(a.layers) == s.num_layers
        for i in range(s.num_layers):
            for lin in (a.query(i), a.key(i), a.value(i)):
                assert isinstance(lin, nn.Linear)
                assert lin.weight.shape == (s.num_heads * s.head_dim, s.hidden)
            assert a.attn_out(i).weight.shape == (s.hidden, s.num_heads * s.head_dim)
            assert a.ffn_in(i).weight.shape == (s.ffn, s.hidden)
            assert a.ffn_out(i).weight.shape == (s.hidden, s.ffn)
            assert isinstance(a.attn_norm(i), nn.LayerNorm)
            assert isinstance(a.ffn_norm(i), nn.LayerNorm)
            for attr in a.head_attrs(s.num_heads):
                assert getattr(a.attention(i), attr) == a.head_attrs(s.num_heads)[attr]
            # distinct modules per layer
            assert a.query(i) is not a.query((i + 1) % s.num_layers)

    def test_encoder_params_formula_is_exact(self, model):
        """subnet.layer_params must match every family's actual layer layout."""
        a = get_adapter(model)
        actual = sum(p.numel() for layer in a.layers for p in layer.parameters())
        assert actual == encoder_params(a.shape.full, a.shape)

    def test_adapter_on_bare_base_model(self, model):
        a = get_adapter(model.base_model)
        assert a.shape == get_adapter(model).shape
        assert a.query(0) is get_adapter(model).query(0)

    def test_skip_edits_target_existing_attributes(self, model):
        a = get_adapter(model)
        for parent, name, new in a.skip_attention(0) + a.skip_ffn(0) + a.skip_layer(0):
            assert isinstance(getattr(parent, name), nn.Module)
            assert sum(p.numel() for p in new.parameters()) == 0


def test_unsupported_family_names_the_supported_ones():
    gpt = tf.GPT2ForSequenceClassification(tf.GPT2Config(n_layer=1, n_embd=16, n_head=2,
                                                          vocab_size=50))
    with pytest.raises(NaspruneError, match="supported families: .*bert.*distilbert"):
        get_adapter(gpt)
    with pytest.raises(NaspruneError, match="unsupported"):
        get_adapter(nn.Linear(2, 2))


@pytest.mark.slow
def test_minilm_shape(minilm):
    """The offline MiniLM-L6 checkpoint is BERT-shaped: 6 x 12 heads x 32, FFN 1536."""
    config = tf.AutoConfig.from_pretrained(minilm)
    model = tf.AutoModelForSequenceClassification.from_config(config)
    shape = get_adapter(model).shape
    assert (shape.num_layers, shape.num_heads, shape.head_dim, shape.hidden, shape.ffn) == (
        6, 12, 32, 384, 1536)
