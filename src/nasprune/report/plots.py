"""The search's Pareto plot as a PNG (as in the tutorial): every sub-network, the front,
the unpruned model and the pick; one colour per run when comparing several.

Matplotlib runs headless (Agg) and is imported only here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nasprune.report.text import compact
from nasprune.search.pareto import front_of, full_reference
from nasprune.search.store import Trial

_LABELS = {
    "params": "total parameters",
    "encoder_params": "encoder parameters",
    "flops": "FLOPs per sequence",
    "latency": "latency (ms)",
    "error": "validation error",
    "metric": "validation metric",
}


def _is_full(trial: Any) -> bool:
    return getattr(trial, "is_full_fidelity", True)


def _metrics_of(item: Any) -> dict[str, float]:
    return dict(item.metrics if hasattr(item, "metrics") else item)


def axis_label(x: str, relative: bool) -> str:
    """``"encoder parameters (% of the unpruned encoder)"``, ``"FLOPs per sequence"``..."""
    if relative:
        whole = "encoder" if x == "encoder_params" else "model"
        return f"{_LABELS.get(x, x)} (% of the unpruned {whole})"
    return _LABELS.get(x, x)


def front_figure(
    trials: Sequence[Trial] | Mapping[str, Sequence[Trial]],
    *,
    x: str | None = None,
    y: str = "error",
    full: Trial | Mapping[str, float] | None = None,
    title: str | None = None,
    log_x: bool | None = None,
    split: str | None = None,
    relative: bool | None = None,
    pick: Trial | Mapping[str, float] | None = None,
    pick_label: str | None = None,
) -> Any:
    """The matplotlib figure ``plot_pareto`` saves (the options are described there)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    runs = dict(trials) if isinstance(trials, Mapping) else {"": list(trials)}
    runs = {k: [t for t in v if _is_full(t)] for k, v in runs.items()}
    if x is None:
        every = [t for run in runs.values() for t in run]
        x = "encoder_params" if all("encoder_params" in t.metrics for t in every) else "params"
    relative = x == "encoder_params" if relative is None else relative
    log_x = False if log_x is None else log_x
    given = _metrics_of(full) if full is not None else None
    first = next((run for run in runs.values() if run), [])
    reference = given if given is not None else (full_reference(first) if first else None)

    def scale(ref: Mapping[str, float] | None) -> float:
        if not relative:
            return 1.0
        whole = (ref or {}).get(x)
        if not whole:
            raise ValueError(f"cannot draw {x} relative to the unpruned model: "
                             f"its {x} is unknown or zero")
        return 100.0 / whole

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, run) in enumerate(runs.items()):
        if not run:
            continue
        colour = colours[i % len(colours)]
        ref = full_reference(run)
        k = scale(given if given is not None else ref)
        xs = [t.metrics[x] * k for t in run]
        ys = [t.metrics[y] for t in run]
        ax.scatter(xs, ys, s=14, alpha=0.45, color=colour,
                   label=f"{label} sub-networks" if label else "sub-networks")
        front = front_of(run, (y, x), ref)
        fx = [t.metrics[x] * k for t in front]
        fy = [t.metrics[y] for t in front]
        ax.step(fx, fy, where="post", color=colour, linewidth=1.6,
                label=f"{label} Pareto front" if label else "Pareto front")
        ax.scatter(fx, fy, s=26, color=colour, edgecolor="black", linewidth=0.5, zorder=3)
    k = scale(reference) if reference is not None and (reference.get(x) or not relative) else 1.0
    if reference is not None and x in reference and y in reference:
        ax.scatter([reference[x] * k], [reference[y]], marker="*", s=220, color="crimson",
                   edgecolor="black", zorder=4, label="un-pruned model")
    if pick is not None:
        chosen = _metrics_of(pick)
        if x in chosen and y in chosen:
            if pick_label is None:
                shape = f"\n{compact(pick.subnet)}" if hasattr(pick, "subnet") else ""
                pick_label = f"pick: trial {pick.id}{shape}" if hasattr(pick, "id") else "pick"
            px, py = chosen[x] * k, chosen[y]
            ax.scatter([px], [py], marker="D", s=90, facecolor="gold", edgecolor="black",
                       linewidth=1.2, zorder=5, label="pick")
            xs_all = [t.metrics[x] * k for run in runs.values() for t in run if x in t.metrics]
            right = bool(xs_all) and px > (min(xs_all) + max(xs_all)) / 2
            ax.annotate(pick_label, (px, py), xytext=(-10 if right else 10, 14),
                        textcoords="offset points", ha="right" if right else "left",
                        fontsize=8, bbox={"boxstyle": "round,pad=0.25", "fc": "white",
                                          "ec": "0.6", "alpha": 0.9},
                        arrowprops={"arrowstyle": "-", "color": "black", "linewidth": 0.6})
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(axis_label(x, relative) + (" (log scale)" if log_x else ""))
    ax.set_ylabel(_LABELS.get(y, y) if split is None else f"{y} on the {split} split")
    plain = FuncFormatter(lambda v, _pos: f"{v:.0f}%" if relative else _plain(v))
    ax.xaxis.set_major_formatter(plain)
    if log_x:
        ax.xaxis.set_minor_formatter(NullFormatter())
    if title:
        ax.set_title(title)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def plot_pareto(trials: Sequence[Trial] | Mapping[str, Sequence[Trial]], path: str | Path,
                **options: Any) -> Path:
    """Save :func:`front_figure` at ``path``: every evaluated sub-network (dots), the
    Pareto front (step line) and the un-pruned model (star); one colour per run when
    ``trials`` maps labels to runs (e.g. to compare the arms of a benchmark on one figure).
    Only full-fidelity trials are drawn.

    ``full`` is the un-pruned model (a trial or its metrics); by default the trial with
    the most ``x`` in the first run (each run's own for the percentages). ``x`` defaults
    to ``encoder_params`` when measured, else ``params``. ``relative``
    draws ``x`` as a percentage of the un-pruned model (default: for ``encoder_params``
    only); ticks are plain numbers (``40%``, ``12M``), never ``1.2x10^7``. ``log_x``
    (default off) puts ``x`` on a log scale. ``pick`` (a trial) is marked with a diamond
    and labelled ``pick_label`` (default: its trial id and shape).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = front_figure(trials, **options)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _plain(v: float) -> str:
    """Tick text without exponents: ``12M``, ``1.5G``, ``800``, ``2.5``."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= size:
            return f"{v / size:.3g}{unit}"
    return f"{v:.3g}"
