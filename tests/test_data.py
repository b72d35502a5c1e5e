import json

import numpy as np
import pandas as pd
import pytest

from nasprune.data.encode import batches, encode, subset
from nasprune.data.io import read_table
from nasprune.data.presets import PRESETS
from nasprune.data.tasks import DataConfig, load_task_data
from nasprune.errors import NaspruneError

from conftest import tiny_tokenizer

ROWS = pd.DataFrame({"sentence": ["a good film", 'it said "bad"', "fun", "awful plot"],
                     "label": [1, 0, 1, 0]})


def write(frame: pd.DataFrame, path):
    if path.suffix == ".tsv":
        frame.to_csv(path, sep="\t", index=False, quoting=3)
    elif path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".jsonl":
        path.write_text("\n".join(json.dumps(r) for r in frame.to_dict("records")))
    else:
        frame.to_parquet(path)
    return path


@pytest.mark.parametrize("suffix", [".tsv", ".csv", ".jsonl", ".parquet"])
def test_every_format_reads_the_same_rows(tmp_path, suffix):
    frame = read_table(write(ROWS, tmp_path / f"train{suffix}"))
    assert frame["sentence"].tolist() == ROWS["sentence"].tolist()
    assert frame["label"].tolist() == [1, 0, 1, 0]


@pytest.mark.parametrize("suffix", [".tsv", ".jsonl"])
def test_data_dir_layout_with_preset(tmp_path, suffix):
    (tmp_path / "sst2").mkdir()
    write(ROWS, tmp_path / "sst2" / f"train{suffix}")
    write(ROWS, tmp_path / "sst2" / f"validation{suffix}")
    search = write(ROWS, tmp_path / f"search{suffix}")
    data = load_task_data(DataConfig(task="sst2", data_dir=str(tmp_path),
                                     search_file=str(search)))
    assert data.preset.num_labels == 2 and data.texts("train")[0] == ("a good film",)
    assert data.labels("validation").tolist() == [1, 0, 1, 0]


def test_presets_cover_glue():
    assert set(PRESETS) == {"rte", "sst2", "mrpc", "cola", "stsb", "qnli", "qqp", "mnli", "wnli"}
    assert PRESETS["stsb"].is_regression and PRESETS["stsb"].num_labels == 1
    assert PRESETS["stsb"].metrics == ("pearson", "spearman")
    assert PRESETS["mrpc"].metrics == ("f1", "accuracy") and PRESETS["qqp"].metric == "f1"
    assert PRESETS["cola"].metric == "matthews"
    assert PRESETS["rte"].text_columns == ("sentence1", "sentence2")
    assert PRESETS["mnli"].num_labels == 3


@pytest.mark.slow
def test_shared_rte_pairs_and_label_names(shared_data):
    data = load_task_data(DataConfig(task="rte", data_dir=str(shared_data)))
    assert len(data.search) == 249 and len(data.validation) == 277  # 10 % held out
    assert len(data.train) + len(data.search) + data.extra["dropped_duplicates"] == 2490
    assert len(data.texts("validation")[0]) == 2
    assert set(data.labels("train")) == {0, 1}


def test_custom_files_with_string_labels_and_subsets(tmp_path):
    frame = pd.DataFrame({"q": ["x"] * 6, "a": ["y"] * 6, "verdict": ["yes", "no"] * 3})
    train = write(frame, tmp_path / "t.csv")
    data = load_task_data(DataConfig(train_file=str(train), validation_file=str(train),
                                     text_columns=("q", "a"), label_column="verdict",
                                     max_train_examples=4, search_file=str(train)))
    assert data.preset.label_names == ("no", "yes")
    assert len(data.train) == 4 and len(data.validation) == 6
    assert data.labels("validation").tolist() == [1, 0] * 3


def test_custom_regression(tmp_path):
    frame = pd.DataFrame({"s": ["x", "y", "z"], "score": [0.5, 4.0, 2.25]})
    path = write(frame, tmp_path / "r.tsv")
    data = load_task_data(DataConfig(train_file=str(path), validation_file=str(path),
                                     text_columns=("s",), label_column="score", regression=True,
                                     search_file=str(path)))
    assert data.preset.is_regression and data.labels("train").dtype == np.float32


@pytest.mark.parametrize("cfg, message", [
    (DataConfig(task="sst3", data_dir="x"), "unknown task 'sst3'"),
    (DataConfig(task="sst2", data_dir="/nonexistent"), "no folder"),
    (DataConfig(), "give --task"),
])
def test_config_errors(cfg, message):
    with pytest.raises(NaspruneError, match=message):
        load_task_data(cfg)


def test_misspelled_column_suggests_the_right_one(tmp_path):
    path = write(ROWS, tmp_path / "t.tsv")
    with pytest.raises(NaspruneError, match="did you mean 'sentence'"):
        load_task_data(DataConfig(train_file=str(path), validation_file=str(path),
                                  text_columns=("sentense",)))


def test_empty_file(tmp_path):
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(NaspruneError, match="empty"):
        read_table(tmp_path / "e.csv")
    (tmp_path / "h.csv").write_text("sentence,label\n")
    with pytest.raises(NaspruneError, match="no rows"):
        read_table(tmp_path / "h.csv")


def test_label_outside_label_set(tmp_path):
    bad = write(ROWS.assign(label=[0, 1, 2, 1]), tmp_path / "bad.tsv")
    with pytest.raises(NaspruneError, match="label 2 is not in the label set"):
        load_task_data(DataConfig(task="sst2", train_file=str(bad), validation_file=str(bad)))


def test_no_network_for_hub_gives_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(NaspruneError, match="no network"):
        load_task_data(DataConfig(task="rte"))


def test_tokenise_once_cache_and_dynamic_padding(tmp_path, monkeypatch):
    monkeypatch.setenv("NASPRUNE_CACHE", str(tmp_path / "cache"))
    path = write(ROWS, tmp_path / "t.tsv")
    data = load_task_data(DataConfig(task="sst2", train_file=str(path), validation_file=str(path),
                                     search_file=str(path)))
    tok = tiny_tokenizer()
    first = encode(tok, data, "train")
    assert len(list((tmp_path / "cache").rglob("*.npz"))) == 1
    second = encode(tok, data, "train")
    assert [x.tolist() for x in first.input_ids] == [x.tolist() for x in second.input_ids]
    shapes = [b["input_ids"].shape for b in batches(first, 2)]
    assert shapes[0][1] < shapes[1][1]  # sorted by length, each batch padded to its own max
    for batch in batches(first, 2):
        lengths = batch["attention_mask"].sum(1)
        assert lengths.max() == batch["input_ids"].shape[1]
    assert len(subset(first, 2)) == 2


# ------------------------------------------------------------------------- search split


def _key(frame, columns):
    return set(frame[list(columns)].astype(str).agg("\x1f".join, axis=1))


@pytest.mark.slow
def test_search_split_never_overlaps_training_or_validation(shared_data):
    data = load_task_data(DataConfig(task="sst2", data_dir=str(shared_data),
                                     max_train_examples=8000, seed=3))
    columns = data.preset.text_columns
    assert len(data.search) == 800  # 10 % of the 8,000
    assert not set(data.search["row"]) & set(data.train["row"])  # by row of train.tsv
    assert len(data.train) + len(data.search) + data.extra["dropped_duplicates"] == 8000
    assert not _key(data.search, columns) & _key(data.train, columns)  # by text
    assert not _key(data.search, columns) & _key(data.validation, columns)
    # stratified: the label shares of the split follow the training set's
    assert abs(data.search["label"].mean() - data.train["label"].mean()) < 0.01
    again = load_task_data(DataConfig(task="sst2", data_dir=str(shared_data),
                                      max_train_examples=8000, seed=3))
    assert data.search["row"].tolist() == again.search["row"].tolist()  # fixed for a seed


def test_duplicated_texts_stay_on_one_side(tmp_path):
    texts = [f"text {i % 150}" for i in range(600)]  # every text four times
    frame = pd.DataFrame({"sentence": texts, "label": [i % 2 for i in range(600)]})
    train = write(frame, tmp_path / "train.tsv")
    val = write(pd.DataFrame({"sentence": ["text 7", "other"], "label": [1, 0]}),
                tmp_path / "validation.tsv")
    data = load_task_data(DataConfig(task="sst2", train_file=str(train),
                                     validation_file=str(val)))
    assert not _key(data.search, ("sentence",)) & _key(data.train, ("sentence",))
    assert "text 7" not in _key(data.search, ("sentence",))
    assert data.extra["dropped_duplicates"] > 0


@pytest.mark.parametrize("n_train, split, expected", [
    (60_000, 0.1, 2000), (8000, 0.1, 800), (1000, 0.1, 200), (300, 0.1, 150),
    (5000, 300, 300), (5000, 0.5, 2000)])
def test_search_split_size(n_train, split, expected):
    from nasprune.data.split import search_size

    assert search_size(n_train, split) == expected


def test_search_split_errors(tmp_path):
    with pytest.raises(NaspruneError, match="search-split"):
        DataConfig(task="sst2", search_split=0)
    with pytest.raises(NaspruneError, match="search-split"):
        DataConfig(task="sst2", search_split=2.5)
    path = write(ROWS, tmp_path / "t.tsv")
    # the same file as training and validation data: every training text is a validation
    # one, so nothing can be held out (not "too small for a search split of 0")
    with pytest.raises(NaspruneError, match="no search split can be held out: .* rows have "
                       "a text of the validation set"):
        load_task_data(DataConfig(task="sst2", train_file=str(path), validation_file=str(path)))


def test_unlabeled_distill_file(tmp_path):
    from nasprune.data.encode import concat
    from nasprune.data.io import IGNORE_LABEL

    path = write(ROWS, tmp_path / "t.tsv")
    extra = write(pd.DataFrame({"sentence": ["more text", "and more"]}), tmp_path / "u.csv")
    data = load_task_data(DataConfig(task="sst2", train_file=str(path), validation_file=str(path),
                                     search_file=str(path), distill_file=str(extra)))
    assert data.unlabeled["label"].tolist() == [IGNORE_LABEL] * 2
    tok = tiny_tokenizer()
    both = concat(encode(tok, data, "train"), encode(tok, data, "unlabeled"))
    assert len(both) == 6 and both.labels.tolist()[-2:] == [IGNORE_LABEL] * 2


def test_missing_labels_and_empty_texts_are_refused_or_dropped(tmp_path):
    frame = pd.DataFrame({"text": ["good", "bad", "   ", "fine", "ok", "meh"],
                          "label": ["0", "1", "0", "nan", "", "1"]})
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    cfg = dict(train_file=str(path), validation_file=str(path), search_file=str(path),
               text_columns=("text",))
    with pytest.raises(NaspruneError, match=r"3 rows with an empty text and no label "
                                            r"\(first data rows 3, 4, 5\).*--drop-invalid"):
        load_task_data(DataConfig(**cfg))
    data = load_task_data(DataConfig(**cfg, drop_invalid=True))
    assert data.preset.label_names == ("0", "1")  # never a 'nan' or '' class
    assert len(data.train) == 3 and data.extra["dropped_invalid"]["train"] == 3


def test_a_maximum_length_chosen_from_the_data(tmp_path, monkeypatch):
    """The 99th percentile of the training lengths, up to a multiple of 8, at most the
    model's positions: 99 short sentences and one long one keep the short length."""
    from nasprune.data.encode import chosen_max_length

    monkeypatch.setenv("NASPRUNE_CACHE", str(tmp_path / "cache"))
    words = ["good film"] * 99 + [" ".join(["plot"] * 300)]
    frame = pd.DataFrame({"sentence": words, "label": [1, 0] * 50})
    path = write(frame, tmp_path / "t.tsv")
    data = load_task_data(DataConfig(task="sst2", train_file=str(path), validation_file=str(path),
                                     search_file=str(path)))
    tok = tiny_tokenizer()
    short = len(tok("good film")["input_ids"])
    assert chosen_max_length(tok, data, 512) == -(-short // 8) * 8
    assert chosen_max_length(tok, data, 512, percentile=100) == 304  # 302 tokens, rounded up
    assert chosen_max_length(tok, data, 64, percentile=100) == 64  # never past the positions
