"""Adapter contract: every family on a tiny random config exposes the same parts."""

from __future__ import annotations

import pytest
import torch
import transformers as tf
from torch import nn

from nasprune.core.families import ADAPTERS
from nasprune.core.families.base import get_adapter
from nasprune.core.families.tiny import tiny_model
from nasprune.core.subnet import encoder_params
from nasprune.errors import NaspruneError

FAMILIES = list(ADAPTERS)  # every registered family


@pytest.fixture(scope="module", params=FAMILIES)
def model(request):
    torch.set_num_threads(2)
    return tiny_model(request.param, layers=3, heads=4, head_dim=8, ffn=48)


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_is_picked_by_the_model_type_it_is_registered_under(family):
    """The registry's key is the ``config.model_type`` that selects the adapter: a model of
    that family gets exactly that class (not a parent's), and no two keys share one."""
    built = tiny_model(family, layers=1, heads=2, head_dim=4, ffn=8)
    assert built.config.model_type == family
    assert type(get_adapter(built)) is ADAPTERS[family]
    assert len({ADAPTERS[f] for f in FAMILIES}) == len(FAMILIES)


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
