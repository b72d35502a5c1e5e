"""What ``nasprune pareto`` shows and writes: the front, its hypervolume, ``pareto.png``,
``pareto.csv`` and the terminal table.

Reads the same stored trials and uses the same Pareto functions as the CLI and the
benchmarks, so a number in a figure is the number in the table.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nasprune.errors import NaspruneError
from nasprune.report.plots import plot_pareto
from nasprune.report.run import run_config, run_title
from nasprune.report.text import compact, human
from nasprune.rundir import PARETO, PARETO_PLOT, RunDir
from nasprune.search.pareto import front_of, full_reference, trials_hypervolume
from nasprune.search.store import Trial, TrialStore

#: Columns of ``pareto.csv`` (besides id, sub-network and fidelity), when measured.
CSV_METRICS = ("error", "metric", "params", "encoder_params", "flops", "latency")


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
    from nasprune.search.pick import pick as pick_trial

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
    out = Path(out_dir) if out_dir is not None else RunDir(run_dir).pareto_dir
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
    png = plot_pareto(full_trials, out / PARETO_PLOT, x=x, full=full,
                      title=f"{heading}: {title}" if heading else title,
                      log_x=False, split=split, pick=chosen, pick_label=label)
    csv_path = write_front_csv(front, out / PARETO, full, split)
    return ParetoSummary(front, trials, objectives, full, hv, png, csv_path, meta, chosen, rule)


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
            shown = "" if v is None else (f"{v:.2f} ms" if m == "latency" else human(v))
            cells += [shown, f"{100 * v / ref:.0f}" if v is not None and ref else ""]
        style = "bold green" if picked is not None and t.id == picked.id else None
        table.add_row(*cells, style=style)
    return table
