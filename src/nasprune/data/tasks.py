"""A task's data, from its configuration: local files or the hub, checked, subsampled and
split in three.

Sources, in order: ``data_dir/<task>/{train,validation}.*``, explicit train/validation
files, else the Hugging Face hub (needs a network).

Three splits, so that no reported figure is chosen on its own data: ``train`` (fine-tuning
and distillation), ``search`` (held out from the training file, or ``search_file``: every
choice is made on it: the best epoch, the search, the pick, recovery stopping) and
``validation`` (only read to report the unpruned model and the exported pick).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from nasprune.config import DataConfig
from nasprune.data.checks import check_columns, invalid_rows, label_sort_key, normalise
from nasprune.data.io import find_split, hub_splits, read_table, read_unlabeled
from nasprune.data.presets import PRESETS, TaskPreset
from nasprune.data.split import split_search, subsample
from nasprune.errors import NaspruneError


@dataclass
class TaskData:
    """Texts and labels of both splits, already checked against the preset."""

    preset: TaskPreset
    train: pd.DataFrame
    validation: pd.DataFrame
    source: str = ""
    extra: dict = field(default_factory=dict)
    #: Held-out examples every choice is made on (``None``: choices fall back to validation).
    search: pd.DataFrame | None = None
    #: Texts without labels for distillation (label ``IGNORE_LABEL``, or NaN for regression).
    unlabeled: pd.DataFrame | None = None

    @property
    def selection_split(self) -> str:
        """The split that epochs, sub-networks and picks are chosen on."""
        return "search" if self.search is not None and len(self.search) else "validation"

    def texts(self, split: str) -> list[tuple[str, ...]]:
        frame = getattr(self, split)
        columns = [frame[c].astype(str).tolist() for c in self.preset.text_columns]
        return list(zip(*columns))

    def labels(self, split: str) -> np.ndarray:
        return getattr(self, split)["label"].to_numpy()


def _custom_preset(cfg: DataConfig, train: pd.DataFrame) -> TaskPreset:
    if not cfg.text_columns:
        raise NaspruneError("custom data needs --text-columns (one column, or two for pairs)")
    label_column = cfg.label_column or "label"
    check_columns(train, (*cfg.text_columns, label_column), "train file")
    if cfg.regression:
        return TaskPreset("custom", tuple(cfg.text_columns), (), ("pearson", "spearman"),
                          label_column)
    names = tuple(str(v) for v in sorted(train[label_column].unique(), key=label_sort_key))
    if len(names) < 2:
        raise NaspruneError(f"the train file has a single label value {names}; need at least two")
    return TaskPreset("custom", tuple(cfg.text_columns), names, ("accuracy",), label_column)


def load_task_data(cfg: DataConfig) -> TaskData:
    """Both splits of a task, from local files or the hub, checked and subsampled."""
    if cfg.task is not None and cfg.task not in PRESETS:
        raise NaspruneError(f"unknown task {cfg.task!r}; choose one of {', '.join(PRESETS)}")
    if cfg.train_file or cfg.validation_file:
        if not (cfg.train_file and cfg.validation_file):
            raise NaspruneError("give both --train-file and --validation-file")
        train, validation = read_table(cfg.train_file), read_table(cfg.validation_file)
        source = f"{cfg.train_file}, {cfg.validation_file}"
    elif cfg.data_dir:
        if cfg.task is None:
            raise NaspruneError("--data-dir needs --task (the folder name under it)")
        directory = Path(cfg.data_dir) / cfg.task
        if not directory.is_dir():
            raise NaspruneError(f"no folder {directory} (expected <data-dir>/<task>/train.tsv)")
        train_path, validation_path = find_split(directory, "train"), find_split(
            directory, "validation")
        train, validation = read_table(train_path), read_table(validation_path)
        source = str(directory)
    else:
        if cfg.task is None:
            raise NaspruneError("give --task, --data-dir, or --train-file/--validation-file")
        train, validation = hub_splits(PRESETS[cfg.task])
        source = f"hub:glue/{cfg.task}"

    dropped_invalid = {}
    for name in ("train", "validation"):
        columns = list(cfg.text_columns or (PRESETS[cfg.task].text_columns if cfg.task else ()))
        label = cfg.label_column or (PRESETS[cfg.task].label_column if cfg.task else "label")
        frame = train if name == "train" else validation
        check_columns(frame, (*columns, label), f"{name} file")
        frame, dropped_invalid[name] = invalid_rows(frame, columns, label, f"{name} file",
                                                    cfg.drop_invalid)
        train, validation = (frame, validation) if name == "train" else (train, frame)
    if cfg.task is None:
        preset = _custom_preset(cfg, train)
    else:
        preset = PRESETS[cfg.task]
        if cfg.text_columns or cfg.label_column:
            preset = TaskPreset(
                preset.name, tuple(cfg.text_columns or preset.text_columns), preset.label_names,
                preset.metrics, cfg.label_column or preset.label_column, preset.validation_split)
    train = normalise(train, preset, "train file")
    validation = normalise(validation, preset, "validation file")
    train = subsample(train, cfg.max_train_examples, cfg.seed)
    validation = subsample(validation, cfg.max_eval_examples, cfg.seed)
    if cfg.search_file:
        search = read_table(cfg.search_file)
        check_columns(search, (*preset.text_columns, preset.label_column), "search file")
        search, dropped_invalid["search"] = invalid_rows(
            search, preset.text_columns, preset.label_column, "search file", cfg.drop_invalid)
        search = normalise(search, preset, "search file")
        dropped = 0
    else:
        train, search, dropped = split_search(train, validation, preset, cfg.search_split,
                                              cfg.seed)
    extra = {"config": cfg.to_dict(), "search_source": cfg.search_file or "train",
             "dropped_duplicates": dropped, "dropped_invalid": dropped_invalid}
    unlabeled = read_unlabeled(cfg.distill_file, preset) if cfg.distill_file else None
    return TaskData(preset, _numbered(train), _numbered(validation), source, extra,
                    _numbered(search), unlabeled)


def _numbered(frame: pd.DataFrame) -> pd.DataFrame:
    """A fresh index, with the row's position in its source file kept as column ``row``."""
    return frame.rename_axis("row").reset_index()
