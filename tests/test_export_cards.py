"""The model card of each export kind (remote code, stock layout with layers dropped, stock
layout with every layer narrower, ONNX + int8) says what is true: the base model as a Hub
id with its license, GLUE with its config, only the removals that happened, layers
numbered from 0 as everywhere else, and a pick by trial id as such."""

from __future__ import annotations

import pytest
import yaml
from test_export import SST2, make_supernet, run_dir, tiny_validation  # noqa: F401

from nasprune.core.subnet import Subnet
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
        out[kind] = (yaml.safe_load(front), body)
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_metadata_names_the_hub_model_its_license_and_glue(cards, kind):
    meta, body = cards[kind]
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert meta["license"] == "apache-2.0"
    assert meta["datasets"] == ["glue"]
    dataset = meta["model-index"][0]["results"][0]["dataset"]
    assert (dataset["type"], dataset["config"], dataset["split"]) == ("glue", "sst2",
                                                                    "validation")
    assert "| layer (0-based) |" in body and "\n| 0 |" in body


def test_only_real_removals_are_claimed(cards):
    assert "fewer attention heads" not in cards["layer-drop"][1]
    assert "each whole" in cards["layer-drop"][1]
    assert "fewer attention heads" not in cards["uniform"][1]
    assert "with fewer FFN units (every attention head kept)" in cards["uniform"][1]
    assert "fewer attention heads and FFN units" in cards["remote"][1]


def test_int8_card_says_how_it_was_quantized(cards):
    body = cards["onnx-int8"][1]
    assert "static quantization" in body and "same answer alone and in any batch" in body


def test_a_pick_by_trial_id_prints_no_budget_rule(run_dir):  # noqa: F811
    run, _ = run_dir
    card = (export_pick(run, "2") / "README.md").read_text()
    assert "picked: trial 2 (by id, no budget rule)" in card
    assert "pick rule" not in card
