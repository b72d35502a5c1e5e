"""One writer per run directory: an fcntl lock on ``RUN/.lock`` holding the writer's PID.

The lock is the kernel's: it goes with the process, also on a crash or kill -9. Taking it
again in the same process (the CLI, then the pipeline) is allowed and counted.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from nasprune.errors import NaspruneError

LOCK = ".lock"

#: Run directories this process holds: path -> [open lock file, how many holders].
_HELD: dict[Path, list] = {}


def take(run_dir: Path) -> IO[str]:
    """Hold ``run_dir``'s lock, or fail at once naming the process that holds it."""
    key = run_dir.resolve()
    if key in _HELD:
        _HELD[key][1] += 1
        return _HELD[key][0]
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(run_dir / LOCK, "a+")  # noqa: SIM115 - held until give_back()
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        # every command that writes a run takes this lock (run, search, export): no hint
        # at an option that only one of them has
        raise NaspruneError(f"{run_dir} is in use by nasprune (PID {holder}); wait for "
                            "it to finish, then try again") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    _HELD[key] = [handle, 1]
    return handle


def give_back(run_dir: Path) -> None:
    """Release one hold; the lock itself goes when the last holder in this process lets go."""
    key = run_dir.resolve()
    held = _HELD.get(key)
    if held is None:
        return
    held[1] -= 1
    if held[1] > 0:
        return
    del _HELD[key]
    fcntl.flock(held[0], fcntl.LOCK_UN)
    held[0].close()
