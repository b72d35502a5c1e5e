import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from nasprune.train import metrics as metrics


def test_classification_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    labels, preds = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    got = metrics.compute(("accuracy", "f1", "matthews"), preds, labels)
    assert got["accuracy"] == pytest.approx(accuracy_score(labels, preds))
    assert got["f1"] == pytest.approx(f1_score(labels, preds))
    assert got["matthews"] == pytest.approx(matthews_corrcoef(labels, preds))


def test_regression_metrics_match_scipy():
    rng = np.random.default_rng(1)
    labels = rng.normal(size=100)
    preds = labels + rng.normal(scale=0.5, size=100)
    got = metrics.compute(("pearson", "spearman"), preds, labels)
    assert got["pearson"] == pytest.approx(pearsonr(preds, labels)[0])
    assert got["spearman"] == pytest.approx(spearmanr(preds, labels)[0])


def test_constant_prediction_has_zero_correlation():
    assert metrics.compute(("pearson",), np.ones(5), np.arange(5.0))["pearson"] == 0.0
