"""The model card of each export kind (remote code, stock layout with layers dropped, stock
layout with every layer narrower, ONNX + int8) says what is true: the base model as a Hub
id with its license, GLUE with its config, only the removals that happened, layers
numbered from 0 as everywhere else, and a pick by trial id as such."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from test_export import SST2, make_supernet, run_dir, tiny_validation  # noqa: F401

from nasprune.core.subnet import Subnet
from nasprune.deploy.export.card import CardInfo, model_card
from nasprune.deploy.export.measure import flips
from nasprune.deploy.export.writer import export_model
from nasprune.pipeline.export import export_pick

from conftest import tiny_tokenizer

KINDS = {
    "remote": (Subnet(((2, 32), (4, 48), (3, 16), (0, 0))), {}),
    "layer-drop": (Subnet(((4, 64), (0, 0), (4, 64), (0, 0))), {}),
    "uniform": (Subnet(((4, 32),) * 4), {}),
    "onnx-int8": (Subnet(((2, 32), (4, 48), (3, 16), (1, 64))),
                  {"formats": ("onnx",), "quantize": "int8"}),
}


@pytest.fixture(scope="module")
def cards(tmp_path_factory):
    root = tmp_path_factory.mktemp("kinds")
    sn = make_supernet()
    out = {}
    for kind, (subnet, extra) in KINDS.items():
        path = export_model(sn, subnet, root / kind, tokenizer=tiny_tokenizer(),
                            source_model="minilm-l6", validation=(tiny_validation(), SST2),
                            **extra)
        text = (path / "README.md").read_text()
        front, body = text[4:].split("\n---\n", 1)
        out[kind] = (yaml.safe_load(front), body, path)
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_metadata_names_the_hub_model_its_license_and_glue(cards, kind):
    meta, body, _ = cards[kind]
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert meta["license"] == "apache-2.0"
    assert meta["datasets"] == ["glue"]
    dataset = meta["model-index"][0]["results"][0]["dataset"]
    assert (dataset["type"], dataset["config"], dataset["split"]) == ("glue", "sst2",
                                                                    "validation")
    assert "| layer (0-based) |" in body and "\n| 0 |" in body


def test_only_real_removals_are_claimed(cards):
    assert "attention heads removed" not in cards["layer-drop"][1]
    assert ("2 of 4 encoder layers kept; every attention head kept; every FFN unit kept"
            in cards["layer-drop"][1])
    assert "every attention head kept; 128 of 256 FFN units removed (in every layer)" in (
        cards["uniform"][1])


def test_how_much_of_each_was_removed(cards):
    """Every kept layer lost heads: say how many, not "some with fewer" (remote: 3 layers
    kept of 4 heads and 64 units: (2, 32), (4, 48), (3, 16))."""
    body = cards["remote"][1]
    assert ("3 of 4 encoder layers kept; 3 of 12 attention heads removed (in 2 of 3 layers); "
            "96 of 192 FFN units removed (in every layer)") in body
    assert "some with fewer" not in body


def test_int8_card_gives_both_figures_and_the_changed_predictions(cards):
    meta, body, _ = cards["onnx-int8"]
    metrics = json.loads((cards["onnx-int8"][2] / "metrics.json").read_text())
    flips, v = metrics["int8_flips"], metrics["validation"]
    assert flips["changed"] == flips["right_to_wrong"] + flips["wrong_to_right"]  # 2 labels
    assert flips["examples"] == metrics["validation_examples"]
    assert (f"validation accuracy {v['int8']['accuracy']:.4f} against "
            f"{v['float']['accuracy']:.4f} in float32") in body
    assert (f"changes {flips['changed']} of {flips['examples']} predictions "
            f"({flips['right_to_wrong']} right to wrong, {flips['wrong_to_right']} wrong to "
            "right)") in body
    assert "answer with the int8 model by default" in body
    names = [m["name"] for m in meta["model-index"][0]["results"][0]["metrics"]]
    assert names == ["accuracy (validation)", "accuracy (validation, int8)"]


def test_flips_count_each_way():
    before, after = np.array([0, 1, 1, 0, 2]), np.array([1, 1, 0, 0, 0])
    assert flips(before, after, np.array([0, 1, 0, 0, 2])) == {
        "changed": 3, "right_to_wrong": 2, "wrong_to_right": 1, "examples": 5}


def test_batch_sentence_follows_the_measured_figure(cards):
    """The "same answer alone and in its batch" sentence comes from ``batch_1.changed``:
    the same report with 3 changed answers says so instead."""
    path = cards["onnx-int8"][2]
    info = _card_info(path)
    assert info.report["validation"]["int8"]["batch_1"]["changed"] == 0
    assert "same answer alone and in its batch" in model_card(info)
    info.report["validation"]["int8"]["batch_1"]["changed"] = 3
    flipped = model_card(info)
    assert "same answer alone" not in flipped
    assert "Run alone instead of in its batch, 3 of its answers differed" in flipped
    del info.report["validation"]["int8"]["batch_1"]
    assert "alone" not in model_card(info)


def _card_info(path) -> CardInfo:
    """The card's inputs read back from an export."""
    subnet = json.loads((path / "subnet.json").read_text())
    return CardInfo(
        name=path.name, layout=subnet["layout"], subnet=Subnet(tuple(map(tuple,
                                                                       subnet["layers"]))),
        shape=make_supernet().shape, model_type=subnet["model_type"], remote_type=None,
        source_model=None, report=json.loads((path / "metrics.json").read_text()), params=1,
        full_params=2, file_bytes={}, version="0", created="now", quantize="int8")


def test_a_pick_by_trial_id_prints_no_budget_rule(run_dir):  # noqa: F811
    run, _ = run_dir
    card = (export_pick(run, "2") / "README.md").read_text()
    assert "picked: trial 2 (by id, no budget rule)" in card
    assert "pick rule" not in card
