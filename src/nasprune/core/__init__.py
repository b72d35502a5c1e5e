"""The sub-network core every stage builds on: what a sub-network is and costs (``subnet``,
``cost``), the spaces searched over (``spaces``), where each model family keeps the parts a
sub-network slices (``families``, ``structure``), and the super-network that computes any
of its sub-networks by prefix views or as a smaller dense copy after ordering heads and
units by importance (``supernet``, ``importance``, ``extract``). It imports no later stage.
"""

from nasprune.registry import Registry

#: Analytic costs of a sub-network (``cost.CostModel``), and all cost objectives of the
#: search (``latency`` is measured).
ANALYTIC_COSTS = ("params", "encoder_params", "flops")
COSTS = (*ANALYTIC_COSTS, "latency")
#: Search spaces (``nasprune.core.spaces``), by the name ``--space`` takes.
SPACES = Registry("search space", {
    "small": "nasprune.core.spaces:SmallSpace",
    "layer": "nasprune.core.spaces:LayerSpace",
    "layerwise": "nasprune.core.spaces:LayerwiseSpace",
    "uniform": "nasprune.core.spaces:UniformSpace",
}, about={
    "small": "the tutorial's layers/heads/units, the same in every layer",
    "layer": "drop whole layers",
    "layerwise": "heads and units per layer",
    "uniform": "the first L layers, all heads, one FFN width (exports without remote code)",
})
#: Scores that order heads and FFN units before slicing (``nasprune.core.importance``):
#: ``method(supernet, batches, max_batches) -> (head_scores, unit_scores, examples)``.
IMPORTANCE = Registry("importance method", {
    "fisher": "nasprune.core.importance:fisher",
    "taylor": "nasprune.core.importance:taylor",
    "magnitude": "nasprune.core.importance:magnitude",
}, about={
    "fisher": "squared gradients of the loss at head and unit masks",
    "taylor": "absolute gradients at the masks",
    "magnitude": "weight norms, no data",
})
