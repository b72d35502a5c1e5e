"""Checking and normalising a table against a preset: the columns exist, no row lacks a
text or a label, and labels become class indices (or floats for regression)."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import numpy as np
import pandas as pd

from nasprune.data.presets import TaskPreset
from nasprune.errors import NaspruneError


def check_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        hints = [
            f"{m!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(
                m, [str(c) for c in frame.columns], n=1)) else repr(m)
            for m in missing
        ]
        raise NaspruneError(
            f"{what} lacks column {', '.join(hints)}; it has {', '.join(map(str, frame.columns))}"
        )


def invalid_rows(frame: pd.DataFrame, texts: Sequence[str], label: str, what: str,
                 drop: bool) -> tuple[pd.DataFrame, int]:
    """Rows with an empty (or whitespace-only) text or a missing label: refused with their
    count and first data rows (1 = the first row after the header), or dropped."""
    if not texts:
        return frame, 0
    empty_text = np.zeros(len(frame), dtype=bool)
    for column in texts:
        values = frame[column]
        empty_text |= (values.isna() | (values.astype(str).str.strip() == "")).to_numpy()
    labels = frame[label]
    missing = (labels.isna() | labels.astype(str).str.strip().str.lower().isin(
        ("", "nan", "none", "null"))).to_numpy()
    bad = empty_text | missing
    if not bad.any():
        return frame, 0
    if drop:
        return frame[~bad], int(bad.sum())
    rows = (np.flatnonzero(bad)[:5] + 1).tolist()
    kinds = " and ".join(k for k, m in (("an empty text", empty_text), ("no label", missing))
                         if m.any())
    raise NaspruneError(f"{what}: {int(bad.sum())} rows with {kinds} (first data rows "
                        f"{', '.join(map(str, rows))}); fix them or pass --drop-invalid")


def label_sort_key(value) -> tuple:
    """Numbers first, in numeric order, then names (the class order of custom data)."""
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def normalise(frame: pd.DataFrame, preset: TaskPreset, what: str) -> pd.DataFrame:
    """Keep text columns + a ``label`` column of class indices (or floats for regression)."""
    check_columns(frame, (*preset.text_columns, preset.label_column), what)
    out = frame[list(preset.text_columns)].copy()
    raw = frame[preset.label_column]
    if preset.is_regression:
        labels = pd.to_numeric(raw, errors="coerce")
        if labels.isna().any():
            bad = raw[labels.isna()].iloc[0]
            raise NaspruneError(f"{what}: label {bad!r} is not a number (regression task)")
        out["label"] = labels.astype("float32")
        return out
    index = {name: i for i, name in enumerate(preset.label_names)}
    values = raw.tolist()
    mapped = [_class_index(value, index) for value in values]
    if None in mapped:
        bad = values[mapped.index(None)]
        raise NaspruneError(
            f"{what}: label {bad!r} is not in the label set "
            f"({', '.join(preset.label_names)} or 0..{len(index) - 1})"
        )
    out["label"] = np.asarray(mapped, dtype=np.int64)
    return out


def _class_index(value, index: dict[str, int]) -> int | None:
    """A label given by name, or by its index (1, "1" and 1.0 all mean class 1)."""
    key = str(value)
    if key in index:
        return index[key]
    try:
        number = float(key)
    except ValueError:
        return None
    if number.is_integer() and 0 <= int(number) < len(index):
        return int(number)
    return None
