"""Pick one trial of a finished search by a budget rule (``params<=0.5``, ``latency<=12ms``,
``largest``, a trial id): the rule ``nasprune run --pick``, ``nasprune export`` and the report
share, always answered from the Pareto front of error and the constrained quantity."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from nasprune.config.pickrule import parse_rule
from nasprune.errors import NaspruneError
from nasprune.search.pareto import cost_name, front_of, full_reference, metrics_of


def _holds(value: float, op: str, threshold: float) -> bool:
    eps = 1e-12 * max(1.0, abs(threshold))
    return {
        "<=": value <= threshold + eps,
        "<": value < threshold,
        ">=": value >= threshold - eps,
        ">": value > threshold,
    }[op]


def pick(
    trials: Sequence[Any],
    rule: str,
    objectives: Sequence[str] = ("error", "params"),
    full: Mapping[str, float] | None = None,
) -> Any:
    """Choose one evaluated trial by a budget rule.

    - ``largest`` / ``smallest``: the Pareto member with the most / fewest of the first
      cost objective (``params`` by default);
    - a trial id (``"17"`` or ``"#17"``): that trial;
    - ``NAME<=VALUE`` (also ``<``, ``>=``, ``>``): among trials meeting the constraint, the
      lowest error (ties: the cheaper); when the constraint is on ``error`` or ``metric``,
      the cheapest in the first cost objective (ties: lower error). The result is always
      on the Pareto front of error and the constrained quantity.

    Pass only trials evaluated at full fidelity. Raises ``NaspruneError`` when the rule is
    malformed or no trial fits.
    """
    if not trials:
        raise NaspruneError("no evaluated sub-networks to pick from: run the search first")
    full = dict(full) if full is not None else full_reference(trials)
    text = rule.strip()
    cost = cost_name(objectives)

    if text.lstrip("#").isdigit():
        tid = int(text.lstrip("#"))
        for t in trials:
            if getattr(t, "id", None) == tid:
                return t
        raise NaspruneError(f"no trial with id {tid} among {len(trials)} evaluated")

    if text.lower() in ("largest", "smallest"):
        members = front_of(trials, objectives, full)
        return members[-1] if text.lower() == "largest" else members[0]

    name, op, threshold = parse_rule(text, full)
    feasible = [
        t for t in trials if name in metrics_of(t) and _holds(metrics_of(t)[name], op, threshold)
    ]
    if not feasible:
        values = [metrics_of(t)[name] for t in trials if name in metrics_of(t)]
        if not values:
            raise NaspruneError(f"{name!r} was not measured in this run; cannot apply {rule!r}")
        best = max(values) if op in (">=", ">") else min(values)
        raise NaspruneError(
            f"no evaluated sub-network satisfies {rule!r} (threshold {threshold:.6g}; "
            f"best available {name} = {best:.6g})"
        )
    first, second = (cost, "error") if name in ("error", "metric") else ("error", cost)
    return min(feasible,
               key=lambda t: (metrics_of(t).get(first, 0.0), metrics_of(t).get(second, 0.0)))
