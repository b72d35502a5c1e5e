"""Export: the written directory loads (nasprune and trust_remote_code), computes exactly what
``Supernet.use()`` computed, runs on ONNX Runtime and int8, and refuses damaged files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cases.exports import SUBNET, make_supernet, remote_code_logits  # noqa: F401 - also imported from here

import nasprune
import nasprune.core.structure as structure
from nasprune.core.extract import shrink_structure
from nasprune.core.families import FAMILIES
from nasprune.core.models import uses_token_types
from nasprune.core.subnet import Subnet
from nasprune.core.supernet import Supernet
from nasprune.data.encode import Encoded
from nasprune.data.presets import TaskPreset
from nasprune.deploy.export import modeling_nasprune as remote
from nasprune.deploy.export.backends.onnx_runtime import OnnxClassifier
from nasprune.deploy.export.loader import BACKEND_ENV, choose_backend
from nasprune.deploy.export.writer import export_model
from nasprune.errors import NaspruneError
from nasprune.pipeline.export import export_pick
from nasprune.train.evaluation import evaluate

from conftest import tiny_tokenizer

SST2 = TaskPreset("sst2", ("sentence",), ("negative", "positive"))


def batch(config, rows: int = 3, seq: int = 11, seed: int = 5) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 100, (rows, seq), generator=g)
    mask = torch.ones_like(ids)
    mask[0, seq - 4:] = 0  # padding in a row: the mask must survive export
    out = {"input_ids": ids, "attention_mask": mask}
    if uses_token_types(config):
        out["token_type_ids"] = (torch.arange(seq) >= seq // 2).long().expand(rows, -1)
    return out


def reference_logits(sn: Supernet, subnet: Subnet, inputs: dict) -> torch.Tensor:
    with torch.no_grad(), sn.use(subnet) as model:
        return model(**inputs).logits


def tiny_validation(n: int = 40, seed: int = 0) -> Encoded:
    rng = np.random.default_rng(seed)
    ids = [np.concatenate([[2], rng.integers(5, 60, rng.integers(3, 12)), [3]]).astype(np.int32)
           for _ in range(n)]
    return Encoded(ids, [np.zeros(len(x), np.int8) for x in ids], rng.integers(0, 2, n))


@pytest.fixture(scope="module")
def bert_export(tmp_path_factory):
    """One export with every artefact: HF files, ONNX, int8 ONNX, measured metrics."""
    sn = make_supernet("bert")
    out = tmp_path_factory.mktemp("export") / "bert"
    export_model(sn, SUBNET, out, tokenizer=tiny_tokenizer(), metrics={"error": 0.25},
                    source_model="tiny-bert", formats=("hf", "onnx"), quantize="int8",
                    validation=(tiny_validation(), SST2))
    return sn, out


# ------------------------------------------------------------------- round trip


@pytest.mark.parametrize("family", FAMILIES)
def test_round_trip_matches_supernet_use(family, tmp_path):
    sn = make_supernet(family)
    out = export_model(sn, SUBNET, tmp_path / "out")
    inputs = batch(sn.model.config)
    expected = reference_logits(sn, SUBNET, inputs)
    loaded = nasprune.load(out)
    assert loaded.backend == "torch" and loaded.subnet == SUBNET and loaded.tokenizer is None
    with torch.no_grad():
        got = loaded.model(**inputs).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    # the export is physically smaller: the encoder holds exactly the sub-network's weights
    assert sum(p.numel() for p in loaded.model.parameters()) < sum(
        p.numel() for p in sn.model.parameters())


@pytest.mark.parametrize("family", FAMILIES)
def test_shipped_class_has_the_same_structure_as_extract(family):
    """The remote-code copy of the shrinking must never drift from nasprune's own."""
    sn = make_supernet(family)
    ours = shrink_structure(type(sn.model)(sn.model.config), SUBNET)
    config = ours.config
    theirs = remote.CLASSES[family](config)
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in theirs.state_dict().items()}


def test_directory_contents(bert_export):
    sn, out = bert_export
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "modeling_nasprune.py", "subnet.json",
            "metrics.json", "manifest.json", "model.onnx", "model.int8.onnx",
            "tokenizer_config.json"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl"))]
    config = json.loads((out / "config.json").read_text())
    assert config["nasprune_subnet"] == [list(x) for x in SUBNET.layers]
    assert config["nasprune_source_model"] == "tiny-bert"
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert config["auto_map"]["AutoModelForSequenceClassification"] == \
        "modeling_nasprune.NaspruneBertForSequenceClassification"
    subnet = json.loads((out / "subnet.json").read_text())
    assert Subnet.from_json(json.dumps(subnet)) == SUBNET
    assert subnet["shape"]["num_heads"] == 4 and subnet["kept_layers"] == 3
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["files"]) == names - {"manifest.json"}
    assert manifest["backends"] == {"torch": "model.safetensors", "onnx": "model.onnx",
                                    "onnx_int8": "model.int8.onnx"}
    # cost figures are the analytic ones of the sub-network
    cost = json.loads((out / "metrics.json").read_text())["cost"]
    assert cost["flops"] == nasprune.core.subnet.encoder_flops(SUBNET, sn.shape, 128)
    assert cost["params"] == sum(p.numel() for p in nasprune.load(out, backend="torch",
                                                                  quantized=False
                                                                  ).model.parameters())


def test_remote_files_import_only_torch_and_transformers(bert_export):
    """What transformers checks before running the shipped code (imports outside ``try``)
    needs only torch and transformers, and what it imports relatively is in the export."""
    from transformers.dynamic_module_utils import get_imports, get_relative_import_files

    _, out = bert_export
    shipped = [Path(f) for f in get_relative_import_files(out / "modeling_nasprune.py")]
    assert sorted({f.name for f in shipped}) == list(structure.SHIPPED)  # the whole folder
    allowed = {"torch", "transformers", *sys.stdlib_module_names}
    for path in (out / "modeling_nasprune.py", *shipped):
        assert path.is_file() and set(get_imports(path)) <= allowed, path


def test_trust_remote_code_loads_without_nasprune(bert_export, tmp_path):
    """A user with only transformers: AutoModelForSequenceClassification + remote code."""
    sn, out = bert_export
    inputs = batch(sn.model.config)
    expected = reference_logits(sn, SUBNET, inputs)
    name, logits = remote_code_logits(out, inputs, tmp_path)
    assert name == "NaspruneBertForSequenceClassification"
    torch.testing.assert_close(torch.tensor(logits), expected, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------- ONNX


def test_auto_backend_serves_the_measured_faster_and_env_overrides(bert_export, monkeypatch):
    _, out = bert_export
    speed = json.loads((out / "metrics.json").read_text())["speed"]
    assert set(speed["ms_per_batch"]) == {"1", "8", "32"}
    assert all(set(per) == {"torch", "onnx"} for per in speed["ms_per_batch"].values())
    for size in (1, 8, 32):
        per = speed["ms_per_batch"][str(size)]
        assert speed["faster"][str(size)] == min(per, key=per.get)
        assert nasprune.load(out, quantized=False, batch_size=size).backend == \
            speed["faster"][str(size)]
    assert nasprune.load(out).backend == "onnx"  # int8 is ONNX Runtime's
    manifest = {"backends": {"torch": "model.safetensors", "onnx": "model.onnx"}}
    slow_onnx = {"faster": {"1": "onnx", "32": "torch"}}
    assert choose_backend("auto", manifest, False, slow_onnx, 1) == "onnx"
    assert choose_backend("auto", manifest, False, slow_onnx, 16) == "onnx"  # largest <= 16
    assert choose_backend("auto", manifest, False, slow_onnx, 64) == "torch"
    assert choose_backend("auto", manifest, False, None, 64) == "onnx"  # no timing: ONNX
    monkeypatch.setenv(BACKEND_ENV, "torch")
    assert nasprune.load(out, quantized=False).backend == "torch"
    monkeypatch.setenv(BACKEND_ENV, "tensorflow")
    with pytest.raises(NaspruneError, match="NASPRUNE_BACKEND"):
        nasprune.load(out)


def test_onnx_backend_requested_but_not_exported(tmp_path):
    out = export_model(make_supernet(), SUBNET, tmp_path / "out")
    with pytest.raises(NaspruneError, match="re-export with --format onnx"):
        nasprune.load(out, backend="onnx")


# ------------------------------------------------------------------------- int8


def test_metrics_are_measured_per_backend(bert_export):
    sn, out = bert_export
    metrics = json.loads((out / "metrics.json").read_text())
    validation = tiny_validation()
    with sn.use(SUBNET) as model:
        expected = evaluate(model, validation, SST2)
    v = metrics["validation"]
    assert metrics["task_metric"] == "accuracy" and metrics["validation_examples"] == 40
    assert v["float"]["accuracy"] == pytest.approx(expected["accuracy"])
    assert v["onnx"]["accuracy"] == pytest.approx(expected["accuracy"])
    assert 0.0 <= v["int8"]["accuracy"] <= 1.0
    assert metrics["int8_backend"] == "onnxruntime static"
    assert metrics["int8_change"] == pytest.approx(v["int8"]["accuracy"] - expected["accuracy"])
    assert metrics["search"] == {"error": 0.25}
    assert metrics["onnx_max_abs_diff"] <= 1e-4 and metrics["onnx"]["optimized"]


def test_onnx_int8_runs_and_is_a_quantized_graph(bert_export):
    sn, out = bert_export
    loaded = nasprune.load(out)  # the export was made with --quantize int8
    assert loaded.quantized and loaded.backend == "onnx"
    assert loaded.model.path.name == "model.int8.onnx"
    assert (out / "model.int8.onnx").stat().st_size < (out / "model.onnx").stat().st_size
    inputs = batch(sn.model.config)
    got = loaded.model(**inputs).logits
    expected = reference_logits(sn, SUBNET, inputs)
    assert got.shape == expected.shape and torch.isfinite(got).all()
    assert (got - expected).abs().max() < 0.1  # int8 is close, not exact


def test_int8_without_onnx_format_is_onnx_runtime_int8(tmp_path):
    sn = make_supernet()
    out = export_model(sn, SUBNET, tmp_path / "out", quantize="int8",
                       validation=(tiny_validation(), SST2))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["int8_backend"] == "onnxruntime static"
    assert set(metrics["validation"]) == {"float", "onnx", "int8"}
    loaded = nasprune.load(out)
    assert loaded.quantized and loaded.backend == "onnx"
    # the stored int8 metric is what the loaded int8 model measures
    assert evaluate(loaded.model, tiny_validation(), SST2, device=torch.device("cpu"))[
        "accuracy"] == pytest.approx(metrics["validation"]["int8"]["accuracy"])
    with pytest.raises(NaspruneError, match="int8 runs on ONNX Runtime"):
        nasprune.load(out, backend="torch")


def test_an_old_pytorch_int8_export_says_what_to_do(tmp_path):
    from nasprune.deploy.export.manifest import write

    out = export_model(make_supernet(), SUBNET, tmp_path / "out")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["quantize"] = "int8"
    manifest["backends"]["torch_int8"] = "model.safetensors (dynamic quantization at load)"
    write(out, manifest)  # sealed as the version that wrote PyTorch int8 would have
    with pytest.raises(NaspruneError, match="load it with quantized=False, or re-export"):
        nasprune.load(out)
    assert nasprune.load(out, quantized=False).backend == "torch"


# ----------------------------------------------------------------------- damage


@pytest.fixture
def small_export(tmp_path):
    return export_model(make_supernet(), SUBNET, tmp_path / "out", tokenizer=tiny_tokenizer())


def test_corrupted_weights_fail_the_checksum(small_export):
    weights = small_export / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF  # same size, one weight changed
    weights.write_bytes(bytes(data))
    with pytest.raises(NaspruneError, match="model.safetensors fails its sha256 checksum"):
        nasprune.load(small_export)


def test_truncated_weights_are_reported(small_export):
    weights = small_export / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(NaspruneError, match="model.safetensors has .* bytes.*truncated"):
        nasprune.load(small_export)
    # without checksum verification the file itself is still rejected clearly
    with pytest.raises(NaspruneError, match="unreadable weights"):
        nasprune.load(small_export, verify_checksums=False)


def test_missing_config_is_reported(small_export):
    (small_export / "config.json").unlink()
    with pytest.raises(NaspruneError, match="config.json is missing"):
        nasprune.load(small_export)
    with pytest.raises(NaspruneError, match="config.json is missing"):
        nasprune.load(small_export, verify_checksums=False)


def test_not_an_export(tmp_path):
    with pytest.raises(NaspruneError, match="manifest.json is missing; not a nasprune export"):
        nasprune.load(tmp_path)
    with pytest.raises(NaspruneError, match="not found"):
        nasprune.load(tmp_path / "nowhere")


def test_never_overwrites_foreign_directories(tmp_path):
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "notes.txt").write_text("mine")
    with pytest.raises(NaspruneError, match="not a nasprune export"):
        export_model(make_supernet(), SUBNET, tmp_path / "keep")
    assert (tmp_path / "keep" / "notes.txt").read_text() == "mine"
    out = export_model(make_supernet(), SUBNET, tmp_path / "again")
    other = Subnet(((4, 64),) * 4)
    export_model(make_supernet(), other, out)  # an export is replaced whole
    assert nasprune.load(out).subnet == other
    assert not list(tmp_path.glob("*-export*"))


def test_bad_arguments(tmp_path):
    with pytest.raises(NaspruneError, match="unknown export format"):
        export_model(make_supernet(), SUBNET, tmp_path / "x", formats=("tflite",))
    with pytest.raises(NaspruneError, match="unknown quantization"):
        export_model(make_supernet(), SUBNET, tmp_path / "x", quantize="int4")


# ------------------------------------------------------------ run dir, CLI, serve


@pytest.fixture
def run_dir(tmp_path):
    """A run directory as the pipeline leaves it: supernet/ and search/trials.db."""
    from nasprune.search.store import TrialStore

    sn = make_supernet()
    run = tmp_path / "run"
    sn.save(run / "supernet")
    tiny_tokenizer().save_pretrained(run / "supernet")
    full = sn.shape.full
    with TrialStore.for_run(run) as store:
        store.set_meta("objectives", ["error", "params"])
        store.set_meta("full_subnet", full.to_json())
        store.add(full, {"error": 0.10, "params": 1000.0})
        store.add(SUBNET, {"error": 0.20, "params": 400.0})
        store.add(Subnet(((1, 16),) * 4), {"error": 0.40, "params": 200.0})
    return run, sn


def test_export_from_run_picks_by_budget(run_dir):
    run, sn = run_dir
    out = export_pick(run, "params<=0.5")
    assert out == run / "export"
    loaded = nasprune.load(out)
    assert loaded.subnet == SUBNET and loaded.metrics["search"]["trial"] == 2
    inputs = batch(sn.model.config)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(**inputs).logits,
                                   reference_logits(sn, SUBNET, inputs), rtol=1e-4, atol=1e-5)
    assert loaded.tokenizer is not None
    card = (out / "README.md").read_text()
    assert "| this sub-network, in the search (super-network weights) | search |" in card
    forced = export_pick(run, "largest", run / "full", layout="remote",
                         card={"notes": "forced remote"})
    assert nasprune.load(forced).layout == "remote"
    assert "forced remote" in (forced / "README.md").read_text()


def cli(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "nasprune", *args], capture_output=True,
                          text=True, timeout=timeout,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_cli_export_onnx(run_dir, tmp_path):
    run, _ = run_dir
    result = cli("export", str(run), "--pick", "smallest", "--out", str(tmp_path / "e"),
                 "--format", "hf,onnx")  # a comma list, as run --format takes
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "e" / "model.onnx").is_file()
    assert nasprune.load(tmp_path / "e").subnet == Subnet(((1, 16),) * 4)
    bad = cli("export", str(run), "--pick", "params<=0.01", "--out", str(tmp_path / "f"))
    assert bad.returncode == 2 and "no evaluated sub-network satisfies" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_serve_runs_the_onnx_backend(bert_export, monkeypatch):
    pytest.importorskip("fastapi")
    from nasprune.deploy.serve.predictor import Predictor

    _, out = bert_export
    monkeypatch.setenv(BACKEND_ENV, "onnx")
    predictor = Predictor.from_dir(out)
    assert isinstance(predictor.model, OnnxClassifier)
    results = predictor.predict([("the movie was good", None), ("bad", None)])
    assert [r["label_name"] in ("negative", "positive") for r in results] == [True, True]
    assert predictor.describe()["parameters"] > 0


def test_manifest_paths_stay_inside_the_export(small_export):
    manifest = json.loads((small_export / "manifest.json").read_text())
    manifest["files"]["../outside.txt"] = {"sha256": "0" * 64, "bytes": 1}
    (small_export / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(NaspruneError, match="outside the export"):
        nasprune.load(small_export)


@pytest.mark.slow
def test_minilm_export_on_real_sentences(minilm, shared_data, tmp_path):
    """MiniLM-L6 (real weights, real SST-2 text): every backend agrees with use()."""
    import csv

    import pandas as pd
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = minilm
    torch.manual_seed(0)
    sn = Supernet(AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).eval())
    tokenizer = AutoTokenizer.from_pretrained(path)
    subnet = Subnet(((12, 1536), (6, 768), (0, 1536), (3, 0), (0, 0), (9, 384)))
    train = pd.read_csv(shared_data / "sst2" / "train.tsv", sep="\t",
                        quoting=csv.QUOTE_NONE)["sentence"].head(64).tolist()
    ids = tokenizer(train, truncation=True, max_length=64)
    calibration = Encoded([np.array(x) for x in ids["input_ids"]],
                          [np.array(x) for x in ids["token_type_ids"]], np.zeros(64, int))
    out = export_model(sn, subnet, tmp_path / "minilm", tokenizer=tokenizer,
                       formats=("hf", "onnx"), quantize="int8", calibration=calibration)
    text = pd.read_csv(shared_data / "sst2" / "validation.tsv", sep="\t",
                       quoting=csv.QUOTE_NONE)["sentence"].head(16).tolist()
    inputs = dict(tokenizer(text, padding=True, return_tensors="pt"))
    expected = reference_logits(sn, subnet, inputs)
    for backend, tol in (("torch", 1e-4), ("onnx", 1e-3)):
        loaded = nasprune.load(out, backend=backend, quantized=False)
        with torch.no_grad():
            got = loaded.model(**inputs).logits
        torch.testing.assert_close(got, expected, rtol=0, atol=tol)
    int8 = nasprune.load(out).model(**inputs).logits
    agree = (int8.argmax(-1) == expected.argmax(-1)).float().mean()
    assert agree >= 0.75 and (int8 - expected).abs().max() < 0.5
