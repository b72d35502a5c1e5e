"""nasprune: smaller, faster transformer encoders by multi-objective structural pruning."""

from nasprune.errors import NaspruneError
from nasprune.subnet import ModelShape, SearchSpace, Subnet, make_space

__version__ = "0.1.0"
__all__ = ["NaspruneError", "ModelShape", "SearchSpace", "Subnet", "make_space"]
