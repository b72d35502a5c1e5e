"""nasprune: smaller, faster transformer encoders by multi-objective structural pruning."""

from nasprune.errors import NaspruneError
from nasprune.subnet import ModelShape, SearchSpace, Subnet, make_space

__version__ = "0.1.0"
__all__ = ["NaspruneError", "ModelShape", "SearchSpace", "Subnet", "make_space"]


def __getattr__(name: str):  # lazy: torch is imported only when export/load are used
    if name in ("export", "load"):
        import nasprune.export as module  # callable: nasprune.export(...) = export_model

        return module if name == "export" else module.load
    raise AttributeError(f"module 'nasprune' has no attribute {name!r}")
