"""Per-family access to the parts of a transformer encoder that sub-networks slice.

Every supported family is a post-LayerNorm encoder whose layers have the same pieces
(q/k/v, attention output, FFN in/out, two LayerNorms) under different attribute names.
An adapter is that naming, plus how to remove a whole attention or FFN block, so that
``supernet`` (slicing views, extraction) never looks at family-specific code. Adding a
family is adding one small class to ``ADAPTERS``.
"""

from __future__ import annotations

import torch
from torch import nn

from nasprune.core.subnet import ModelShape
from nasprune.errors import NaspruneError

# ----------------------------------------------------------------- parameter-free stand-ins
# They replace removed blocks in both ``use()`` and extracted models, so a removed block
# costs nothing and an extracted model's state dict keeps the original parameter names.


class SkipLayer(nn.Module):
    """A removed layer (0 heads, 0 units): returns its input hidden states."""

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


class SkipAttention(nn.Module):
    """A removed attention block incl. its residual LayerNorm: ``(input, no weights)``."""

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states, None


class PassResidual(nn.Module):
    """Stands in for an FFN output block ``f(h, residual)`` and returns the residual."""

    def forward(self, hidden_states, input_tensor):
        return input_tensor


class ZeroBranch(nn.Module):
    """A removed residual branch (``x + branch(x)`` becomes ``x``) in pre-summed layouts.

    Returns a 0-d zero, which broadcasts in the residual sum at no matmul cost.
    ``pair=True`` mimics attention modules that return ``(output, weights)``.
    """

    def __init__(self, pair: bool = False):
        super().__init__()
        self.pair = pair

    def forward(self, hidden_states, *args, **kwargs):
        zero = hidden_states.new_zeros(())
        return (zero, None) if self.pair else zero


Edit = tuple[nn.Module, str, nn.Module]  # (parent, attribute, replacement)


# ----------------------------------------------------------------------------- adapters


class Adapter:
    """How to reach the encoder parts of one model family.

    Subclasses set ``model_types`` and the dotted paths (relative to one layer) of each
    part; the shape comes from the config. The model passed in may be a task model
    (``...ForSequenceClassification``) or a bare base model.
    """

    family = "abstract"
    model_types: tuple[str, ...] = ()
    layers_path = "encoder.layer"  # relative to the base model
    paths: dict[str, str] = {}  # role -> path inside a layer
    attention_path = ""  # module holding the head-count attributes

    def __init__(self, model: nn.Module):
        self.model = model
        self.config = model.config

    # -- model-level
    @property
    def base(self) -> nn.Module:
        return getattr(self.model, "base_model", self.model)

    @property
    def layers(self) -> nn.ModuleList:
        return self.base.get_submodule(self.layers_path)

    @property
    def shape(self) -> ModelShape:
        c = self.config
        heads = c.num_attention_heads
        return ModelShape(
            num_layers=c.num_hidden_layers,
            num_heads=heads,
            head_dim=int(c.hidden_size / heads),
            hidden=c.hidden_size,
            ffn=c.intermediate_size,
        )

    # -- per-layer parts
    def part(self, layer: int, role: str) -> nn.Module:
        return self.layers[layer].get_submodule(self.paths[role])

    def query(self, layer: int) -> nn.Linear:
        return self.part(layer, "query")

    def key(self, layer: int) -> nn.Linear:
        return self.part(layer, "key")

    def value(self, layer: int) -> nn.Linear:
        return self.part(layer, "value")

    def attn_out(self, layer: int) -> nn.Linear:
        return self.part(layer, "attn_out")

    def ffn_in(self, layer: int) -> nn.Linear:
        return self.part(layer, "ffn_in")

    def ffn_out(self, layer: int) -> nn.Linear:
        return self.part(layer, "ffn_out")

    def attn_norm(self, layer: int) -> nn.LayerNorm:
        return self.part(layer, "attn_norm")

    def ffn_norm(self, layer: int) -> nn.LayerNorm:
        return self.part(layer, "ffn_norm")

    def attention(self, layer: int) -> nn.Module:
        return self.layers[layer].get_submodule(self.attention_path)

    def slot(self, layer: int, role: str) -> tuple[nn.Module, str]:
        """``(parent, attribute)`` of a part, for swapping it."""
        return _parent(self.layers[layer], self.paths[role])

    # -- structural edits (list of swaps; the caller applies and undoes them)
    def skip_attention(self, layer: int) -> list[Edit]:
        raise NotImplementedError

    def skip_ffn(self, layer: int) -> list[Edit]:
        raise NotImplementedError

    def skip_layer(self, layer: int) -> list[Edit]:
        return [(self.layers, str(layer), SkipLayer())]

    def head_attrs(self, heads: int) -> dict[str, int]:
        """Attribute values of the attention module that describe ``heads`` heads."""
        d = self.shape.head_dim
        return {"num_attention_heads": heads, "all_head_size": heads * d}


def _parent(root: nn.Module, path: str) -> tuple[nn.Module, str]:
    head, _, name = path.rpartition(".")
    return (root.get_submodule(head) if head else root), name


_BERT_PATHS = {
    "query": "attention.self.query",
    "key": "attention.self.key",
    "value": "attention.self.value",
    "attn_out": "attention.output.dense",
    "attn_norm": "attention.output.LayerNorm",
    "ffn_in": "intermediate.dense",
    "ffn_out": "output.dense",
    "ffn_norm": "output.LayerNorm",
}


class BertAdapter(Adapter):
    """BERT and BERT-shaped checkpoints such as MiniLM."""

    family = "bert"
    model_types = ("bert",)
    paths = _BERT_PATHS
    attention_path = "attention.self"

    def skip_attention(self, layer: int) -> list[Edit]:
        return [(self.layers[layer], "attention", SkipAttention())]

    def skip_ffn(self, layer: int) -> list[Edit]:
        lay = self.layers[layer]
        return [(lay, "intermediate", nn.Identity()), (lay, "output", PassResidual())]


class RobertaAdapter(BertAdapter):
    family = "roberta"
    model_types = ("roberta",)


class XLMRobertaAdapter(RobertaAdapter):
    family = "xlm-roberta"
    model_types = ("xlm-roberta",)


class ElectraAdapter(BertAdapter):
    """ELECTRA discriminators; ``embeddings_project`` (if any) is a fixed, non-encoder part."""

    family = "electra"
    model_types = ("electra",)


class DistilBertAdapter(Adapter):
    family = "distilbert"
    model_types = ("distilbert",)
    layers_path = "transformer.layer"
    paths = {
        "query": "attention.q_lin",
        "key": "attention.k_lin",
        "value": "attention.v_lin",
        "attn_out": "attention.out_lin",
        "attn_norm": "sa_layer_norm",
        "ffn_in": "ffn.lin1",
        "ffn_out": "ffn.lin2",
        "ffn_norm": "output_layer_norm",
    }
    attention_path = "attention"

    @property
    def shape(self) -> ModelShape:
        c = self.config
        return ModelShape(
            num_layers=c.n_layers,
            num_heads=c.n_heads,
            head_dim=c.dim // c.n_heads,
            hidden=c.dim,
            ffn=c.hidden_dim,
        )

    # The block computes norm(branch(x) + x): a zero branch and an identity norm give x.
    def skip_attention(self, layer: int) -> list[Edit]:
        lay = self.layers[layer]
        return [(lay, "attention", ZeroBranch(pair=True)), (lay, "sa_layer_norm", nn.Identity())]

    def skip_ffn(self, layer: int) -> list[Edit]:
        lay = self.layers[layer]
        return [(lay, "ffn", ZeroBranch()), (lay, "output_layer_norm", nn.Identity())]

    def head_attrs(self, heads: int) -> dict[str, int]:
        return {"n_heads": heads, "dim": heads * self.shape.head_dim}


ADAPTERS: dict[str, type[Adapter]] = {
    t: cls
    for cls in (BertAdapter, RobertaAdapter, XLMRobertaAdapter, ElectraAdapter, DistilBertAdapter)
    for t in cls.model_types
}


def get_adapter(model: nn.Module) -> Adapter:
    """The adapter for ``model``'s family, or a clear error naming the supported ones."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    cls = ADAPTERS.get(model_type)
    if cls is None:
        raise NaspruneError(
            f"unsupported model type {model_type!r}; supported families: "
            + ", ".join(sorted(ADAPTERS))
        )
    adapter = cls(model)
    try:
        _ = adapter.layers
    except AttributeError as exc:
        raise NaspruneError(
            f"{type(model).__name__} has no {adapter.layers_path!r}; not a {cls.family} encoder"
        ) from exc
    return adapter


# ------------------------------------------------------------------- tiny random models


def tiny_model(family: str = "bert", *, layers: int = 2, heads: int = 4, head_dim: int = 8,
               ffn: int = 64, num_labels: int = 2, vocab: int = 100, seed: int = 0) -> nn.Module:
    """A small randomly initialised sequence classifier of one family (tests, examples)."""
    import transformers as tf

    hidden = heads * head_dim
    common = dict(vocab_size=vocab, num_labels=num_labels, max_position_embeddings=64)
    bert_like = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=ffn, **common)
    configs = {
        "bert": lambda: tf.BertConfig(**bert_like),
        "roberta": lambda: tf.RobertaConfig(**bert_like),
        "xlm-roberta": lambda: tf.XLMRobertaConfig(**bert_like),
        "electra": lambda: tf.ElectraConfig(embedding_size=max(8, hidden // 2), **bert_like),
        "distilbert": lambda: tf.DistilBertConfig(dim=hidden, n_layers=layers, n_heads=heads,
                                                  hidden_dim=ffn, **common),
    }
    if family not in configs:
        raise NaspruneError(f"unknown family {family!r}; choose one of {', '.join(configs)}")
    torch.manual_seed(seed)
    model = tf.AutoModelForSequenceClassification.from_config(configs[family]())
    return model.eval()
