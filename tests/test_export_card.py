"""The model card (README.md) of every export: Hugging Face metadata, every figure with the
split it was measured on, the per-layer shape, size, how it was made and how to load it."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
import yaml
from test_export import SST2, SUBNET, make_supernet, tiny_validation

import nasprune
from nasprune.core.subnet import Subnet
from nasprune.deploy.export.writer import export_model
from nasprune.errors import NaspruneError

from conftest import tiny_tokenizer

DROPPED = Subnet(((4, 48), (0, 0), (4, 48), (0, 0)))
SPLITS = {"search", "validation"}
RECOVERY = {
    "config": {"method": "distill"},
    "before": {"logits_mse": 0.3, "search": {"accuracy": 0.61, "error": 0.39},
               "validation": {"accuracy": 0.58, "error": 0.42}},
    "after": {"logits_mse": 0.1, "search": {"accuracy": 0.71, "error": 0.29},
              "validation": {"accuracy": 0.69, "error": 0.31}},
}
FACTS = {"unpruned": {"validation": {"accuracy": 0.905}, "search": {"accuracy": 0.915}},
         "speedup": {"PyTorch, batch 32": 1.8}, "dataset": "nyu-mll/glue",
         "recipe": {"search space": "layerwise", "trials": 40}}


@pytest.fixture(scope="module")
def cards(tmp_path_factory):
    root = tmp_path_factory.mktemp("cards")
    sn = make_supernet()
    remote = export_model(
        sn, SUBNET, root / "remote", tokenizer=tiny_tokenizer(),
        metrics={"trial": 3, "error": 0.25, "metric": 0.75, "accuracy": 0.75, "params": 1e4},
        source_model="org/tiny-bert", validation=(tiny_validation(), SST2), quantize="int8",
        card=FACTS, recovery=RECOVERY)
    vanilla = export_model(sn, DROPPED, root / "vanilla", metrics={"error": 0.3},
                              source_model=str(root), card={"search_split": "validation"})
    return remote, vanilla


def parse(card: str) -> tuple[dict, list[list[str]], str]:
    """(front matter, rows of the results table, body)."""
    assert card.startswith("---\n")
    front, body = card[4:].split("\n---\n", 1)
    results = body.split("## Results", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in line.strip("|").split("|")]
            for line in results.splitlines() if line.startswith("| ")]
    assert rows[0] == ["model", "split", "metric", "value"]
    return yaml.safe_load(front), rows[1:], body


def test_card_exists_and_is_in_the_manifest(cards):
    for out in cards:
        card = out / "README.md"
        entry = json.loads((out / "manifest.json").read_text())["files"]["README.md"]
        assert entry["sha256"] == hashlib.sha256(card.read_bytes()).hexdigest()


def test_metadata(cards):
    remote, vanilla = cards
    meta, _, _ = parse((remote / "README.md").read_text())
    assert meta["base_model"] == "org/tiny-bert"
    assert meta["pipeline_tag"] == "text-classification"
    assert meta["library_name"] == "transformers"
    assert {"nasprune", "pruned", "custom_code"} <= set(meta["tags"])
    assert meta["datasets"] == ["nyu-mll/glue"]
    result = meta["model-index"][0]["results"][0]
    assert result["dataset"]["split"] == "validation"
    assert (result["dataset"]["type"], result["dataset"]["config"]) == ("nyu-mll/glue", "sst2")
    measured = json.loads((remote / "metrics.json").read_text())["validation"]["float"]
    assert result["metrics"][0] == {"type": "accuracy", "value": measured["accuracy"],
                                    "name": "accuracy (validation)"}
    meta, _, _ = parse((vanilla / "README.md").read_text())
    assert "base_model" not in meta  # a local path is not a hub id
    assert "custom_code" not in meta["tags"] and "model-index" not in meta


def test_every_figure_names_its_split(cards):
    remote, vanilla = cards
    _, rows, body = parse((remote / "README.md").read_text())
    assert all(split in SPLITS for _, split, _, _ in rows), rows
    figures = {(model, split): float(value) for model, split, _, value in rows}
    metrics = json.loads((remote / "metrics.json").read_text())
    assert figures[("unpruned (fine-tuned) model", "validation")] == 0.905
    assert figures[("unpruned (fine-tuned) model", "search")] == 0.915
    assert figures[("this sub-network, in the search (super-network weights)", "search")] == 0.75
    for stage, label in (("before", "extracted, before recovery"), ("after", "after recovery")):
        for split in SPLITS:
            assert figures[(label, split)] == RECOVERY[stage][split]["accuracy"]
    assert figures[("exported, PyTorch float32", "validation")] == pytest.approx(
        metrics["validation"]["float"]["accuracy"], abs=1e-4)
    assert ("exported, int8 (onnxruntime static)", "validation") in figures
    assert "**search**: examples held out of the training data" in body
    assert "**validation**: the task's validation set" in body
    # without a held-out split the search chose on validation, and the card says so
    _, rows, _ = parse((vanilla / "README.md").read_text())
    assert rows == [["this sub-network, in the search (super-network weights)", "validation",
                     "error", "0.3000"]]


def test_shape_size_speed_how_made(cards):
    remote, vanilla = cards
    body = (remote / "README.md").read_text()
    assert "| 0 | 2 / 4 | 32 / 64 | kept |" in body
    assert "| 1 | 0 / 4 | 48 / 64 | kept (no attention) |" in body
    assert "| 3 | 0 / 4 | 0 / 64 | removed |" in body
    params = json.loads((remote / "metrics.json").read_text())["cost"]["params"]
    assert f"- parameters: {params:,} (" in body
    assert "measured speed-up over the unpruned model, PyTorch, batch 32: 1.80x" in body
    assert "recovery: distill" in body and "- search space: layerwise" in body
    assert "`model.safetensors`: " in body
    assert "made with nasprune " in body and "https://" not in body.split("## Results")[0]
    vbody = (vanilla / "README.md").read_text()
    assert "| 2 | 4 / 4 | 48 / 64 | layer 1 |" in vbody  # renumbered in the stock model
    assert "speed-up: not measured" in vbody


def test_how_to_load(cards):
    remote, vanilla = cards
    body = (remote / "README.md").read_text()
    assert 'from_pretrained(\n    "remote", trust_remote_code=True)' in body
    assert "`model_type: nasprune_bert`" in body and 'nasprune.load("remote")' in body
    vbody = (vanilla / "README.md").read_text()
    assert 'AutoModelForSequenceClassification.from_pretrained("vanilla")' in vbody
    assert "trust_remote_code" not in vbody and "no remote code" in vbody


def test_recovery_report_is_written_and_listed(cards):
    remote, _ = cards
    assert json.loads((remote / "recovery.json").read_text()) == RECOVERY
    assert "recovery.json" in json.loads((remote / "manifest.json").read_text())["files"]
    assert nasprune.load(remote).subnet == SUBNET


def test_card_is_valid_markdown_tables(cards):
    for out in cards:
        for line in (out / "README.md").read_text().splitlines():
            if line.startswith("|"):
                assert line.endswith("|") and not re.search(r"\|\s*\|", line[1:-1]), line


def test_bad_card_arguments(tmp_path):
    with pytest.raises(NaspruneError, match="card must be a dict"):
        export_model(make_supernet(), DROPPED, tmp_path / "x", card=["x"])


def test_facts_from_a_run_directory(tmp_path):
    from nasprune.pipeline.export import _facts, run_card_facts

    assert run_card_facts(tmp_path) == {}  # nothing there: no facts, no error
    (tmp_path / "finetune").mkdir()
    (tmp_path / "finetune" / "metrics.json").write_text(json.dumps({
        "best": {"epoch": 2, "accuracy": 0.9, "error": 0.1,
                 "search": {"accuracy": 0.92, "error": 0.08}},
        "selected_on": "search"}))
    (tmp_path / "config.json").write_text(json.dumps({
        "data": {"task": "sst2"}, "pick": "params<=0.5", "recover": "distill",
        "search": {"space": "uniform", "searcher": "local", "trials": 40,
                   "objectives": ["error", "params"]}}))
    facts = run_card_facts(tmp_path)
    assert facts["unpruned"] == {"validation": {"accuracy": 0.9, "error": 0.1},
                                 "search": {"accuracy": 0.92, "error": 0.08}}
    assert facts["search_split"] == "search" and facts["task"] == "sst2"
    assert facts["recipe"] == {"search space": "uniform", "searcher": "local", "trials": 40,
                               "objectives": "error, params", "pick rule": "params<=0.5",
                               "recovery": "distill"}
    # export --recover none of a run made with distill: the card's recipe says none, as
    # its "No recovery step" line does
    recipe = _facts(tmp_path, "params<=0.3", "none")["recipe"]
    assert (recipe["recovery"], recipe["pick rule"]) == ("none", "params<=0.3")
    (tmp_path / "config.json").write_text("[1, 2")
    assert "recipe" not in run_card_facts(tmp_path)
