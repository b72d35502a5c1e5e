"""Model families: how each supported transformer encoder exposes the parts that sub-networks
slice (q/k/v, attention output, FFN in/out, LayerNorms), so that the super-network never
looks at family-specific code. ``ADAPTERS`` maps a ``config.model_type`` to its adapter;
adding a family is its ``Layout`` in ``core/structure.py`` (names and layer layout, shared
with exported remote code), an ``Adapter`` subclass naming it, and one line here.
"""

from nasprune.registry import Registry

ADAPTERS = Registry("model family", {
    "bert": "nasprune.core.families.bert:BertAdapter",
    "roberta": "nasprune.core.families.bert:RobertaAdapter",
    "xlm-roberta": "nasprune.core.families.bert:XLMRobertaAdapter",
    "electra": "nasprune.core.families.bert:ElectraAdapter",
    "distilbert": "nasprune.core.families.distilbert:DistilBertAdapter",
    "mpnet": "nasprune.core.families.bert:MPNetAdapter",
})
