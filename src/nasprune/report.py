"""Figures and tables of a search: the Pareto plot (as in the tutorial) and the front's CSV.

Reads the same stored trials and uses the same Pareto functions as the CLI and the
benchmarks, so a number in a figure is the number in the table. Matplotlib runs headless
(Agg) and is imported only here.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nasprune.errors import NaspruneError
from nasprune.search.pareto import front_of, full_reference, trials_hypervolume
from nasprune.search.store import SEARCH_DIR, Trial, TrialStore

#: Columns of ``pareto.csv`` (besides id, sub-network and fidelity), when measured.
CSV_METRICS = ("error", "metric", "params", "encoder_params", "flops", "latency")

_LABELS = {
    "params": "parameters",
    "encoder_params": "encoder parameters",
    "flops": "FLOPs per sequence",
    "latency": "latency (ms)",
    "error": "validation error",
    "metric": "validation metric",
}


def plot_pareto(
    trials: Sequence[Trial] | Mapping[str, Sequence[Trial]],
    path: str | Path,
    *,
    x: str = "params",
    y: str = "error",
    full: Trial | Mapping[str, float] | None = None,
    title: str | None = None,
    log_x: bool = True,
    split: str | None = None,
) -> Path:
    """Every evaluated sub-network (dots), the Pareto front (step line) and the un-pruned
    model (star); one colour per run when ``trials`` maps labels to runs (e.g. to compare
    the arms of a benchmark on one figure). Only full-fidelity trials are drawn.

    ``full`` is the un-pruned model (a trial or its metrics); by default the trial with
    the most ``x`` in the first run.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = dict(trials) if isinstance(trials, Mapping) else {"": list(trials)}
    runs = {k: [t for t in v if getattr(t, "is_full_fidelity", True)] for k, v in runs.items()}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    reference = None
    for i, (label, run) in enumerate(runs.items()):
        if not run:
            continue
        colour = colours[i % len(colours)]
        ref = full_reference(run)
        xs = [t.metrics[x] for t in run]
        ys = [t.metrics[y] for t in run]
        ax.scatter(xs, ys, s=14, alpha=0.45, color=colour,
                   label=f"{label} sub-networks" if label else "sub-networks")
        front = front_of(run, (y, x), ref)
        fx = [t.metrics[x] for t in front]
        fy = [t.metrics[y] for t in front]
        ax.step(fx, fy, where="post", color=colour, linewidth=1.6,
                label=f"{label} Pareto front" if label else "Pareto front")
        ax.scatter(fx, fy, s=26, color=colour, edgecolor="black", linewidth=0.5, zorder=3)
        if reference is None:
            reference = ref
    if full is not None:
        reference = dict(full.metrics if hasattr(full, "metrics") else full)
    if reference is not None and x in reference and y in reference:
        ax.scatter([reference[x]], [reference[y]], marker="*", s=220, color="crimson",
                   edgecolor="black", zorder=4, label="un-pruned model")
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(_LABELS.get(x, x) + (" (log scale)" if log_x else ""))
    ax.set_ylabel(_LABELS.get(y, y) if split is None else f"{y} on the {split} split")
    if title:
        ax.set_title(title)
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def write_front_csv(front: Sequence[Trial], path: str | Path, full: Mapping[str, float],
                    split: str = "validation") -> Path:
    """One row per Pareto member: id, sub-network, measured metrics, fractions of the full
    model for the cost metrics, fidelity, and the data split ``error``/``metric`` are on."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    present = [m for m in CSV_METRICS if any(m in t.metrics for t in front)]
    fractions = [m for m in present if m not in ("error", "metric") and full.get(m)]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "subnet", *present, *(f"{m}_fraction" for m in fractions),
                    "fidelity", "promoted", "wall_s", "split"])
        for t in front:
            w.writerow([
                t.id, str(t.subnet), *(t.metrics.get(m, "") for m in present),
                *(round(t.metrics[m] / full[m], 6) if m in t.metrics else "" for m in fractions),
                t.fidelity, "" if t.promoted is None else int(t.promoted), round(t.wall_s, 4),
                split,
            ])
    return path


@dataclass
class ParetoSummary:
    """What ``nasprune pareto`` shows and writes."""

    front: list[Trial]
    trials: list[Trial]
    objectives: tuple[str, ...]
    full: dict[str, float]
    hypervolume: float
    png: Path
    csv: Path
    meta: dict[str, Any]


def pareto_summary(
    run_dir: str | Path,
    objectives: Sequence[str] | None = None,
    out_dir: str | Path | None = None,
) -> ParetoSummary:
    """Front, hypervolume, ``pareto.png`` and ``pareto.csv`` of a run directory's search.

    ``objectives`` default to those the search ran with. Files go to ``out_dir`` (default
    ``RUN_DIR/search/``).
    """
    with TrialStore.open_existing(run_dir) as store:
        trials = store.trials()
        meta = store.meta()
        full_subnet = store.full_subnet()
    objectives = tuple(objectives or meta.get("objectives") or ("error", "params"))
    full_trials = [t for t in trials if t.is_full_fidelity]
    if not full_trials:
        raise NaspruneError(f"the search in {run_dir} has no finished trials yet")
    full = full_reference(full_trials, full_subnet)
    front = front_of(full_trials, objectives, full)
    hv = trials_hypervolume(full_trials, objectives, full)
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / SEARCH_DIR
    costs = [o for o in objectives if o != "error"]
    x = costs[0] if costs else "params"
    split = meta.get("split", "validation")  # searches before the search split used it
    png = plot_pareto(full_trials, out / "pareto.png", x=x, full=full,
                      title=f"{len(full_trials)} sub-networks evaluated",
                      log_x=x != "latency", split=split)
    csv_path = write_front_csv(front, out / "pareto.csv", full, split)
    return ParetoSummary(front, trials, objectives, full, hv, png, csv_path, meta)


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def compact(subnet: Any) -> str:
    """``12/1536x3 0/0x3``: runs of identical layers, so the table fits a terminal."""
    parts, layers = [], list(subnet.layers)
    i = 0
    while i < len(layers):
        j = i
        while j + 1 < len(layers) and layers[j + 1] == layers[i]:
            j += 1
        h, u = layers[i]
        parts.append(f"{h}/{u}" + (f"x{j - i + 1}" if j > i else ""))
        i = j + 1
    return " ".join(parts)


def front_table(summary: ParetoSummary, picked: Trial | None = None) -> Any:
    """A rich table of the front: measured metrics and costs as fractions of the full model."""
    from rich.table import Table

    front = summary.front
    table = Table(title=f"Pareto front: {len(front)} of {len(summary.trials)} sub-networks, "
                        f"hypervolume {summary.hypervolume:.4f} "
                        f"({', '.join(summary.objectives)})")
    table.add_column("id", justify="right")
    table.add_column("heads/units per layer", no_wrap=True)
    table.add_column("error", justify="right")
    has = {m for t in front for m in t.metrics}
    if "metric" in has:
        table.add_column("metric", justify="right")
    costs = [m for m in ("params", "flops", "latency") if m in has]
    for m in costs:
        table.add_column(m, justify="right")
        table.add_column("%", justify="right")
    for t in front:
        cells = [str(t.id), compact(t.subnet), f"{t.metrics.get('error', float('nan')):.4f}"]
        if "metric" in has:
            cells.append(f"{t.metrics.get('metric', float('nan')):.4f}")
        for m in costs:
            v = t.metrics.get(m)  # shown with its percentage of the un-pruned model
            ref = summary.full.get(m)
            shown = "" if v is None else (f"{v:.2f} ms" if m == "latency" else _human(v))
            cells += [shown, f"{100 * v / ref:.0f}" if v is not None and ref else ""]
        style = "bold green" if picked is not None and t.id == picked.id else None
        table.add_row(*cells, style=style)
    return table
