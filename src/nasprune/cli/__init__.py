"""The ``nasprune`` command: one Typer app (``app``), one module per group of commands.

Commands only parse options into the library's config objects (``nasprune.config``) and
call one library function. User mistakes (``NaspruneError``, or a bad option) become one
red line and exit code 2.
"""

from __future__ import annotations

import sys

import typer

# isort: off
# Each module adds its commands to the app; --help lists them in this order.
from nasprune.cli import train, run, deploy, results  # noqa: F401
# isort: on
from nasprune.cli.common import app, console, fail
from nasprune.errors import NaspruneError


def main() -> None:
    """The console entry point: one line and exit code 2 for any user mistake."""
    try:
        result = app(standalone_mode=False)
    except NaspruneError as exc:
        fail(str(exc))
    except typer.Exit as exc:
        sys.exit(getattr(exc, "exit_code", 0))
    except typer.Abort:
        fail("aborted", 130)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: finished work is saved in the run directory")
        sys.exit(130)
    except typer.TyperException as exc:  # a bad option or argument (the parser's error)
        if not hasattr(exc, "format_message"):
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":  # the help is already printed
            sys.exit(0)
        command = getattr(getattr(exc, "ctx", None), "command_path", "nasprune")
        fail(f"{exc.format_message()} (see: {command} --help)", getattr(exc, "exit_code", 2))
    sys.exit(result if isinstance(result, int) else 0)
