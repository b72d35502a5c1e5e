"""``nasprune pareto``, ``report`` and ``to-optuna``: a finished run for people and for
Optuna's tools."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from nasprune.cli.common import (
    InDir,
    OutDir,
    OutFile,
    app,
    check_objectives,
    check_pick,
    console,
)

# ---- pareto: the front of a search (nasprune.report.front) ----


@app.command(epilog="Example: nasprune pareto runs/sst2 --pick 'encoder_params<=0.3'")
def pareto(
    run_dir: Annotated[Path, typer.Argument(help="Run directory holding search/trials.db.", parser=InDir())],
    objectives: Annotated[str | None, typer.Option(help="Comma-separated, e.g. error,params or error,params,latency (default: the search's).", callback=check_objectives)] = None,
    out: Annotated[Path | None, typer.Option(help="Folder for pareto.png and pareto.csv (default RUN_DIR/search).", parser=OutDir())] = None,
    pick: Annotated[str | None, typer.Option(help="Highlight the pick: largest, smallest, 'params<=0.5', 'latency<=12ms', 'error<=0.1' or a trial id.", callback=check_pick)] = None,
) -> None:
    """Print the Pareto front of a search; write pareto.png and pareto.csv."""
    from rich.console import Console as StdoutConsole

    from nasprune.report.front import front_table, pareto_summary
    from nasprune.search.pick import pick as pick_trial

    names = tuple(o.strip() for o in objectives.split(",") if o.strip()) if objectives else None
    summary = pareto_summary(run_dir, names, out, **({"pick": pick} if pick else {}))
    chosen = None
    if pick:
        chosen = pick_trial([t for t in summary.trials if t.is_full_fidelity], pick,
                            summary.objectives, summary.full)
    StdoutConsole().print(front_table(summary, chosen))
    if chosen is not None:
        console.print(f"[green]pick[/] {pick!r} -> trial {chosen.id}: {chosen.subnet}")
    console.print(f"wrote {escape(str(summary.png))} and {escape(str(summary.csv))}")




# ---- report / to-optuna: a run for people and for Optuna's tools (report_html, optuna_export) ----


@app.command(epilog="Example: nasprune report runs/sst2 --out sst2-report.html")
def report(
    run_dir: Annotated[Path, typer.Argument(help="Run directory (the --run-dir of nasprune run).", parser=InDir())],
    out: Annotated[Path | None, typer.Option(help="HTML file to write (default RUN_DIR/report.html).", parser=OutFile())] = None,
) -> None:
    """Write one self-contained HTML report of a run: configuration, fine-tuning curve, interactive Pareto front, the pick's shape, the export's before/after table, load tests."""
    from nasprune.report.html import write_report

    path = write_report(run_dir, out)
    print(path)


@app.command("to-optuna", epilog="Example: nasprune to-optuna runs/sst2 sqlite:///sst2-optuna.db && optuna-dashboard sqlite:///sst2-optuna.db")
def to_optuna(
    run_dir: Annotated[Path, typer.Argument(help="Run directory holding search/trials.db.", parser=InDir())],
    storage: Annotated[str, typer.Argument(help="Optuna storage URL (sqlite:///study.db, postgresql://...) or a file path.")],
    study: Annotated[str | None, typer.Option(help="Study name (default nasprune-<run folder name>).")] = None,
    replace: Annotated[bool, typer.Option(help="Overwrite a study of that name.")] = False,
) -> None:
    """Copy a run's trials into an Optuna RDB storage as a multi-objective study, for optuna-dashboard."""
    from nasprune.search.optuna_export import export_to_optuna

    done = export_to_optuna(run_dir, storage, study, replace=replace)
    console.print(f"wrote {done.n_trials} trials ({done.n_complete} complete; minimise "
                  f"{', '.join(done.objectives)}) to study {escape(done.study_name)!r} in "
                  f"{escape(done.storage)}", highlight=False, emoji=False, soft_wrap=True)
    print(f"optuna-dashboard {done.storage}")
