"""Pruned encoders exported by nasprune, loadable with ``trust_remote_code=True``.

A nasprune export keeps, per encoder layer, a different number of attention heads and FFN
units (``config.nasprune_subnet``: ``[[heads, units], ...]``), which the stock configs
cannot express. The classes here are the stock ``...ForSequenceClassification`` classes
that, after building the full structure from the config, replace every pruned linear
layer by a smaller one and every removed block by a parameter-free stand-in
(``nasprune.core.structure``, the shrinking nasprune's own extraction uses). The
parameter names are the stock ones, so the checkpoint is an ordinary safetensors file.

This file and the modules of ``nasprune.core.structure`` are copied into each export
directory and must import only ``torch`` and ``transformers`` (users load them without
nasprune installed; transformers copies the relatively imported modules along and skips
imports inside ``try`` when it checks the requirements). ``nasprune.load`` uses the same
classes from the installed package and never runs code from the directory.

The configs of such exports carry their own ``model_type`` (``nasprune_bert``, ...), which
stock transformers does not know: ``AutoModelForSequenceClassification.from_pretrained``
without ``trust_remote_code=True`` refuses the directory (asking for
``trust_remote_code=True``) instead of building the full stock structure and silently
filling pruned or dropped layers with random weights. Sub-networks that a stock config
can describe are exported without this file (see ``nasprune.deploy.export.vanilla``).
"""

from __future__ import annotations

import transformers
from torch import nn

try:  # in an export directory: the copies of nasprune.core.structure shipped next to this file
    from .layouts import LAYOUTS, SUBNET_KEY, Layout
    from .shrink import shrink
except ImportError:  # the installed package (nasprune.load, the export writer)
    from nasprune.core.structure.layouts import LAYOUTS, SUBNET_KEY, Layout
    from nasprune.core.structure.shrink import shrink


def apply_subnet(model: nn.Module, layout: Layout, subnet=None) -> nn.Module:
    """Give ``model`` (full structure) the module shapes of its sub-network, in place."""
    config = model.config
    subnet = subnet if subnet is not None else getattr(config, SUBNET_KEY, None)
    if subnet is None:
        layout.bind(model)
        return model
    layers = layout.layers(model)
    if len(subnet) != len(layers):
        raise ValueError(f"{SUBNET_KEY} has {len(subnet)} layers, the model {len(layers)}")
    _, num_heads, _, _, ffn = layout.dims(config)
    counts = [(int(h), int(u)) for h, u in subnet]
    for i, (h, u) in enumerate(counts):
        if not (0 <= h <= num_heads and 0 <= u <= ffn):
            raise ValueError(f"layer {i}: {h} heads / {u} units do not fit the config")
    return shrink(model, layout, counts)


class _Pruned:
    """Mixin: build the stock model, then shrink it to ``config.nasprune_subnet``."""

    nasprune_layout: Layout  # where the layers keep their parts

    def __init__(self, config, *args, **kwargs):
        super().__init__(config, *args, **kwargs)
        apply_subnet(self, self.nasprune_layout)


#: The ``model_type`` of a pruned export of each stock family.
PREFIX = "nasprune_"


def _pruned_classes(model_type: str, layout: Layout):
    """The config, sequence-classifier and encoder (no head) classes of a family's pruned
    exports, named ``Nasprune<Prefix>Config``, ``Nasprune<Prefix>ForSequenceClassification``
    and ``Nasprune<Prefix>Model`` (the names exported ``auto_map`` entries point to),
    subclassing the stock ones."""
    def make(name: str, bases: tuple, attrs: dict):
        return type(f"Nasprune{layout.prefix}{name}", bases, {**attrs, "__module__": __name__})

    config_cls = make("Config", (getattr(transformers, layout.prefix + "Config"),),
                      {"model_type": PREFIX + model_type})
    models = [make(name, (_Pruned, getattr(transformers, layout.prefix + name)),
                   {"config_class": config_cls, "nasprune_layout": layout})
              for name in ("ForSequenceClassification", "Model")]
    return config_cls, *models


#: Stock ``model_type`` -> the pruned model class (one per layout in ``structure.LAYOUTS``),
#: and the pruned encoder without its head (``auto_map`` ``AutoModel``).
CLASSES, ENCODERS = {}, {}
for _type, _layout in LAYOUTS.items():
    _config_cls, CLASSES[_type], ENCODERS[_type] = _pruned_classes(_type, _layout)
    for _cls in (_config_cls, CLASSES[_type], ENCODERS[_type]):
        globals()[_cls.__name__] = _cls  # exported auto_map entries name them
#: Stock ``model_type`` -> the config class of its pruned exports.
CONFIGS = {family: cls.config_class for family, cls in CLASSES.items()}
