"""Model families: how each supported transformer encoder exposes the parts that sub-networks
slice (q/k/v, attention output, FFN in/out, LayerNorms), so that the super-network never
looks at family-specific code.

A family is registered once, by its ``Layout`` in ``LAYOUTS``
(``core/structure/layouts.py``, keyed by ``config.model_type``, shipped with exported
remote code); ``FAMILIES`` and the adapters (``base.get_adapter``) are derived from it.
"""

from nasprune.core.structure.layouts import LAYOUTS

#: The supported ``config.model_type`` values, in ``LAYOUTS``' order.
FAMILIES: tuple[str, ...] = tuple(LAYOUTS)
