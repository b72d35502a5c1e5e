"""Task presets, loading of local files or the hub, the search split, tokenisation (cached)
and dynamic padding.

Sources, in order: ``data_dir/<task>/{train,validation}.*``, explicit train/validation
files, else the Hugging Face hub (needs a network).

Three splits, so that no reported figure is chosen on its own data: ``train`` (fine-tuning
and distillation), ``search`` (held out from the training file, or ``search_file``: every
choice is made on it: the best epoch, the search, the pick, recovery stopping) and
``validation`` (only read to report the unpruned model and the exported pick).
"""

from __future__ import annotations

import csv
import hashlib
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from nasprune.errors import NaspruneError, require

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class TaskPreset:
    name: str
    text_columns: tuple[str, ...]
    label_names: tuple[str, ...] = ()  # empty for regression
    metrics: tuple[str, ...] = ("accuracy",)  # the first one is the task's headline metric
    label_column: str = "label"
    validation_split: str = "validation"

    @property
    def is_regression(self) -> bool:
        return not self.label_names

    @property
    def num_labels(self) -> int:
        return 1 if self.is_regression else len(self.label_names)

    @property
    def metric(self) -> str:
        return self.metrics[0]


_NLI = ("entailment", "not_entailment")
PRESETS: dict[str, TaskPreset] = {
    p.name: p
    for p in [
        TaskPreset("rte", ("sentence1", "sentence2"), _NLI),
        TaskPreset("sst2", ("sentence",), ("negative", "positive")),
        TaskPreset("mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"),
                   ("f1", "accuracy")),
        TaskPreset("cola", ("sentence",), ("unacceptable", "acceptable"), ("matthews",)),
        TaskPreset("stsb", ("sentence1", "sentence2"), (), ("pearson", "spearman")),
        TaskPreset("qnli", ("question", "sentence"), _NLI),
        TaskPreset("qqp", ("question1", "question2"), ("not_duplicate", "duplicate"),
                   ("f1", "accuracy")),
        TaskPreset("mnli", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"),
                   validation_split="validation_matched"),
        TaskPreset("wnli", ("sentence1", "sentence2"), ("not_entailment", "entailment")),
    ]
}

FILE_SUFFIXES = (".tsv", ".csv", ".jsonl", ".json", ".parquet")


@dataclass
class DataConfig:
    """Where the data comes from; saved in the run directory so a run can be repeated."""

    task: str | None = None
    data_dir: str | None = None
    train_file: str | None = None
    validation_file: str | None = None
    text_columns: tuple[str, ...] | None = None
    label_column: str | None = None
    regression: bool = False
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    seed: int = 0
    #: Held out from the training set for every choice: a fraction (< 1) or a count.
    search_split: float = 0.1
    search_file: str | None = None
    #: Unlabeled in-domain texts (same text columns) that only the teacher labels.
    distill_file: str | None = None
    #: Drop rows with an empty text or a missing label (reported) instead of refusing them.
    drop_invalid: bool = False

    def __post_init__(self) -> None:
        if not self.search_split > 0 or (self.search_split >= 1
                                          and not float(self.search_split).is_integer()):
            raise NaspruneError("--search-split must be a fraction in (0, 1) or a count >= 1")

    def to_dict(self) -> dict:
        return asdict(self)


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


# --------------------------------------------------------------------------- reading


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


def _find_split(directory: Path, split: str) -> Path:
    for suffix in FILE_SUFFIXES:
        candidate = directory / f"{split}{suffix}"
        if candidate.is_file():
            return candidate
    raise NaspruneError(
        f"no {split} file in {directory} (expected {split}.tsv/.csv/.jsonl/.parquet)"
    )


def _hub_splits(preset: TaskPreset) -> tuple[pd.DataFrame, pd.DataFrame]:
    datasets = require("datasets", "hub")
    try:
        ds = datasets.load_dataset("glue", preset.name)
    except Exception as exc:  # the hub raises many types; all mean "could not fetch"
        raise NaspruneError(
            f"could not load glue/{preset.name} from the Hugging Face hub (no network?): "
            f"pass --data-dir or --train-file/--validation-file ({type(exc).__name__})"
        ) from exc
    return ds["train"].to_pandas(), ds[preset.validation_split].to_pandas()


# --------------------------------------------------------------------------- checking


def _custom_preset(cfg: DataConfig, train: pd.DataFrame) -> TaskPreset:
    if not cfg.text_columns:
        raise NaspruneError("custom data needs --text-columns (one column, or two for pairs)")
    label_column = cfg.label_column or "label"
    _check_columns(train, (*cfg.text_columns, label_column), "train file")
    if cfg.regression:
        return TaskPreset("custom", tuple(cfg.text_columns), (), ("pearson", "spearman"),
                          label_column)
    names = tuple(str(v) for v in sorted(train[label_column].unique(), key=_label_sort_key))
    if len(names) < 2:
        raise NaspruneError(f"the train file has a single label value {names}; need at least two")
    return TaskPreset("custom", tuple(cfg.text_columns), names, ("accuracy",), label_column)


def _invalid_rows(frame: pd.DataFrame, texts: Sequence[str], label: str, what: str,
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


def _label_sort_key(value) -> tuple:
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def _check_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        import difflib

        hints = [
            f"{m!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(
                m, [str(c) for c in frame.columns], n=1)) else repr(m)
            for m in missing
        ]
        raise NaspruneError(
            f"{what} lacks column {', '.join(hints)}; it has {', '.join(map(str, frame.columns))}"
        )


def _normalise(frame: pd.DataFrame, preset: TaskPreset, what: str) -> pd.DataFrame:
    """Keep text columns + a ``label`` column of class indices (or floats for regression)."""
    _check_columns(frame, (*preset.text_columns, preset.label_column), what)
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
        train_path, validation_path = _find_split(directory, "train"), _find_split(
            directory, "validation")
        train, validation = read_table(train_path), read_table(validation_path)
        source = str(directory)
    else:
        if cfg.task is None:
            raise NaspruneError("give --task, --data-dir, or --train-file/--validation-file")
        train, validation = _hub_splits(PRESETS[cfg.task])
        source = f"hub:glue/{cfg.task}"

    dropped_invalid = {}
    for name in ("train", "validation"):
        columns = list(cfg.text_columns or (PRESETS[cfg.task].text_columns if cfg.task else ()))
        label = cfg.label_column or (PRESETS[cfg.task].label_column if cfg.task else "label")
        frame = train if name == "train" else validation
        _check_columns(frame, (*columns, label), f"{name} file")
        frame, dropped_invalid[name] = _invalid_rows(frame, columns, label, f"{name} file",
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
    train = _normalise(train, preset, "train file")
    validation = _normalise(validation, preset, "validation file")
    train = _subsample(train, cfg.max_train_examples, cfg.seed)
    validation = _subsample(validation, cfg.max_eval_examples, cfg.seed)
    if cfg.search_file:
        search, dropped_invalid["search"] = _invalid_rows(
            read_table(cfg.search_file), preset.text_columns, preset.label_column,
            "search file", cfg.drop_invalid)
        search = _normalise(search, preset, "search file")
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


#: Label of an unlabeled example; cross-entropy ignores it (PyTorch's ``ignore_index``).
IGNORE_LABEL = -100


def read_unlabeled(path: str | Path, preset: TaskPreset) -> pd.DataFrame:
    """The text columns of ``path`` (any label column is ignored), for distillation."""
    frame = read_table(path)
    _check_columns(frame, preset.text_columns, "distill file")
    out = frame[list(preset.text_columns)].astype(str).reset_index(drop=True)
    out["label"] = (np.full(len(out), np.nan, dtype=np.float32) if preset.is_regression
                    else np.full(len(out), IGNORE_LABEL, dtype=np.int64))
    return out


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
        raise NaspruneError(f"the training set ({len(train)} rows) is too small for a search "
                            f"split of {n}; give --search-file or more training data")
    labels = candidates["label"]
    stratify = None
    if not preset.is_regression and labels.value_counts().min() >= 2:
        stratify = labels
    _, search = train_test_split(candidates, test_size=n, random_state=seed, stratify=stratify)
    held = set(keys.loc[search.index])
    rest = train.drop(index=search.index)
    keep = ~keys.loc[rest.index].isin(held)
    return rest[keep], search, int((~keep).sum())


def _subsample(frame: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    """A fixed random subset (same seed, same rows), so runs are comparable."""
    if limit is None or limit >= len(frame):
        return frame
    return frame.sample(n=limit, random_state=seed)


# --------------------------------------------------------------------------- tokenising


@dataclass
class Encoded:
    """Token ids per example (ragged); padded per batch by ``batches``."""

    input_ids: list[np.ndarray]
    token_type_ids: list[np.ndarray] | None
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.input_ids)

    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.input_ids), dtype=np.int64)


def _cache_dir() -> Path:
    return Path(os.environ.get("NASPRUNE_CACHE", Path.home() / ".cache" / "nasprune")) / "tokens"


def encode(tokenizer, data: TaskData, split: str, max_length: int = 128,
           cache: bool = True) -> Encoded:
    """Tokenise a split once; the result is cached on disk keyed by texts, tokenizer, length."""
    texts = data.texts(split)
    labels = data.labels(split)
    key = hashlib.sha256()
    key.update(repr((type(tokenizer).__name__, tokenizer.name_or_path, len(tokenizer),
                     max_length)).encode())
    for row in texts:
        key.update("\x1f".join(row).encode())
        key.update(b"\x1e")
    path = _cache_dir() / f"{key.hexdigest()[:32]}.npz"
    if cache and path.is_file():
        try:
            with np.load(path) as stored:
                return _unpack(stored, labels)
        except (OSError, ValueError, KeyError):
            pass  # a broken cache entry is rebuilt below
    columns = list(zip(*texts))
    pair = columns[1] if len(columns) > 1 else None
    out = tokenizer(list(columns[0]), list(pair) if pair else None, truncation=True,
                    max_length=max_length, return_token_type_ids=True)
    ids = [np.asarray(x, dtype=np.int32) for x in out["input_ids"]]
    types = [np.asarray(x, dtype=np.int8) for x in out["token_type_ids"]]
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        offsets = np.cumsum([0] + [len(x) for x in ids])
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.{random.getrandbits(32):08x}.npz")
        np.savez(tmp, ids=np.concatenate(ids), types=np.concatenate(types), offsets=offsets)
        os.replace(tmp, path)  # a unique temporary: two processes never share one
    return Encoded(ids, types, labels)


def _unpack(stored, labels: np.ndarray) -> Encoded:
    offsets = stored["offsets"]
    ids, types = stored["ids"], stored["types"]
    spans = list(zip(offsets[:-1], offsets[1:]))
    return Encoded([ids[a:b] for a, b in spans], [types[a:b] for a, b in spans], labels)


def collate(encoded: Encoded, indices: Sequence[int], pad_id: int = 0,
            with_token_types: bool = True) -> dict[str, torch.Tensor]:
    """Pad a batch to its own longest example (dynamic padding)."""
    import torch  # here, so that reading and checking data never loads torch
    width = max(len(encoded.input_ids[i]) for i in indices)
    ids = np.full((len(indices), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(indices), width), dtype=np.int64)
    types = np.zeros((len(indices), width), dtype=np.int64)
    for row, i in enumerate(indices):
        n = len(encoded.input_ids[i])
        ids[row, :n] = encoded.input_ids[i]
        mask[row, :n] = 1
        if encoded.token_type_ids is not None:
            types[row, :n] = encoded.token_type_ids[i]
    batch = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
    if with_token_types:
        batch["token_type_ids"] = torch.from_numpy(types)
    label_values = encoded.labels[list(indices)]
    dtype = torch.float32 if label_values.dtype.kind == "f" else torch.long
    batch["labels"] = torch.as_tensor(label_values, dtype=dtype)
    return batch


def batches(encoded: Encoded, batch_size: int, *, shuffle: bool = False, seed: int = 0,
            pad_id: int = 0, with_token_types: bool = True,
            limit: int | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Training order is shuffled; evaluation order is by length, so padding is minimal."""
    order = list(range(len(encoded)))
    if shuffle:
        random.Random(seed).shuffle(order)
    else:
        lengths = encoded.lengths()
        order.sort(key=lambda i: lengths[i])
    if limit is not None:
        order = order[:limit]
    for start in range(0, len(order), batch_size):
        yield collate(encoded, order[start:start + batch_size], pad_id, with_token_types)


def subset(encoded: Encoded, n: int, seed: int = 0) -> Encoded:
    """A fixed random subset of an encoded split (calibration, low-fidelity evaluation)."""
    if n >= len(encoded):
        return encoded
    picked = sorted(random.Random(seed).sample(range(len(encoded)), n))
    types = encoded.token_type_ids
    return Encoded([encoded.input_ids[i] for i in picked],
                   [types[i] for i in picked] if types is not None else None,
                   encoded.labels[picked])


def concat(*parts: Encoded) -> Encoded:
    """One encoded split made of several (e.g. the training texts plus unlabeled ones)."""
    with_types = all(p.token_type_ids is not None for p in parts)
    return Encoded([x for p in parts for x in p.input_ids],
                   [x for p in parts for x in p.token_type_ids] if with_types else None,
                   np.concatenate([p.labels for p in parts]))
