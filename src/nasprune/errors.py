"""User-facing errors: the CLI prints these as one line and exits non-zero."""

from __future__ import annotations

import importlib
from types import ModuleType


class NaspruneError(Exception):
    """A mistake in the user's input or environment (not a bug): shown without traceback."""


def require(module: str, extra: str) -> ModuleType:
    """Import an optional dependency, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise NaspruneError(
            f"{module} is not installed: pip install 'nasprune[{extra}]'"
        ) from exc
