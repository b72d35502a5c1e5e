"""Dominance, Pareto fronts and hypervolume: plain values in, plain values out.

Every objective is **minimised**. Hypervolume is computed on *normalised* objectives so that
runs, searchers and reports are comparable:

- ``error`` (1 - task metric) is already in [0, 1] and is used as is;
- every other objective (``params``, ``encoder_params``, ``flops``, ``latency``) is divided by
  the **un-pruned model's** value, so the full model sits at 1.0;
- the reference point is :data:`REFERENCE` (1.1) in every normalised objective, slightly
  beyond the full model, so the full model itself still adds volume and anything up to
  error 1.0 counts.

The same functions serve the runner (progress), the CLI (``nasprune pareto``), the report
and the benchmarks, so the numbers agree everywhere. Choosing one trial by a budget rule
is :mod:`nasprune.search.pick`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from nasprune.errors import NaspruneError

#: Reference value of every normalised objective for the hypervolume.
REFERENCE = 1.1
#: Objectives already on a [0, 1] scale; all others are divided by the full model's value.
RAW_OBJECTIVES = frozenset({"error"})

Point = Sequence[float]


# --------------------------------------------------------------------------- dominance


def dominates(a: Point, b: Point) -> bool:
    """True when ``a`` is no worse than ``b`` in every objective and better in one."""
    if len(a) != len(b):
        raise ValueError(f"points of different length: {len(a)} vs {len(b)}")
    better = False
    for x, y in zip(a, b):
        if x > y:
            return False
        if x < y:
            better = True
    return better


def pareto_front(points: Sequence[Point]) -> list[int]:
    """Indices (ascending) of the non-dominated points; equal points are all kept."""
    order = sorted(range(len(points)), key=lambda i: tuple(points[i]))
    front: list[int] = []
    for i in order:
        # in lexicographic order nothing later can dominate an earlier point
        if not any(dominates(points[j], points[i]) for j in front):
            front.append(i)
    return sorted(front)


def non_dominated_sort(points: Sequence[Point]) -> list[list[int]]:
    """Successive fronts (NSGA-II's ranking): front 0 is the Pareto front, and so on."""
    remaining = list(range(len(points)))
    fronts = []
    while remaining:
        sub = [points[i] for i in remaining]
        idx = pareto_front(sub)
        front = [remaining[i] for i in idx]
        fronts.append(front)
        taken = set(front)
        remaining = [i for i in remaining if i not in taken]
    return fronts


def crowding_distance(points: Sequence[Point], indices: Sequence[int]) -> dict[int, float]:
    """NSGA-II's crowding distance of ``indices`` within their front (boundary = inf)."""
    dist = {i: 0.0 for i in indices}
    if len(indices) <= 2:
        return {i: math.inf for i in indices}
    for k in range(len(points[indices[0]])):
        ordered = sorted(indices, key=lambda i: points[i][k])
        lo, hi = points[ordered[0]][k], points[ordered[-1]][k]
        dist[ordered[0]] = dist[ordered[-1]] = math.inf
        if hi == lo:
            continue
        for a, i, b in zip(ordered, ordered[1:], ordered[2:]):
            dist[i] += (points[b][k] - points[a][k]) / (hi - lo)
    return dist


# --------------------------------------------------------------------------- hypervolume


def hypervolume(points: Sequence[Point], reference: Point) -> float:
    """Volume dominated by ``points`` and bounded by ``reference`` (all objectives minimised).

    Exact in any dimension: a sweep for 2 objectives, slicing along the last objective
    (recursing down to the 2-D sweep) for 3 or more; fine for the hundreds of points a
    search produces. Points not strictly better than the reference in every objective
    contribute nothing.
    """
    ref = tuple(float(r) for r in reference)
    pts = [tuple(float(x) for x in p) for p in points if all(x < r for x, r in zip(p, ref))]
    for p in pts:
        if len(p) != len(ref):
            raise ValueError(f"point {p} does not match reference {ref}")
    if not pts:
        return 0.0
    pts = [pts[i] for i in pareto_front(pts)]
    return _hv(pts, ref)


def _hv(pts: list[tuple[float, ...]], ref: tuple[float, ...]) -> float:
    if len(ref) == 1:
        return ref[0] - min(p[0] for p in pts)
    if len(ref) == 2:
        area, best_y = 0.0, ref[1]
        for x, y in sorted(pts):
            if y < best_y:
                area += (ref[0] - x) * (best_y - y)
                best_y = y
        return area
    ordered = sorted(pts, key=lambda p: p[-1])
    volume = 0.0
    for i, p in enumerate(ordered):
        top = ordered[i + 1][-1] if i + 1 < len(ordered) else ref[-1]
        if top > p[-1]:
            slab = [q[:-1] for q in ordered[: i + 1]]
            slab = [slab[j] for j in pareto_front(slab)]
            volume += (top - p[-1]) * _hv(slab, ref[:-1])
    return volume


def hypervolume_trace(points: Sequence[Point], reference: Point) -> list[float]:
    """Hypervolume after each prefix of ``points`` (the curve of a search over its trials)."""
    trace, front = [], []
    for p in points:
        if not any(dominates(q, p) or tuple(q) == tuple(p) for q in front):
            front = [q for q in front if not dominates(p, q)] + [tuple(p)]
        trace.append(hypervolume(front, reference) if front else 0.0)
    return trace


def reference_point(n_objectives: int) -> tuple[float, ...]:
    return (REFERENCE,) * n_objectives


# --------------------------------------------------------------------------- normalising


def normalise(
    metrics: Mapping[str, float], objectives: Sequence[str], full: Mapping[str, float]
) -> tuple[float, ...]:
    """One trial's objective vector: ``error`` as is, others divided by the full model's."""
    out = []
    for name in objectives:
        if name not in metrics:
            raise NaspruneError(
                f"objective {name!r} was not measured (have: {', '.join(sorted(metrics))})"
            )
        value = float(metrics[name])
        if name not in RAW_OBJECTIVES:
            scale = float(full.get(name, 0.0) or 0.0)
            if scale <= 0:
                raise NaspruneError(f"the full model has no positive {name!r} to normalise by")
            value /= scale
        out.append(value)
    return tuple(out)


def metrics_of(trial: Any) -> Mapping[str, float]:
    return trial if isinstance(trial, Mapping) else trial.metrics


def cost_name(objectives: Sequence[str]) -> str:
    """The first cost objective (what fronts are sorted by and picks break ties on)."""
    costs = [o for o in objectives if o not in RAW_OBJECTIVES]
    return costs[0] if costs else "params"


def full_reference(trials: Sequence[Any], full_subnet: Any = None) -> dict[str, float]:
    """The un-pruned model's metrics: the trial of ``full_subnet``, else the largest model."""
    if full_subnet is not None:
        for t in trials:
            if getattr(t, "subnet", None) == full_subnet:
                return dict(metrics_of(t))
    if not trials:
        return {}
    return dict(metrics_of(max(trials, key=lambda t: metrics_of(t).get("params", 0.0))))


def objective_points(
    trials: Sequence[Any], objectives: Sequence[str], full: Mapping[str, float]
) -> list[tuple[float, ...]]:
    return [normalise(metrics_of(t), objectives, full) for t in trials]


def front_of(trials: Sequence[Any], objectives: Sequence[str], full: Mapping[str, float]) -> list:
    """The Pareto-optimal trials, sorted by their first cost objective (small to large)."""
    points = objective_points(trials, objectives, full)
    members = [trials[i] for i in pareto_front(points)]
    key = cost_name(objectives)
    return sorted(members,
                  key=lambda t: (metrics_of(t).get(key, 0.0), metrics_of(t).get("error", 0)))


def trials_hypervolume(
    trials: Sequence[Any], objectives: Sequence[str], full: Mapping[str, float]
) -> float:
    return hypervolume(objective_points(trials, objectives, full), reference_point(len(objectives)))
