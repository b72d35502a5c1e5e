"""Which rows each split keeps: the search split held out of the training set (every
choice is made on it), and fixed random subsamples of a split.

The search split never shares a text with validation, and no training row repeats one of
its texts, so no search example is ever trained on.
"""

from __future__ import annotations

import pandas as pd

from nasprune.data.presets import TaskPreset
from nasprune.errors import NaspruneError


def search_size(n_train: int, split: float) -> int:
    """Examples held out for the search: a count, or a fraction kept within 200..2,000,
    never more than half of the training set."""
    n = int(split) if split >= 1 else min(2000, max(200, round(split * n_train)))
    if split >= 1 and n >= n_train:
        raise NaspruneError(f"--search-split {n} leaves no training examples "
                            f"(the training set has {n_train})")
    return min(n, n_train // 2) if split < 1 else n


def _keys(frame: pd.DataFrame, preset: TaskPreset) -> pd.Series:
    return frame[list(preset.text_columns)].astype(str).agg("\x1f".join, axis=1)


def split_search(train: pd.DataFrame, validation: pd.DataFrame, preset: TaskPreset,
                 split: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Hold a stratified search split out of ``train``; returns (train, search, dropped).

    The search split never shares a text with validation, and training rows whose text is
    in the search split are dropped (``dropped``), so no search example is ever trained on.
    """
    from sklearn.model_selection import train_test_split

    keys = _keys(train, preset)
    candidates = train[~keys.isin(set(_keys(validation, preset)))]
    n = min(search_size(len(train), split), len(candidates) // 2)
    if n < 1:
        shared = len(train) - len(candidates)
        if shared:  # e.g. the same file given as training and validation data
            raise NaspruneError(f"no search split can be held out: {shared} of the "
                                f"{len(train)} training rows have a text of the validation "
                                "set; give a validation file other than the training data, "
                                "or --search-file")
        raise NaspruneError(f"the training set ({len(train)} rows) is too small for a search "
                            f"split of {split:g}; give --search-file or more training data")
    labels = candidates["label"]
    stratify = None
    if not preset.is_regression and labels.value_counts().min() >= 2:
        stratify = labels
    _, search = train_test_split(candidates, test_size=n, random_state=seed, stratify=stratify)
    held = set(keys.loc[search.index])
    rest = train.drop(index=search.index)
    keep = ~keys.loc[rest.index].isin(held)
    return rest[keep], search, int((~keep).sum())


def subsample(frame: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    """A fixed random subset (same seed, same rows), so runs are comparable."""
    if limit is None or limit >= len(frame):
        return frame
    return frame.sample(n=limit, random_state=seed)
