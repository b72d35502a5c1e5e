"""An answer never depends on the batch: every export backend (PyTorch float, ONNX Runtime
float, ONNX Runtime int8) gives a text the same label and scores (1e-5) alone and inside
any batch, as ``nasprune serve`` runs it; ``/v1/model`` names the backend and precision;
the int8 figures of the card are measured the way the server runs it."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
import torch
from test_serve import make_tiny_classifier

from nasprune.core.subnet import Subnet
from nasprune.core.supernet import Supernet
from nasprune.data.encode import Encoded
from nasprune.data.presets import TaskPreset
from nasprune.deploy.export.backends.onnx import calibration_feeds
from nasprune.deploy.export.writer import export_model
from nasprune.deploy.serve.app import create_app
from nasprune.deploy.serve.config import ServeConfig
from nasprune.deploy.serve.predictor import Predictor
from nasprune.deploy.serve.runner import serve_in_thread
from nasprune.errors import NaspruneError

from conftest import WORDS

pytest.importorskip("onnxruntime")
SST2 = TaskPreset("sst2", ("sentence",), ("negative", "positive"))
BACKENDS = {"torch float": ("torch", False), "onnx float": ("onnx", False),
            "onnx int8": ("onnx", True)}


def sentences(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 30))) for _ in range(n)]


def encoded(tokenizer, texts: list[str]) -> Encoded:
    enc = tokenizer(texts, truncation=True, max_length=64)
    return Encoded([np.array(x) for x in enc["input_ids"]],
                   [np.array(x) for x in enc["token_type_ids"]],
                   np.array([i % 2 for i in range(len(texts))]))


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    from transformers import AutoTokenizer, BertForSequenceClassification

    root = tmp_path_factory.mktemp("batching")
    source = make_tiny_classifier(root / "full")
    torch.manual_seed(1)
    model = BertForSequenceClassification.from_pretrained(source).eval()
    with torch.no_grad():  # a trained-looking spread of activations, not all near zero
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    tokenizer = AutoTokenizer.from_pretrained(source)
    return export_model(Supernet(model), Subnet(((3, 48), (2, 32))), root / "export",
                        tokenizer=tokenizer, formats=("onnx",), quantize="int8",
                        calibration=encoded(tokenizer, sentences(64, seed=1)),
                        validation=(encoded(tokenizer, sentences(40, seed=2)), SST2))


def predictor(export_dir, backend: str, quantized: bool, chunk_size: int) -> Predictor:
    import nasprune

    exp = nasprune.load(export_dir, backend=backend, quantized=quantized)
    return Predictor(exp.model, exp.tokenizer, chunk_size=chunk_size)


@pytest.mark.parametrize("name", BACKENDS)
def test_same_answer_alone_and_in_any_batch(export_dir, name):
    backend, quantized = BACKENDS[name]
    texts = sentences(48, seed=3)
    alone = [predictor(export_dir, backend, quantized, 1).predict([(t, None)])[0] for t in texts]
    for chunk_size, seed in ((8, 0), (32, 1), (48, 2)):
        serving = predictor(export_dir, backend, quantized, chunk_size)
        order = list(range(len(texts)))
        random.Random(seed).shuffle(order)  # other neighbours, other padding
        batched = serving.predict([(texts[i], None) for i in order])
        for got, i in zip(batched, order):
            assert got["label"] == alone[i]["label"], (name, texts[i])
            for label, score in got["scores"].items():
                assert abs(score - alone[i]["scores"][label]) <= 1e-5, (name, texts[i])


def test_int8_is_static_and_measured_as_served(export_dir):
    manifest = json.loads((export_dir / "manifest.json").read_text())
    metrics = json.loads((export_dir / "metrics.json").read_text())
    assert manifest["onnx"]["int8"]["method"] == "onnxruntime static (QDQ)"
    assert manifest["onnx"]["int8"]["calibrated_on"] == "training texts"
    assert "torch_int8" not in manifest["backends"]
    for backend in ("float", "onnx", "int8"):  # alone vs in its batch, on validation
        assert metrics["validation"][backend]["batch_1"]["changed"] == 0
        assert metrics["validation"][backend]["batch_1"]["max_abs_diff"] <= 1e-5
    card = (export_dir / "README.md").read_text()
    assert "static" in card and "same answer alone and in its batch" in card


def test_model_info_names_backend_and_precision(export_dir, monkeypatch):
    for backend, precision in (("onnx", "int8"), ("torch", "float32")):
        monkeypatch.setenv("NASPRUNE_BACKEND", backend)
        if backend == "torch":  # the int8 export in float
            import nasprune

            exp = nasprune.load(export_dir, quantized=False)
            app = create_app(Predictor(exp.model, exp.tokenizer, runtime={
                "backend": exp.backend, "precision": "float32"}), ServeConfig())
        else:
            app = create_app(export_dir, ServeConfig())
        with serve_in_thread(app) as url:
            info = httpx.get(f"{url}/v1/model").json()
        assert (info["backend"], info["precision"]) == (backend, precision)
        if backend == "onnx":  # why int8 when the card's PyTorch row is float32
            assert info["precision_reason"].startswith("the export was made with --quantize "
                                                       "int8")


def test_pytorch_has_no_batch_dependent_int8(export_dir):
    import nasprune

    with pytest.raises(NaspruneError, match="int8 runs on ONNX Runtime"):
        nasprune.load(export_dir, backend="torch", quantized=True)


def test_calibration_feeds_are_one_length(export_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(export_dir)
    feeds = calibration_feeds(encoded(tokenizer, sentences(10, seed=4)),
                              SimpleNamespace(type_vocab_size=2))
    assert len({f["input_ids"].shape for f in feeds}) == 1
    assert all(f["attention_mask"].sum() >= 3 for f in feeds)  # real tokens, then padding
