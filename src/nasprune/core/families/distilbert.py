"""DistilBERT: its own attribute names, and blocks that add the residual before the norm."""

from __future__ import annotations

from nasprune.core.families.base import Adapter
from nasprune.core.structure import LAYOUTS


class DistilBertAdapter(Adapter):
    family = "distilbert"
    layout = LAYOUTS["distilbert"]
