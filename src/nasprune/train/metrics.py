"""Task metrics (GLUE's): plain numpy/scipy/scikit-learn, no torch. scipy and scikit-learn
load when a metric needs them (about two seconds of imports that every command paid)."""

from __future__ import annotations

import warnings

import numpy as np

METRICS = ("accuracy", "f1", "matthews", "pearson", "spearman")


def compute(names: tuple[str, ...], predictions: np.ndarray,
            labels: np.ndarray) -> dict[str, float]:
    """Every metric in ``names`` for class predictions (or regression scores) against labels."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    out: dict[str, float] = {}
    for name in names:
        if name == "accuracy":
            out[name] = float((predictions == labels).mean())
        elif name == "f1":
            from sklearn.metrics import f1_score

            out[name] = float(f1_score(labels, predictions))
        elif name == "matthews":
            from sklearn.metrics import matthews_corrcoef

            out[name] = float(matthews_corrcoef(labels, predictions))
        elif name in ("pearson", "spearman"):
            from scipy import stats

            correlation = stats.pearsonr if name == "pearson" else stats.spearmanr
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # constant input: reported as 0 below
                out[name] = _finite(correlation(predictions, labels)[0])
        else:
            raise ValueError(f"unknown metric {name!r}")
    return out


def _finite(value: float) -> float:
    """A constant prediction has no correlation; report 0 instead of NaN."""
    return 0.0 if not np.isfinite(value) else float(value)
