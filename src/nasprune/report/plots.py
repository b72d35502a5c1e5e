"""Figures and tables of a search: the Pareto plot (as in the tutorial) and the front's CSV.

Reads the same stored trials and uses the same Pareto functions as the CLI and the
benchmarks, so a number in a figure is the number in the table. Matplotlib runs headless
(Agg) and is imported only here.
"""

from __future__ import annotations

import csv
import json
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
    """The matplotlib figure ``plot_pareto`` saves (arguments as there)."""
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


def plot_pareto(
    trials: Sequence[Trial] | Mapping[str, Sequence[Trial]],
    path: str | Path,
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
) -> Path:
    """Every evaluated sub-network (dots), the Pareto front (step line) and the un-pruned
    model (star); one colour per run when ``trials`` maps labels to runs (e.g. to compare
    the arms of a benchmark on one figure). Only full-fidelity trials are drawn.

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

    fig = front_figure(trials, x=x, y=y, full=full, title=title, log_x=log_x, split=split,
                       relative=relative, pick=pick, pick_label=pick_label)
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
    #: the marked pick (the given one, else the run's ``--pick`` rule); None when unknown
    pick: Trial | None = None
    pick_rule: str | None = None


def run_config(run_dir: str | Path) -> dict[str, Any]:
    """``RUN/config.json`` as a plain dict (``{}`` when the run has none, e.g. a search
    made through the Python API)."""
    path = Path(run_dir) / "config.json"
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def model_name(model: str | None) -> str | None:
    """A model as a title shows it: an alias or hub id as given, a local folder by name."""
    if not model:
        return None
    text = str(model).rstrip("/\\")
    local = text.startswith((".", "/", "~")) or Path(text).is_dir()
    return Path(text).name if local else text


def run_title(run_dir: str | Path, config: Mapping[str, Any] | None = None) -> str:
    """``"sst2 · minilm-l6"`` from the run's configuration ('' when it has none)."""
    config = run_config(run_dir) if config is None else config
    task = (config.get("data") or {}).get("task")
    parts = [p for p in (task, model_name(config.get("model"))) if p]
    return " · ".join(parts)


def pareto_summary(
    run_dir: str | Path,
    objectives: Sequence[str] | None = None,
    out_dir: str | Path | None = None,
    *,
    pick: str | Trial | bool | None = None,
    x: str | None = None,
) -> ParetoSummary:
    """Front, hypervolume, ``pareto.png`` and ``pareto.csv`` of a run directory's search.

    ``objectives`` default to those the search ran with. Files go to ``out_dir`` (default
    ``RUN_DIR/search/``). The plot's x axis is ``x`` (default: encoder parameters as a
    percentage of the unpruned encoder, when measured); its title names the task and model
    of ``RUN/config.json``. ``pick`` (a rule such as ``"params<=0.5"`` or a trial) is marked
    and labelled; by default the run's own pick rule (``config.json``) when a trial meets
    it; ``False`` marks none.
    """
    from nasprune.search.pareto import pick as pick_trial

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
    config = run_config(run_dir)
    chosen, rule = None, None
    if isinstance(pick, Trial):
        chosen = pick
    elif isinstance(pick, str):
        rule, chosen = pick, pick_trial(full_trials, pick, objectives, full)
    elif pick is None and isinstance(config.get("pick"), str):
        rule = config["pick"]
        try:  # the run's own rule: marked when it can be met, never an error here
            chosen = pick_trial(full_trials, rule, objectives, full)
        except NaspruneError:
            chosen, rule = None, None
    if x is None:
        costs = [o for o in objectives if o != "error"]
        x = ("encoder_params" if all("encoder_params" in t.metrics for t in full_trials)
             else costs[0] if costs else "params")
    split = meta.get("split", "validation")  # searches before the search split used it
    heading = run_title(run_dir, config)
    title = f"{len(full_trials)} sub-networks evaluated"
    label = None
    if chosen is not None:
        label = f"pick {rule!r}: trial {chosen.id}\n{compact(chosen.subnet)}" if rule \
            else None
    png = plot_pareto(full_trials, out / "pareto.png", x=x, full=full,
                      title=f"{heading}: {title}" if heading else title,
                      log_x=False, split=split, pick=chosen, pick_label=label)
    csv_path = write_front_csv(front, out / "pareto.csv", full, split)
    return ParetoSummary(front, trials, objectives, full, hv, png, csv_path, meta, chosen, rule)


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
