"""The module structure of a sub-network, in the one folder that exports also ship.

``stand_ins`` (parameter-free modules for removed blocks), ``blocks`` (what one encoder
layer costs), ``layouts`` (where each family keeps its parts: the one registration of a
family, ``LAYOUTS``) and ``shrink`` (a full model rebuilt with a sub-network's module
shapes). nasprune (``families``, ``supernet``, ``extract``) and the remote-code class of
exports (``modeling_nasprune.py``) use the same files: every module here but this one is
copied next to it (``copy_to``), so they import only torch and each other, relatively.
"""

from __future__ import annotations

import shutil
from pathlib import Path

#: The modules an export ships (every one but this ``__init__``).
SHIPPED = tuple(sorted(p.name for p in Path(__file__).parent.glob("*.py")
                       if p.name != "__init__.py"))


def copy_to(directory: Path) -> None:
    """Copy the shipped modules into an export ``directory``."""
    for name in SHIPPED:
        shutil.copyfile(Path(__file__).parent / name, Path(directory) / name)
