"""Per-family access to the parts of a transformer encoder that sub-networks slice.

Every supported family is a post-LayerNorm encoder whose layers have the same pieces
(q/k/v, attention output, FFN in/out, two LayerNorms) under different attribute names.
An adapter is one class: a model plus its family's ``Layout`` (``LAYOUTS``, shared with
the exported remote code), so that ``supernet`` (slicing views, extraction) never looks
at family-specific code.
"""

from __future__ import annotations

from torch import nn

from nasprune.core.structure.layouts import LAYOUTS, Layout
from nasprune.core.structure.stand_ins import Edit
from nasprune.core.subnet import ModelShape
from nasprune.errors import NaspruneError


class Adapter:
    """How to reach the encoder parts of one model of ``family`` (a ``LAYOUTS`` key).

    The shape comes from the config. The model may be a task model
    (``...ForSequenceClassification``) or a bare base model.
    """

    def __init__(self, model: nn.Module, family: str):
        self.model = model
        self.config = model.config
        self.family = family
        self.layout: Layout = LAYOUTS[family]

    # -- model-level
    @property
    def base(self) -> nn.Module:
        return getattr(self.model, "base_model", self.model)

    @property
    def layers(self) -> nn.ModuleList:
        return self.layout.layers(self.model)

    @property
    def shape(self) -> ModelShape:
        layers, heads, head_dim, hidden, ffn = self.layout.dims(self.config)
        return ModelShape(num_layers=layers, num_heads=heads, head_dim=head_dim, hidden=hidden,
                          ffn=ffn, block=self.layout.block)

    # -- per-layer parts
    def part(self, layer: int, role: str) -> nn.Module:
        return self.layers[layer].get_submodule(self.layout.paths[role])

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
        return self.layers[layer].get_submodule(self.layout.attention_path)

    # -- structural edits (list of swaps; the caller applies and undoes them)
    def skip_attention(self, layer: int) -> list[Edit]:
        return self.layout.skip_attention(self.layers[layer])

    def skip_ffn(self, layer: int) -> list[Edit]:
        return self.layout.skip_ffn(self.layers[layer])

    def skip_layer(self, layer: int) -> list[Edit]:
        return self.layout.skip_layer(self.layers, layer)

    def head_attrs(self, heads: int) -> dict[str, int]:
        """Attribute values of the attention module that describe ``heads`` heads."""
        return self.layout.head_attrs(heads, self.shape.head_dim)


#: Attribute of a model whose layout is bound (``Layout.bind``): binding happens once per
#: model, not on every ``get_adapter`` (a hot path); a deep copy keeps the hooks it copies.
BOUND = "_nasprune_bound"


def get_adapter(model: nn.Module) -> Adapter:
    """The adapter for ``model``'s family, or a clear error naming the supported ones."""
    family = getattr(getattr(model, "config", None), "model_type", None)
    if family not in LAYOUTS:
        raise NaspruneError(f"unsupported model type {family!r}; supported families: "
                            + ", ".join(sorted(LAYOUTS)))
    adapter = Adapter(model, family)
    try:
        _ = adapter.layers
    except AttributeError as exc:
        raise NaspruneError(f"{type(model).__name__} has no {adapter.layout.layers_path!r}; "
                            f"not a {family} encoder") from exc
    if not getattr(model, BOUND, False):
        adapter.layout.bind(model)
        object.__setattr__(model, BOUND, True)
    return adapter
