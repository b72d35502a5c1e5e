"""Recovery methods made of the others' steps: ``both`` (least squares, then distillation
from the corrected weights) and ``none`` (the sub-network as extracted)."""

from __future__ import annotations

from nasprune.train.recovery.distillation import distill_method
from nasprune.train.recovery.least_squares import least_squares_method
from nasprune.train.recovery.recover import RecoveryRun


def both(run: RecoveryRun) -> None:
    least_squares_method(run)
    distill_method(run)


def none(run: RecoveryRun) -> None:
    """No step: the report's ``after`` is its ``before``."""
