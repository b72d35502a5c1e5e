"""Training strategies: what one optimisation step of the fine-tuning loop does.

``standard`` is one forward and backward of the whole model; the super-network strategies
(``sandwich``, ``sandwich-kd``, ``random-linear``, ``distill``) also train sub-networks of
the search space, so that every sub-network keeps its accuracy (``base``). A strategy is a
``base.Strategy`` subclass taking its options as keyword arguments; adding one is a new file
here plus one line in ``STRATEGIES`` (and its name in ``SAMPLES_SPACE`` / ``NEEDS_TEACHER``
when its class says so).
"""

from __future__ import annotations

from typing import Any

from nasprune.registry import Registry

STRATEGIES = Registry("strategy", {
    "standard": "nasprune.train.strategies.standard:StandardStrategy",
    "sandwich": "nasprune.train.strategies.sandwich:SandwichStrategy",
    "sandwich-kd": "nasprune.train.strategies.sandwich_kd:SandwichKDStrategy",
    "random-linear": "nasprune.train.strategies.random_linear:RandomLinearStrategy",
    "distill": "nasprune.train.strategies.distill:DistillStrategy",
}, about={
    "standard": "plain fine-tuning",
    "sandwich": "during fine-tuning, the full, the smallest and k random sub-networks on the "
                "labels",
    "sandwich-kd": "sandwich, the sub-networks learning the full network's soft predictions",
    "random-linear": "a random sub-network with a probability rising over training, else the "
                     "full one",
    "distill": "standard, then super-network distillation from the fine-tuned model as a "
               "fixed teacher (sampling around the pick's budget)",
})


#: What a run must know of a strategy before importing it (no torch: ``nasprune.config``
#: resolves the options with it). Each is a class attribute of the strategy too, and
#: tests/test_registries.py checks that both say the same.
#: ``samples_space``: trains sub-networks of a search space (the run gives it the search's).
SAMPLES_SPACE = frozenset({"sandwich", "sandwich-kd", "random-linear", "distill"})
#: ``needs_teacher``: runs after standard fine-tuning, with its model as a fixed teacher.
NEEDS_TEACHER = frozenset({"distill"})


def samples_space(name: str) -> bool:
    """Whether strategy ``name`` trains the sub-networks of a search space."""
    return STRATEGIES.check(name) in SAMPLES_SPACE


def needs_teacher(name: str) -> bool:
    """Whether strategy ``name`` runs after standard fine-tuning, with its model as a fixed
    teacher (``nasprune finetune`` refuses it; ``nasprune run`` fine-tunes the teacher
    first)."""
    return STRATEGIES.check(name) in NEEDS_TEACHER


def make_strategy(name: str, options: dict) -> Any:
    """The strategy ``name`` (a ``base.Strategy``) with its ``options``."""
    return STRATEGIES[name](**options)
