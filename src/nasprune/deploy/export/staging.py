"""Writing an export beside its final place and renaming it in, so that a crash never
leaves half an export and a concurrent one never shares its directory.

An export is written into ``OUT.tmp-export-<pid>@<host>-<random>`` and renamed to ``OUT``
(an existing ``OUT`` is first renamed to ``OUT.old-export-...`` and removed after).
Temporary directories whose writer died (kill -9) are removed by the next export.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import time
from pathlib import Path

from nasprune.deploy.export.format import MANIFEST
from nasprune.errors import NaspruneError

TMP_SUFFIX = ".tmp-export"
OLD_SUFFIX = ".old-export"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid < 2**31  # another user's live process, or an absurd number
    return True


_HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"
_TEMP_NAME = re.compile(r"-(\d+)@([A-Za-z0-9._]+)-[0-9a-f]{8}")
#: A temporary directory of another machine (shared disk) is removed when older than this.
FOREIGN_TEMP_AGE_S = 24 * 3600


def _clean_stale(out: Path) -> None:
    """Remove ``out``'s temporary and old directories whose writer died (kill -9): the
    fixed names of older versions, and unique names (``-<pid>@<host>-<random>``) of this
    host whose process is gone, or of another host when older than a day."""
    if not out.parent.is_dir():
        return
    for suffix in (TMP_SUFFIX, OLD_SUFFIX):
        stem = out.name + suffix
        for path in out.parent.iterdir():
            if not path.name.startswith(stem) or path.is_symlink() or not path.is_dir():
                continue
            rest = path.name[len(stem):]
            match = _TEMP_NAME.fullmatch(rest)
            if rest == "":
                stale = True
            elif match is None:
                continue  # not one of ours
            elif match.group(2) == _HOST:
                stale = not _pid_alive(int(match.group(1)))
            else:
                stale = time.time() - path.stat().st_mtime > FOREIGN_TEMP_AGE_S
            if stale:
                shutil.rmtree(path, ignore_errors=True)


def _unique(out: Path, suffix: str) -> Path:
    return out.with_name(f"{out.name}{suffix}-{os.getpid()}@{_HOST}-{secrets.token_hex(4)}")


def prepare_out(out: Path) -> Path:
    """A fresh temporary sibling of ``out`` (unique per process, so a concurrent or killed
    export never shares it); an existing ``out`` must be an export or empty."""
    if out.exists():
        if not out.is_dir():
            raise NaspruneError(f"{out} exists and is not a directory")
        if any(out.iterdir()) and not (out / MANIFEST).is_file():
            raise NaspruneError(f"{out} exists and is not a nasprune export; "
                                "choose an empty or new --out directory")
    _clean_stale(out)
    tmp = _unique(out, TMP_SUFFIX)
    tmp.mkdir(parents=True)
    return tmp


def publish(tmp: Path, out: Path) -> None:
    if out.exists():
        old = _unique(out, OLD_SUFFIX)
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def same_modes(directory: Path, reference: Path) -> None:
    """Every file gets the mode of ``reference`` (written with ``open``: 0666 less the
    umask, 0644 usually); safetensors creates its file 0600."""
    mode = reference.stat().st_mode & 0o777
    for path in directory.rglob("*"):
        if path.is_file():
            path.chmod(mode)
