"""The ``nasprune`` command: one Typer app, one subcommand per stage plus ``run``.

Commands only parse options into the library's config objects and call one function;
user mistakes (``NaspruneError``) become one red line and exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from nasprune.errors import NaspruneError

app = typer.Typer(
    help="Prune fine-tuned transformer encoders with multi-objective architecture search.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
console = Console(stderr=True)


# ---- commands are added below, one block per stage ----


def main() -> None:
    try:
        app()
    except NaspruneError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: finished work is saved in the run directory")
        sys.exit(130)
