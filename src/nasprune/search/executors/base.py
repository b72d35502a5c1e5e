"""The contract between the search loop and an executor: jobs in, finished jobs out.

``evaluate(subnet, fidelity) -> dict[str, float]`` is a plain callable (the CLI builds it
from the super-network; tests pass toy functions); ``fidelity`` is the fraction of the
search split to use (1.0 = all).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from nasprune.core.subnet import Subnet

Evaluate = Callable[[Subnet, float], dict]


@dataclass(frozen=True)
class Job:
    """One evaluation request."""

    subnet: Subnet
    fidelity: float = 1.0


@dataclass
class Done:
    """A finished job: its metrics, or the exception it raised, and its wall time."""

    job: Job
    metrics: dict[str, float] | None
    wall_s: float
    error: BaseException | None = None


class Executor(Protocol):
    """Where evaluations run. ``slots`` jobs may be in flight at once; ``results`` blocks
    until at least one submitted job has finished and returns all finished ones."""

    slots: int

    def submit(self, job: Job) -> None: ...

    def results(self) -> list[Done]: ...

    def close(self) -> None: ...
