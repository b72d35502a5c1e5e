"""JSON files, read and written in one way everywhere: a reader never sees half a file, two
writers never share a temporary name, and a missing or broken file says which one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from nasprune.errors import NaspruneError


def cache_dir(*parts: str) -> Path:
    """nasprune's cache (``NASPRUNE_CACHE``, else ``~/.cache/nasprune``), or a folder in it."""
    root = Path(os.environ.get("NASPRUNE_CACHE") or Path.home() / ".cache" / "nasprune")
    return root.joinpath(*parts)


def _plain(value: Any) -> Any:
    """numpy / torch scalars as numbers, anything else JSON lacks (paths) as text."""
    item = getattr(value, "item", None)
    return item() if callable(item) else str(value)


def write_json(path: str | Path, value: Any) -> None:
    """``value`` as indented JSON at ``path``, atomically (a unique temporary, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as f:
            json.dump(value, f, indent=2, default=_plain)
            f.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: str | Path, what: str = "file") -> Any:
    """The JSON at ``path``; a missing or unreadable file is a user error naming ``what``."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise NaspruneError(f"{path.parent}: {what} {path.name} is missing") from exc
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise NaspruneError(f"{path}: unreadable {what} ({exc})") from exc


def read_json_or_none(path: str | Path) -> Any:
    """The JSON at ``path``, or None when it is missing or unreadable (optional files)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
