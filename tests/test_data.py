import json

import numpy as np
import pandas as pd
import pytest

from nasprune.data import PRESETS, DataConfig, batches, encode, load_task_data, read_table, subset
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
    data = load_task_data(DataConfig(task="sst2", data_dir=str(tmp_path)))
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


def test_shared_rte_pairs_and_label_names(shared_data):
    data = load_task_data(DataConfig(task="rte", data_dir=str(shared_data)))
    assert len(data.train) == 2490 and len(data.validation) == 277
    assert len(data.texts("validation")[0]) == 2
    assert set(data.labels("train")) == {0, 1}


def test_custom_files_with_string_labels_and_subsets(tmp_path):
    frame = pd.DataFrame({"q": ["x"] * 6, "a": ["y"] * 6, "verdict": ["yes", "no"] * 3})
    train = write(frame, tmp_path / "t.csv")
    data = load_task_data(DataConfig(train_file=str(train), validation_file=str(train),
                                     text_columns=("q", "a"), label_column="verdict",
                                     max_train_examples=4))
    assert data.preset.label_names == ("no", "yes")
    assert len(data.train) == 4 and len(data.validation) == 6
    assert data.labels("validation").tolist() == [1, 0] * 3


def test_custom_regression(tmp_path):
    frame = pd.DataFrame({"s": ["x", "y", "z"], "score": [0.5, 4.0, 2.25]})
    path = write(frame, tmp_path / "r.tsv")
    data = load_task_data(DataConfig(train_file=str(path), validation_file=str(path),
                                     text_columns=("s",), label_column="score", regression=True))
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
    data = load_task_data(DataConfig(task="sst2", train_file=str(path), validation_file=str(path)))
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
