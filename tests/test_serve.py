"""The serving API contract, against real uvicorn servers on 127.0.0.1 with a tiny model."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from pathlib import Path

import pytest
import torch

from nasprune.deploy.serve.app import create_app
from nasprune.deploy.serve.batcher import DynamicBatcher, QueueFull
from nasprune.deploy.serve.config import ServeConfig
from nasprune.deploy.serve.predictor import Predictor, load_for_inference
from nasprune.deploy.serve.runner import serve_in_thread
from nasprune.errors import NaspruneError

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

WORDS = ["the", "a", "movie", "film", "good", "bad", "great", "awful", "is", "was", "not",
         "very", "fun", "boring", "plot", "actors"]


def make_tiny_classifier(directory: Path) -> Path:
    """A random 2-layer BERT classifier with a 30-word WordPiece vocabulary, saved HF-style."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *"abcdefghijklmnopqrstuvwxyz"]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(directory / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=4, intermediate_size=64,
                        max_position_embeddings=64, num_labels=2,
                        id2label={0: "negative", 1: "positive"},
                        label2id={"negative": 0, "positive": 1})
    BertForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return make_tiny_classifier(tmp_path_factory.mktemp("tiny") / "model")


def described(predictor: Predictor, directory: Path, **files: dict) -> Predictor:
    """``predictor`` reporting ``directory``'s JSON files on /v1/model.

    The files are written after loading: a plain directory holding nasprune's files
    (``metrics.json``, ``subnet.json``) without a manifest is refused by the loader.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (directory / f"{name}.json").write_text(json.dumps(content))
    return Predictor(predictor.model, predictor.tokenizer, max_length=predictor.max_length,
                     chunk_size=predictor.chunk_size, model_dir=directory)


@pytest.fixture(scope="module")
def predictor(model_dir) -> Predictor:
    return described(Predictor.from_dir(model_dir, max_length=32),
                     model_dir.parent / "info" / "model", metrics={"accuracy": 0.5})


@pytest.fixture(scope="module")
def server(predictor):
    app = create_app(predictor, ServeConfig(max_items=4, max_text_chars=200,
                                            max_body_bytes=2_000, max_wait_ms=20))
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server, timeout=30) as c:
        yield c


# --------------------------------------------------------------------------- loading


def test_load_for_inference_plain_hf_directory(model_dir):
    model, tokenizer = load_for_inference(model_dir)
    assert not model.training
    assert model.config.id2label[1] == "positive"
    assert tokenizer("good movie")["input_ids"][0] == tokenizer.cls_token_id


def test_a_plain_directory_with_nasprune_files_is_refused(tmp_path):
    """Finding 1 (the server's side): no manifest = no unverified fallback."""
    directory = make_tiny_classifier(tmp_path / "half-export")
    (directory / "subnet.json").write_text(json.dumps({"layers": [[4, 64], [2, 32]]}))
    with pytest.raises(NaspruneError, match="manifest"):
        load_for_inference(directory)


def test_load_for_inference_rejects_missing_dir(tmp_path):
    with pytest.raises(NaspruneError, match="not found"):
        load_for_inference(tmp_path / "nope")
    with pytest.raises(NaspruneError, match="no config.json"):
        load_for_inference(tmp_path)


def test_long_texts_are_cut_to_the_positions_the_model_has():
    """RoBERTa-style models keep the first positions for padding: a 64-position tiny
    RoBERTa takes 62 tokens, so a longer text is cut there, not at 64 (an out-of-bounds
    position: a 500)."""
    from cases import WORDS, tiny_tokenizer

    from nasprune.core.families.tiny import tiny_model

    model = tiny_model("roberta").eval()
    predictor = Predictor(model, tiny_tokenizer(), max_length=128)
    assert predictor.max_length == 62
    [result] = predictor.predict([(" ".join(WORDS * 10), None)])
    assert result["label_name"] in predictor.labels and len(result["logits"]) == 2


def test_predictor_matches_direct_forward(predictor):
    items = [("a good movie", None), ("the plot", "was boring"), ("bad", None)]
    got = predictor.predict(items)
    tok = predictor.tokenizer
    with torch.inference_mode():
        single = predictor.model(**tok(["a good movie"], return_tensors="pt")).logits[0]
        pair = predictor.model(**tok(["the plot"], ["was boring"], return_tensors="pt")).logits[0]
    for result, logits in ((got[0], single), (got[1], pair)):
        probs = logits.softmax(-1)
        assert result["label"] == int(probs.argmax())
        assert result["label_name"] == ["negative", "positive"][result["label"]]
        assert result["scores"]["positive"] == pytest.approx(float(probs[1]), abs=1e-5)
    assert len(got) == 3 and sum(got[2]["scores"].values()) == pytest.approx(1.0)


def test_length_sorted_chunks_give_the_same_answers(predictor):
    """Sorting by length and padding per chunk must not change any prediction."""
    items = [("good", None), ("the movie was not very fun and the plot was boring", None),
             ("bad film", "the actors were great"), ("a", None), ("fun plot", None),
             ("the", "the movie is good but the plot is awful and boring"), ("great", None)]
    chunked = Predictor(predictor.model, predictor.tokenizer, chunk_size=2).predict(items)
    for (text, pair), got in zip(items, chunked):
        [alone] = predictor.predict([(text, pair)])
        assert got["label"] == alone["label"]
        assert got["scores"]["positive"] == pytest.approx(alone["scores"]["positive"],
                                                          abs=1e-5)


# --------------------------------------------------------------------------- API contract


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}


def test_predict_single_pair_and_list(client, predictor):
    one = client.post("/v1/predict", json={"text": "a good movie"})
    assert one.status_code == 200
    [pred] = one.json()["predictions"]
    direct = predictor.predict([("a good movie", None)])[0]
    direct.pop("logits")  # for the Hugging Face route only; /v1/predict leaves it out
    assert pred == {**direct, "value": None} | {"scores": pytest.approx(pred["scores"])}
    assert set(pred["scores"]) == {"negative", "positive"}

    pair = client.post("/v1/predict", json={"text": "the plot", "text_pair": "was fun"})
    assert pair.status_code == 200 and len(pair.json()["predictions"]) == 1

    many = client.post("/v1/predict", json={"texts": ["good", ["the plot", "was fun"], "bad"]})
    assert many.status_code == 200
    preds = many.json()["predictions"]
    assert len(preds) == 3
    direct = predictor.predict([("good", None), ("the plot", "was fun"), ("bad", None)])
    assert [p["label"] for p in preds] == [d["label"] for d in direct]
    assert preds[1]["scores"]["positive"] == pytest.approx(direct[1]["scores"]["positive"],
                                                           abs=1e-5)


@pytest.mark.parametrize("body", [
    {},
    {"text": ""},
    {"text": 3},
    {"texts": []},
    {"texts": ["ok", ["only one"]]},
    {"texts": ["ok", ["a", "b", "c"]]},
    {"text": "a", "texts": ["b"]},
    {"text_pair": "b"},
    {"text": "a", "surprise": 1},
    {"texts": ["a"] * 5},  # more than max_items
    {"text": "x" * 201},  # longer than max_text_chars
    {"texts": ["ok", "y" * 201]},
])
def test_bad_input_is_422(client, body):
    response = client.post("/v1/predict", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"]


def test_malformed_json_is_4xx(client):
    response = client.post("/v1/predict", content=b"{not json",
                           headers={"content-type": "application/json"})
    assert response.status_code == 422


def test_body_size_limit_is_413(client):
    response = client.post("/v1/predict", content=b'{"text": "' + b"a" * 3_000 + b'"}',
                           headers={"content-type": "application/json"})
    assert response.status_code == 413

    def chunks():  # no Content-Length: the limit is enforced while streaming
        yield b'{"text": "'
        for _ in range(10):
            yield b"a" * 500
        yield b'"}'

    response = client.post("/v1/predict", content=chunks(),
                           headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_wrong_method_and_path_are_4xx(client):
    assert client.get("/v1/predict").status_code == 405
    assert client.get("/v2/nothing").status_code == 404


def test_model_info(client, predictor):
    info = client.get("/v1/model").json()
    assert info["architecture"] == "BertForSequenceClassification"
    assert info["parameters"] == sum(p.numel() for p in predictor.model.parameters())
    assert info["labels"] == ["negative", "positive"]
    assert info["metrics"] == {"accuracy": 0.5}
    assert info["subnet"] is None
    assert info["serving"]["max_items"] == 4 and info["serving"]["token"] is None


def test_model_info_reads_subnet_json(tmp_path):
    directory = make_tiny_classifier(tmp_path / "pruned")
    predictor = described(Predictor.from_dir(directory), directory,
                          subnet={"layers": [[4, 64], [2, 32]]})
    app = create_app(predictor, ServeConfig())
    with serve_in_thread(app) as url:
        info = httpx.get(f"{url}/v1/model").json()
    assert info["subnet"] == {"layers": [[4, 64], [2, 32]]}


def test_serves_a_nasprune_export(tmp_path):
    """An export (pruned architecture, manifest) loads through the export loader."""
    export = pytest.importorskip("nasprune.deploy.export.writer")
    from transformers import BertForSequenceClassification

    from nasprune.core.subnet import Subnet
    from nasprune.core.supernet import Supernet

    source = make_tiny_classifier(tmp_path / "full")
    model = BertForSequenceClassification.from_pretrained(source).eval()
    subnet = Subnet(((2, 32), (1, 16)))
    out = export.export_model(Supernet(model), subnet, tmp_path / "export",
                              tokenizer=load_for_inference(source)[1])
    pruned, _ = load_for_inference(out)
    assert sum(p.numel() for p in pruned.parameters()) < sum(
        p.numel() for p in model.parameters())
    app = create_app(out, ServeConfig())
    with serve_in_thread(app) as url:
        info = httpx.get(f"{url}/v1/model").json()
        got = httpx.post(f"{url}/v1/predict", json={"texts": ["good movie", "bad"]}).json()
    assert Subnet(tuple(map(tuple, info["subnet"]["layers"]))) == subnet
    assert info["parameters"] == sum(p.numel() for p in pruned.parameters())
    direct = app.state.predictor.predict([("good movie", None), ("bad", None)])
    assert [p["label"] for p in got["predictions"]] == [d["label"] for d in direct]


def test_metrics_endpoint_counts_requests(client):
    client.post("/v1/predict", json={"text": "fun"})
    client.post("/v1/predict", json={"text": ""})
    text = client.get("/metrics").text
    assert 'nasprune_requests_total{path="/v1/predict",status="200"}' in text
    assert 'nasprune_requests_total{path="/v1/predict",status="422"}' in text
    assert "nasprune_request_latency_seconds_bucket" in text
    assert "nasprune_batch_size_bucket" in text
    assert "nasprune_queue_depth 0.0" in text


# --------------------------------------------------------------------------- token


def test_bearer_token(predictor):
    app = create_app(predictor, ServeConfig(token="s3cret"))
    with serve_in_thread(app) as url:
        assert httpx.post(f"{url}/v1/predict", json={"text": "good"}).status_code == 401
        bad = httpx.post(f"{url}/v1/predict", json={"text": "good"},
                         headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401 and bad.headers["www-authenticate"] == "Bearer"
        assert httpx.get(f"{url}/metrics").status_code == 401
        assert httpx.get(f"{url}/v1/model").status_code == 401
        assert httpx.get(f"{url}/healthz").status_code == 200  # probes stay open
        auth = {"Authorization": "Bearer s3cret"}
        ok = httpx.post(f"{url}/v1/predict", json={"text": "good"}, headers=auth)
        assert ok.status_code == 200
        assert httpx.get(f"{url}/v1/model", headers=auth).json()["serving"]["token"] == "set"


# --------------------------------------------------------------------------- batching


class SlowPredictor(Predictor):
    """The real tiny model plus a fixed delay per call, so requests pile up."""

    def __init__(self, base: Predictor, delay: float):
        super().__init__(base.model, base.tokenizer, max_length=base.max_length)
        self.delay = delay
        self.calls: list[int] = []

    def predict(self, items):
        self.calls.append(len(items))
        time.sleep(self.delay)
        return super().predict(items)


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in metrics")


async def _concurrent(url: str, bodies: list[dict]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        return await asyncio.gather(*(client.post("/v1/predict", json=b) for b in bodies))


def test_concurrent_requests_are_batched(predictor):
    slow = SlowPredictor(predictor, delay=0.2)
    app = create_app(slow, ServeConfig(max_batch_size=8, max_wait_ms=50))
    texts = ["good movie", "bad plot", "fun", "the actors", "boring", "great film"] * 4
    with serve_in_thread(app) as url:
        responses = asyncio.run(_concurrent(url, [{"text": t} for t in texts]))
        metrics = httpx.get(f"{url}/metrics").text
    assert all(r.status_code == 200 for r in responses)
    direct = predictor.predict([(t, None) for t in texts])
    got = [r.json()["predictions"][0] for r in responses]
    assert [g["label"] for g in got] == [d["label"] for d in direct]  # each caller got its own
    for g, d in zip(got, direct):
        assert g["scores"]["positive"] == pytest.approx(d["scores"]["positive"], abs=1e-5)
    assert max(slow.calls) > 1 and max(slow.calls) <= 8 and sum(slow.calls) == len(texts)
    assert _metric(metrics, "nasprune_batch_size_count") == len(slow.calls)
    assert _metric(metrics, "nasprune_batch_size_sum") == len(texts)
    assert _metric(metrics, 'nasprune_batch_size_bucket{le="1.0"}') < len(slow.calls)


def test_batch_size_one_never_groups(predictor):
    slow = SlowPredictor(predictor, delay=0.05)
    app = create_app(slow, ServeConfig(max_batch_size=1, max_wait_ms=50))
    with serve_in_thread(app) as url:
        responses = asyncio.run(_concurrent(url, [{"text": "good"}] * 6))
    assert [r.status_code for r in responses] == [200] * 6
    assert slow.calls == [1] * 6


def test_full_queue_answers_503_with_retry_after(predictor):
    slow = SlowPredictor(predictor, delay=0.5)
    app = create_app(slow, ServeConfig(max_batch_size=1, max_wait_ms=0, max_queue=1,
                                       retry_after_s=3))
    with serve_in_thread(app) as url:
        responses = asyncio.run(_concurrent(url, [{"text": "good"}] * 6))
        metrics = httpx.get(f"{url}/metrics").text
        after = httpx.post(f"{url}/v1/predict", json={"text": "good"}, timeout=30)
    codes = sorted(r.status_code for r in responses)
    assert set(codes) == {200, 503}, codes
    # All six arrive within milliseconds while the model is busy for 0.5 s: at most one
    # is running and one waits in the queue, the rest are turned away.
    assert 1 <= codes.count(200) <= 2
    rejected = [r for r in responses if r.status_code == 503]
    assert all(r.headers["retry-after"] == "3" for r in rejected)
    assert 'status="503"' in metrics
    assert after.status_code == 200  # it recovers once the queue drains


def test_model_failure_is_500_for_that_batch_only(predictor):
    class Flaky(Predictor):
        def __init__(self):
            super().__init__(predictor.model, predictor.tokenizer)
            self.fail = True

        def predict(self, items):
            if self.fail:
                self.fail = False
                raise RuntimeError("boom")
            return super().predict(items)

    app = create_app(Flaky(), ServeConfig())
    with serve_in_thread(app) as url:
        first = httpx.post(f"{url}/v1/predict", json={"text": "good"})
        second = httpx.post(f"{url}/v1/predict", json={"text": "good"})
    assert first.status_code == 500
    assert second.status_code == 200


def test_batcher_splits_results_per_caller_and_never_splits_a_request():
    seen: list[list] = []

    def echo(items):
        seen.append(list(items))
        time.sleep(0.01)
        return [{"text": a} for a, _ in items]

    async def main():
        batcher = DynamicBatcher(echo, max_batch_size=4, max_wait_ms=30, max_queue=10)
        await batcher.start()
        try:
            calls = [batcher.submit([(f"{i}-{j}", None) for j in range(n)])
                     for i, n in enumerate([1, 3, 2, 5, 1])]
            return await asyncio.gather(*calls)
        finally:
            await batcher.stop()

    results = asyncio.run(main())
    for i, (n, got) in enumerate(zip([1, 3, 2, 5, 1], results)):
        assert [g["text"] for g in got] == [f"{i}-{j}" for j in range(n)]
    assert [len(b) for b in seen] == [4, 2, 5, 1]  # 1+3 | 2 (5 won't fit) | 5 alone | 1


def test_batcher_queue_full_raises():
    release = threading.Event()

    def blocked(items):
        release.wait(5)
        return [{}] * len(items)

    async def main():
        batcher = DynamicBatcher(blocked, max_batch_size=1, max_wait_ms=0, max_queue=1)
        await batcher.start()
        try:
            first = asyncio.ensure_future(batcher.submit([("a", None)]))
            await asyncio.sleep(0.05)  # taken by the batcher, model blocked
            second = asyncio.ensure_future(batcher.submit([("b", None)]))  # waits in queue
            await asyncio.sleep(0.05)
            with pytest.raises(QueueFull):
                await batcher.submit([("c", None)])
            release.set()
            return await asyncio.gather(first, second)
        finally:
            release.set()
            await batcher.stop()

    assert len(asyncio.run(main())) == 2


def test_config_validation():
    with pytest.raises(NaspruneError):
        ServeConfig(max_batch_size=0)
    with pytest.raises(NaspruneError):
        ServeConfig(max_queue=0)
    assert ServeConfig(token="").token is None


# --------------------------------------------------------------------------- issue 16/17


def test_inputs_in_all_three_shapes(client, predictor):
    """`{"inputs": ...}` (Hugging Face inference servers' convention) besides text/texts."""
    one = client.post("/v1/predict", json={"inputs": "a good movie"})
    assert one.status_code == 200, one.text
    [pred] = one.json()["predictions"]
    [direct] = predictor.predict([("a good movie", None)])
    assert pred["label"] == direct["label"]
    assert pred["scores"]["positive"] == pytest.approx(direct["scores"]["positive"], abs=1e-5)

    many = client.post("/v1/predict", json={"inputs": ["good", "bad", "fun plot"]})
    assert many.status_code == 200 and len(many.json()["predictions"]) == 3

    pairs = client.post("/v1/predict", json={"inputs": [["the plot", "was fun"], ["a", "b"]]})
    assert pairs.status_code == 200, pairs.text
    got = pairs.json()["predictions"]
    direct = predictor.predict([("the plot", "was fun"), ("a", "b")])
    assert [g["label"] for g in got] == [d["label"] for d in direct]
    assert got[0]["scores"]["positive"] == pytest.approx(direct[0]["scores"]["positive"],
                                                         abs=1e-5)


@pytest.mark.parametrize("body", [
    {"inputs": ""}, {"inputs": []}, {"inputs": ["ok", ""]}, {"inputs": [["a"]]},
    {"inputs": ["a"] * 5}, {"inputs": "x" * 201}, {"inputs": "a", "text": "b"},
    {"inputs": "a", "texts": ["b"]}, {"inputs": 3},
])
def test_bad_inputs_are_422(client, body):
    assert client.post("/v1/predict", json=body).status_code == 422


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/jsonp"])
def test_predict_requires_application_json(client, content_type):
    """Finding 11: a web page can POST text/plain cross-site without a preflight."""
    headers = {"content-type": content_type} if content_type else {}
    response = client.post("/v1/predict", content=b'{"text": "good"}', headers=headers)
    assert response.status_code == 415, response.text
    assert "application/json" in response.json()["detail"]


def test_json_with_a_charset_is_accepted(client):
    response = client.post("/v1/predict", content=b'{"text": "good"}',
                           headers={"content-type": "Application/JSON; charset=utf-8"})
    assert response.status_code == 200


def test_trailing_slash_never_redirects_to_the_host_header(client):
    """Finding 11: `/v1/predict/` answered 307 to http://<any Host header>/v1/predict."""
    for method, path in (("POST", "/v1/predict/"), ("GET", "/v1/model/"), ("GET", "/healthz/")):
        response = client.request(method, path, json={"text": "good"},
                                  headers={"host": "evil.example"})
        assert response.status_code == 404, (path, response.status_code)
        assert "location" not in response.headers
        assert "evil.example" not in response.text


def test_model_info_shows_no_absolute_paths(tmp_path):
    """Finding 11: /v1/model showed the model's absolute path."""
    directory = make_tiny_classifier(tmp_path / "secret-place" / "pruned")
    predictor = described(
        Predictor.from_dir(directory), directory,
        subnet={"layers": [[4, 64]], "source": str(tmp_path / "runs" / "base"),
                "run_dir": "C:\\Users\\me\\runs\\base"},
        metrics={"accuracy": 0.5, "model": "runs/relative"})
    app = create_app(predictor, ServeConfig())
    with serve_in_thread(app) as url:
        response = httpx.get(f"{url}/v1/model")
    info = response.json()
    assert str(tmp_path) not in response.text and "secret-place" not in response.text
    assert "Users" not in response.text
    assert info["model_dir"] == "pruned"
    assert info["subnet"] == {"layers": [[4, 64]], "source": "base", "run_dir": "base"}
    assert info["metrics"] == {"accuracy": 0.5, "model": "runs/relative"}


def test_metrics_has_model_info_process_and_computed_counters(client):
    client.post("/v1/predict", json={"texts": ["good", "bad"]})
    text = client.get("/metrics").text
    info = next(line for line in text.splitlines() if line.startswith("nasprune_model_info{"))
    assert 'architecture="BertForSequenceClassification"' in info and 'model="model"' in info
    assert info.endswith(" 1.0")
    assert _metric(text, "nasprune_computed_items_total") >= 2
    assert _metric(text, "nasprune_computed_batches_total") >= 1
    assert 'nasprune_dropped_requests_total{reason="client_closed"}' in text
    assert _metric(text, "nasprune_open_connections") >= 1
    if Path("/proc/self/stat").exists():  # prometheus_client's ProcessCollector: Linux
        assert _metric(text, "process_resident_memory_bytes") > 0
        assert _metric(text, "process_open_fds") > 0


class GatedPredictor(Predictor):
    """The real tiny model, but every model call waits until ``gate`` is set."""

    def __init__(self, base: Predictor):
        super().__init__(base.model, base.tokenizer, max_length=base.max_length)
        self.gate = threading.Event()
        self.calls: list[int] = []

    def predict(self, items):
        self.calls.append(len(items))
        if not self.gate.wait(20):
            raise RuntimeError("the test never opened the gate")
        return super().predict(items)


def _wait_for(condition, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _occupy(url: str, body: dict, out: list) -> threading.Thread:
    thread = threading.Thread(target=lambda: out.append(
        httpx.post(f"{url}/v1/predict", json=body, timeout=30)), daemon=True)
    thread.start()
    return thread


HEAVY = {"texts": ["the movie was not very fun and the plot was boring " * 4] * 64}


def test_abandoned_requests_are_never_computed(predictor):
    """Finding 3: 20 heavy requests whose clients gave up were all computed anyway."""
    gated = GatedPredictor(predictor)
    app = create_app(gated, ServeConfig(max_batch_size=64, max_wait_ms=0))
    first: list = []
    with serve_in_thread(app) as url:
        blocker = _occupy(url, {"text": "good"}, first)  # keeps the model busy
        _wait_for(lambda: gated.calls == [1], what="the first model call")

        async def give_up_after_half_a_second():
            async with httpx.AsyncClient(base_url=url, timeout=0.5) as c:
                return await asyncio.gather(*(c.post("/v1/predict", json=HEAVY)
                                              for _ in range(20)), return_exceptions=True)

        outcomes = asyncio.run(give_up_after_half_a_second())
        assert all(isinstance(o, httpx.TimeoutException) for o in outcomes), outcomes

        def dropped() -> float:
            return _metric(httpx.get(f"{url}/metrics").text,
                           'nasprune_dropped_requests_total{reason="client_closed"}')

        _wait_for(lambda: dropped() == 20, what="20 dropped requests")
        gated.gate.set()
        blocker.join(10)
        _wait_for(lambda: app.state.batcher.depth() == 0, what="an empty queue")
        time.sleep(0.1)  # the batcher would have taken any survivor by now
        text = httpx.get(f"{url}/metrics").text
    assert first[0].status_code == 200
    assert gated.calls == [1]  # only the blocker's text reached the model
    assert _metric(text, "nasprune_computed_items_total") == 1
    assert _metric(text, "nasprune_computed_batches_total") == 1
    assert _metric(text, 'nasprune_requests_total{path="/v1/predict",status="499"}') == 20
    assert 'status="500"' not in text


def test_request_timeout_drops_queued_requests_with_503(predictor):
    """A request still queued at its deadline is answered 503 and never computed."""
    gated = GatedPredictor(predictor)
    app = create_app(gated, ServeConfig(max_batch_size=1, max_wait_ms=0,
                                        request_timeout_s=0.5, retry_after_s=2))
    first: list = []
    with serve_in_thread(app) as url:
        blocker = _occupy(url, {"text": "good"}, first)
        _wait_for(lambda: gated.calls == [1], what="the first model call")
        started = time.monotonic()
        queued = httpx.post(f"{url}/v1/predict", json={"text": "bad"}, timeout=30)
        waited = time.monotonic() - started
        gated.gate.set()
        blocker.join(10)
        time.sleep(0.1)
        text = httpx.get(f"{url}/metrics").text
        calls = list(gated.calls)
        after = httpx.post(f"{url}/v1/predict", json={"text": "fun"}, timeout=30)
    assert queued.status_code == 503 and queued.headers["retry-after"] == "2"
    assert "request timeout" in queued.json()["detail"]
    assert 0.4 < waited < 3
    assert first[0].status_code == 200  # running past its deadline: answered with its result
    assert calls == [1]  # the queued one never reached the model
    assert _metric(text, 'nasprune_dropped_requests_total{reason="deadline"}') == 1
    assert after.status_code == 200


def _raw(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def _read_until_closed(sock, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def test_connections_beyond_max_connections_get_503(predictor):
    import socket

    app = create_app(predictor, ServeConfig(max_connections=3))
    with serve_in_thread(app) as url:
        idle = [socket.create_connection(_raw(url)) for _ in range(3)]
        try:
            time.sleep(0.1)
            with socket.create_connection(_raw(url)) as extra:
                answer = _read_until_closed(extra, 5)
            assert answer.startswith(b"HTTP/1.1 503"), answer
        finally:
            for s in idle:
                s.close()
        time.sleep(0.2)
        assert httpx.post(f"{url}/v1/predict", json={"text": "good"}).status_code == 200
        text = httpx.get(f"{url}/metrics").text
    assert _metric(text, 'nasprune_connections_closed_total{reason="max_connections"}') == 1


def test_oversized_request_head_gets_431(predictor):
    import socket

    app = create_app(predictor, ServeConfig(max_header_bytes=4096))
    with serve_in_thread(app) as url, socket.create_connection(_raw(url)) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        s.sendall(b"X-Filler: " + b"a" * 8000 + b"\r\n")
        answer = _read_until_closed(s, 5)
    assert answer.startswith(b"HTTP/1.1 431"), answer


def test_partial_body_gets_408_within_the_body_timeout(predictor):
    import socket

    app = create_app(predictor, ServeConfig(body_timeout_s=0.5))
    with serve_in_thread(app) as url, socket.create_connection(_raw(url)) as s:
        s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\n\r\n{\"text\": ")
        started = time.monotonic()
        answer = _read_until_closed(s, 10)
        waited = time.monotonic() - started
        text = httpx.get(f"{url}/metrics").text
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"connection: close" in answer.lower()
    assert 0.4 < waited < 3
    assert 'nasprune_requests_total{path="/v1/predict",status="408"} 1.0' in text


def test_early_answer_with_an_unread_body_closes_the_connection(predictor):
    """A 415 (or 401, 413) sent before the body was read: the rest is never parsed."""
    import socket

    app = create_app(predictor, ServeConfig())
    with serve_in_thread(app) as url, socket.create_connection(_raw(url)) as s:
        s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                  b"Content-Length: 1000\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n")
        answer = _read_until_closed(s, 5)
    assert answer.startswith(b"HTTP/1.1 415") and answer.count(b"HTTP/1.1") == 1, answer


@pytest.mark.parametrize("kwargs, option", [
    ({"port": 70000}, "--port"), ({"port": -1}, "--port"), ({"port": True}, "--port"),
    ({"host": "256.1.1.1"}, "--host"), ({"host": "bad host"}, "--host"), ({"host": ""}, "--host"),
    ({"max_body_bytes": -1}, "--max-body-bytes"), ({"max_body_bytes": 0}, "--max-body-bytes"),
    ({"torch_threads": 0}, "--threads"), ({"log_level": "loud"}, "--log-level"),
    ({"request_timeout_s": 0}, "--request-timeout"), ({"body_timeout_s": -1}, "--body-timeout"),
    ({"header_timeout_s": float("nan")}, "--header-timeout"),
    ({"max_connections": 0}, "--max-connections"), ({"max_items": 0}, "--max-items"),
    ({"max_length": 1}, "--max-length"), ({"max_wait_ms": -1}, "--max-wait-ms"),
])
def test_serve_config_refuses_bad_values(kwargs, option):
    with pytest.raises(NaspruneError, match=option):
        ServeConfig(**kwargs)


def test_serve_config_accepts_edge_values():
    assert ServeConfig(port=0).port == 0 and ServeConfig(port=65535).port == 65535
    assert ServeConfig(host="::1").host == "::1"
    assert ServeConfig(host="localhost").host == "localhost"
    assert ServeConfig(log_level="DEBUG").log_level == "debug"


def test_batcher_drops_cancelled_and_expired_requests_before_computing():
    seen: list[list] = []
    release = threading.Event()

    def model(items):
        seen.append([a for a, _ in items])
        release.wait(5)
        return [{}] * len(items)

    async def main():
        from nasprune.deploy.serve.batcher import ClientClosed, DeadlineExceeded

        batcher = DynamicBatcher(model, max_batch_size=8, max_wait_ms=0, max_queue=10)
        await batcher.start()
        try:
            first = asyncio.ensure_future(batcher.submit([("first", None)]))
            await asyncio.sleep(0.05)  # the model is busy with "first"
            gone = asyncio.get_running_loop().create_future()
            left = asyncio.ensure_future(batcher.submit([("left", None)], cancel_when=gone))
            late = asyncio.ensure_future(batcher.submit([("late", None)], timeout=0.05))
            kept = asyncio.ensure_future(batcher.submit([("kept", None)]))
            await asyncio.sleep(0.01)
            gone.set_result(None)  # the client of "left" disconnects
            with pytest.raises(ClientClosed):
                await left
            with pytest.raises(DeadlineExceeded):
                await late
            release.set()
            return await asyncio.gather(first, kept)
        finally:
            release.set()
            await batcher.stop()

    assert len(asyncio.run(main())) == 2
    assert seen == [["first"], ["kept"]]


def test_shutdown_answers_what_is_still_running_after_the_drain_time(predictor):
    """Running requests get --drain-timeout; then they are answered 503 (never computed if
    still queued), and the server stops."""
    gated = GatedPredictor(predictor)
    app = create_app(gated, ServeConfig(drain_timeout_s=0.5, max_batch_size=1, max_wait_ms=0))
    running: list = []
    queued: list = []
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(serve_in_thread(app))
        first = _occupy(url, {"text": "good"}, running)
        _wait_for(lambda: gated.calls == [1], what="the first model call")
        second = _occupy(url, {"text": "bad"}, queued)
        time.sleep(0.2)  # queued behind the first
        threading.Timer(1.0, gated.gate.set).start()  # the model call ends after the drain
        started = time.monotonic()
        stack.close()
        stopped = time.monotonic() - started
    first.join(10)
    second.join(10)
    assert running[0].status_code == 503 and queued[0].status_code == 503
    assert "shutting down" in queued[0].text
    assert gated.calls == [1]
    assert stopped < 5, stopped
