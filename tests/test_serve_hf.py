"""Hugging Face's own client uses the server: ``huggingface_hub.InferenceClient(base_url=...)
.text_classification`` against a real server on loopback, with its parameters (top_k,
function_to_apply, truncation); /v1/predict is unchanged; /docs works offline."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import httpx
import pytest
from test_serve import make_tiny_classifier

from nasprune.deploy.serve.app import create_app
from nasprune.deploy.serve.config import ServeConfig
from nasprune.deploy.serve.predictor import Predictor
from nasprune.deploy.serve.runner import serve_in_thread

hub = pytest.importorskip("huggingface_hub")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    predictor = Predictor.from_dir(make_tiny_classifier(tmp_path_factory.mktemp("hf") / "m"),
                                   max_length=16)
    with serve_in_thread(create_app(predictor, ServeConfig(max_length=16))) as url:
        yield url, predictor


def test_inference_client_text_classification(server, monkeypatch):
    # the suite runs with HF_HUB_OFFLINE=1, which blocks the client even on loopback
    monkeypatch.setattr(hub.constants, "HF_HUB_OFFLINE", False)
    url, predictor = server
    client = hub.InferenceClient(base_url=url)
    got = client.text_classification("a good fun movie")
    direct = predictor.predict([("a good fun movie", None)])[0]
    assert [g.label for g in got] == sorted(direct["scores"], key=lambda k: -direct["scores"][k])
    for element in got:
        assert math.isclose(element.score, direct["scores"][element.label], abs_tol=1e-6)
    top = client.text_classification("a good fun movie", top_k=1)
    assert len(top) == 1 and top[0].label == direct["label_name"]
    raw = client.text_classification("a good fun movie", function_to_apply="none")
    logits = dict(zip(predictor.labels, direct["logits"]))
    assert all(math.isclose(e.score, logits[e.label], abs_tol=1e-5) for e in raw)
    sig = client.text_classification("a good fun movie", function_to_apply="sigmoid")
    assert all(math.isclose(e.score, 1 / (1 + math.exp(-logits[e.label])), abs_tol=1e-6)
               for e in sig)


def test_hf_shape_for_lists_and_truncation(server):
    url, _ = server
    answer = httpx.post(url + "/", json={"inputs": ["good", "bad film"], "parameters": {}})
    assert answer.status_code == 200
    body = answer.json()
    assert len(body) == 2 and all({"label", "score"} == set(e) for row in body for e in row)
    long = " ".join(["good"] * 40)
    cut = httpx.post(url + "/", json={"inputs": long, "parameters": {"truncation": True}})
    assert cut.status_code == 200
    refused = httpx.post(url + "/", json={"inputs": long, "parameters": {"truncation": False}})
    assert refused.status_code == 422 and "truncation is false" in refused.text
    assert httpx.post(url + "/", json={"inputs": "x", "parameters": {"top_k": 0}}
                      ).status_code == 422
    assert httpx.post(url + "/", json={"inputs": "x", "parameters": {"nope": 1}}
                      ).status_code == 422


def test_v1_predict_is_unchanged(server):
    url, _ = server
    body = httpx.post(url + "/v1/predict", json={"text": "good"}).json()
    assert set(body["predictions"][0]) == {"label", "label_name", "scores", "value"}


def test_docs_work_offline(server):
    url, _ = server
    page = httpx.get(url + "/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower() and "http://" not in page.text.replace(url, "")
    assert "https://" not in page.text
    assert "/openapi.json" in page.text
    assert httpx.get(url + "/openapi.json").status_code == 200


def test_older_clients_options_are_accepted_and_ignored(server):
    url, _ = server
    body = {"inputs": "good", "options": {"wait_for_model": True, "use_cache": False}}
    assert httpx.post(url + "/", json=body).status_code == 200
    assert httpx.post(url + "/", json={"inputs": "x", "options": {"nope": 1}}
                      ).status_code == 422


def test_the_hf_route_has_its_own_metrics_label(server):
    url, _ = server
    httpx.post(url + "/", json={"inputs": "good"})
    httpx.get(url + "/no-such-route")
    text = httpx.get(url + "/metrics").text
    assert 'nasprune_requests_total{path="/",status="200"}' in text
    assert 'nasprune_requests_total{path="other",status="404"}' in text


def test_openapi_names_the_package_version(server):
    from nasprune import __version__

    url, _ = server
    assert httpx.get(url + "/openapi.json").json()["info"]["version"] == __version__


def test_serve_help_lists_every_route():
    env = {"COLUMNS": "200", "PATH": "/usr/bin:/bin",
           **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"}}
    text = subprocess.run([sys.executable, "-m", "nasprune", "serve", "--help"],
                          capture_output=True, text=True, timeout=120, env=env).stdout
    assert "POST /v1/predict" in text and "POST / (Hugging Face" in text
    assert "/docs" in text and "/metrics" in text
