"""Reading tables: local files by suffix, the Hugging Face hub, unlabeled texts."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from nasprune.data.checks import check_columns
from nasprune.data.presets import TaskPreset
from nasprune.errors import NaspruneError, require

FILE_SUFFIXES = (".tsv", ".csv", ".jsonl", ".json", ".parquet")

#: Label of an unlabeled example; cross-entropy ignores it (PyTorch's ``ignore_index``).
IGNORE_LABEL = -100


def read_table(path: str | Path) -> pd.DataFrame:
    """TSV (unquoted, as GLUE ships it), CSV, JSON lines or Parquet, chosen by suffix."""
    path = Path(path)
    if not path.is_file():
        raise NaspruneError(f"data file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".tsv":
            frame = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, keep_default_na=False)
        elif suffix == ".csv":
            frame = pd.read_csv(path, keep_default_na=False)
        elif suffix in (".jsonl", ".json"):
            frame = pd.read_json(path, lines=True)
        elif suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            raise NaspruneError(
                f"unsupported file type {suffix!r} for {path}; "
                f"use one of {', '.join(FILE_SUFFIXES)}")
    except NaspruneError:
        raise
    except (ValueError, pd.errors.ParserError, OSError) as exc:
        if path.stat().st_size == 0:
            raise NaspruneError(f"data file is empty: {path}") from exc
        raise NaspruneError(f"cannot read {path}: {str(exc).splitlines()[0]}") from exc
    if frame.empty:
        raise NaspruneError(f"data file has no rows: {path}")
    return frame


def find_split(directory: Path, split: str) -> Path:
    """``directory/<split>.<suffix>`` for the first suffix that exists."""
    for suffix in FILE_SUFFIXES:
        candidate = directory / f"{split}{suffix}"
        if candidate.is_file():
            return candidate
    raise NaspruneError(
        f"no {split} file in {directory} (expected {split}.tsv/.csv/.jsonl/.parquet)"
    )


def hub_splits(preset: TaskPreset) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The GLUE task's train and validation splits from the hub (needs a network)."""
    datasets = require("datasets", "hub")
    try:
        ds = datasets.load_dataset("glue", preset.name)
    except Exception as exc:  # the hub raises many types; all mean "could not fetch"
        raise NaspruneError(
            f"could not load glue/{preset.name} from the Hugging Face hub (no network?): "
            f"pass --data-dir or --train-file/--validation-file ({type(exc).__name__})"
        ) from exc
    return ds["train"].to_pandas(), ds[preset.validation_split].to_pandas()


def read_unlabeled(path: str | Path, preset: TaskPreset) -> pd.DataFrame:
    """The text columns of ``path`` (any label column is ignored), for distillation."""
    frame = read_table(path)
    check_columns(frame, preset.text_columns, "distill file")
    out = frame[list(preset.text_columns)].astype(str).reset_index(drop=True)
    out["label"] = (np.full(len(out), np.nan, dtype=np.float32) if preset.is_regression
                    else np.full(len(out), IGNORE_LABEL, dtype=np.int64))
    return out
