"""One registry type for every extension point (searchers, strategies, spaces, importance
methods, model families, export backends, executors, recovery methods).

A registry maps a name to ``"module:attribute"``, and imports the module only when that
member is used, so the CLI and the configs check a name, and list the choices in their
help, without importing torch. Each package's ``__init__`` fills its registry: adding a
member is one file plus one line there. ``tests/test_registries.py`` loads every member.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any

from nasprune.errors import NaspruneError


class UnknownName(NaspruneError, KeyError):
    """A name outside a registry: a user error, and a ``KeyError`` for ``Mapping.get``."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry(Mapping[str, Any]):
    """``REGISTRY[name]`` is the member itself (imported on first use)."""

    def __init__(self, kind: str, members: Mapping[str, str],
                 about: Mapping[str, str] | None = None) -> None:
        self.kind = kind
        self._paths = dict(members)
        self._about = dict(about or {})
        self._loaded: dict[str, Any] = {}
        if set(self._about) - set(self._paths):
            raise ValueError(f"{kind}: described but not registered: "
                             f"{sorted(set(self._about) - set(self._paths))}")

    def names(self) -> tuple[str, ...]:
        return tuple(self._paths)

    def describe(self) -> str:
        """One line per member for the CLI's help: ``name: what it is; ...``."""
        return "; ".join(f"{name}: {self._about[name]}" if name in self._about else name
                         for name in self._paths) + "."

    def path(self, name: str) -> str:
        """The ``module:attribute`` that holds ``name``."""
        self.check(name)
        return self._paths[name]

    def check(self, name: str) -> str:
        """``name`` if it is a member; otherwise a user error that lists the members."""
        if name not in self._paths:
            raise UnknownName(f"unknown {self.kind} {name!r}; choose one of "
                                + ", ".join(self._paths))
        return name

    def __getitem__(self, name: str) -> Any:
        if name not in self._loaded:
            module, _, attribute = self.path(name).partition(":")
            self._loaded[name] = getattr(importlib.import_module(module), attribute)
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)

    def __contains__(self, name: object) -> bool:
        return name in self._paths

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._paths)})"
