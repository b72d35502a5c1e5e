"""HTTP serving of a sequence classifier with dynamic batching (extra ``[serve]``).

One FastAPI app per model. Requests are parsed and checked on the event loop, their
texts are put on a bounded asyncio queue, and one batcher task groups them (up to
``max_batch_size`` texts or ``max_wait_ms`` of waiting) and runs the model on a single
worker thread, so the event loop keeps accepting requests while the model computes.
Each caller awaits its own future. A full queue answers 503 with ``Retry-After`` instead
of letting latency grow without bound; bad input is always a 4xx.
"""

# No `from __future__ import annotations`: FastAPI must see the real `Request` class in
# the endpoint signatures, which are defined inside create_app.

import asyncio
import contextlib
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nasprune.errors import NaspruneError, require

_log = logging.getLogger("nasprune.serve")

#: One input: a text, or a text pair (premise, hypothesis).
Item = tuple[str, str | None]


@dataclass
class ServeConfig:
    """Everything ``nasprune serve`` takes besides the model directory."""

    host: str = "127.0.0.1"
    port: int = 8000
    max_batch_size: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 256  # requests waiting; beyond this the server answers 503
    token: str | None = None  # bearer token for /v1/* and /metrics; None = open
    max_body_bytes: int = 1_000_000
    max_items: int = 64  # texts (or pairs) per request
    max_text_chars: int = 20_000  # per text, before tokenisation
    max_length: int = 128  # tokens; longer inputs are truncated
    chunk_size: int = 8  # a batch runs length-sorted in chunks of this many (less padding)
    torch_threads: int | None = None  # None = leave torch's default
    retry_after_s: int = 1
    log_level: str = "warning"

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise NaspruneError("max batch size must be >= 1")
        if self.max_wait_ms < 0:
            raise NaspruneError("max wait must be >= 0 ms")
        if self.max_queue < 1:
            raise NaspruneError("max queue must be >= 1")
        if self.max_items < 1 or self.max_text_chars < 1 or self.max_length < 2 or \
                self.chunk_size < 1:
            raise NaspruneError("input limits must be positive")
        if self.token == "":
            self.token = None

    def public_dict(self) -> dict:
        """The configuration without the secret."""
        data = asdict(self)
        data["token"] = "set" if self.token else None
        return data


# --------------------------------------------------------------------------- model


def load_for_inference(model_dir: str | Path, *, threads: int | None = None):
    """``(model, tokenizer)`` in eval mode from a nasprune export or a plain HF directory.

    An export (``subnet.json`` + ``manifest.json``) goes through ``nasprune.export.load``,
    which verifies checksums and builds the pruned architecture (possibly ONNX Runtime);
    anything else through ``AutoModelForSequenceClassification.from_pretrained``.
    """
    path = Path(model_dir).expanduser()
    if not path.is_dir():
        raise NaspruneError(f"model directory not found: {path}")
    if not (path / "config.json").is_file():
        raise NaspruneError(f"{path} is not a model directory (no config.json)")
    loaded = None
    if (path / "subnet.json").is_file() and (path / "manifest.json").is_file():
        try:
            from nasprune import export
        except ImportError:
            export = None
        if export is not None and hasattr(export, "load"):
            loaded = export.load(path, threads=threads)
    if loaded is None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        try:
            model = AutoModelForSequenceClassification.from_pretrained(path)
            tokenizer = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as exc:
            raise NaspruneError(f"cannot load {path}: {str(exc).splitlines()[0]}") from exc
        loaded = (model, tokenizer)
    model, tokenizer = loaded  # a tuple, or an Export (which unpacks the same way)
    if tokenizer is None:
        raise NaspruneError(f"{path} has no tokenizer files; serving needs one")
    model.eval()
    return model, tokenizer


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class Predictor:
    """Tokenise a batch of items and classify it; thread-confined to the worker thread."""

    def __init__(self, model, tokenizer, *, max_length: int = 128, chunk_size: int = 8,
                 model_dir: Path | None = None):
        self.model = model
        self.tokenizer = tokenizer
        config = model.config
        # Never more tokens than the model has positions (a 500 on long inputs otherwise).
        positions = getattr(config, "max_position_embeddings", None) or max_length
        self.max_length = min(max_length, positions)
        self.chunk_size = max(1, chunk_size)
        self.pad_id = int(getattr(tokenizer, "pad_token_id", None) or 0)
        self.model_dir = model_dir
        self.regression = config.problem_type == "regression" or config.num_labels == 1
        id2label = getattr(config, "id2label", None) or {}
        self.labels = [str(id2label.get(i, f"LABEL_{i}")) for i in range(config.num_labels)]

    @classmethod
    def from_dir(cls, model_dir: str | Path, *, max_length: int = 128, chunk_size: int = 8,
                 threads: int | None = None) -> "Predictor":
        model, tokenizer = load_for_inference(model_dir, threads=threads)
        return cls(model, tokenizer, max_length=max_length, chunk_size=chunk_size,
                   model_dir=Path(model_dir))

    def predict(self, items: Sequence[Item]) -> list[dict]:
        """One result per item, in order.

        Items are tokenised unpadded, sorted by length and run in chunks of at most
        ``chunk_size``, each padded only to its own longest input: a batch of mixed
        lengths padded to its longest member wastes most of its compute on padding.
        """
        import torch

        encoded = self._encode(items)
        order = sorted(range(len(items)), key=lambda i: len(encoded[i]["input_ids"]))
        results: list[dict | None] = [None] * len(items)
        with torch.inference_mode():
            for start in range(0, len(order), self.chunk_size):
                chunk = order[start:start + self.chunk_size]
                batch = self._pad([encoded[i] for i in chunk])
                logits = self.model(**batch).logits.float().cpu()
                for row, i in zip(logits, chunk):
                    results[i] = self._result(row)
        return results  # type: ignore[return-value]

    def _encode(self, items: Sequence[Item]) -> list[dict]:
        """Token ids per item; singles and pairs are tokenised in one call each."""
        encoded: list[dict | None] = [None] * len(items)
        singles = [i for i, (_, b) in enumerate(items) if b is None]
        pairs = [i for i, (_, b) in enumerate(items) if b is not None]
        for group, is_pair in ((singles, False), (pairs, True)):
            if not group:
                continue
            first = [items[i][0] for i in group]
            second = [items[i][1] for i in group] if is_pair else None
            enc = self.tokenizer(first, second, truncation=True, max_length=self.max_length)
            for row, i in enumerate(group):
                encoded[i] = {k: enc[k][row] for k in enc.keys()}
        return encoded  # type: ignore[return-value]

    def _pad(self, features: list[dict]) -> dict:
        import torch

        longest = max(len(f["input_ids"]) for f in features)
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        batch = {}
        for key in features[0]:
            fill = self.pad_id if key == "input_ids" else 0
            tensor = torch.full((len(features), longest), fill, dtype=torch.long)
            for row, f in enumerate(features):
                values = torch.tensor(f[key], dtype=torch.long)
                if left:
                    tensor[row, longest - len(values):] = values
                else:
                    tensor[row, :len(values)] = values
            batch[key] = tensor.to(self.model.device)
        return batch

    def _result(self, logits) -> dict:
        if self.regression:
            return {"label": None, "label_name": None, "scores": {}, "value": float(logits[0])}
        probs = logits.softmax(-1).tolist()
        best = max(range(len(probs)), key=probs.__getitem__)
        return {"label": best, "label_name": self.labels[best],
                "scores": dict(zip(self.labels, probs)), "value": None}

    def describe(self) -> dict:
        """What GET /v1/model reports: architecture, sub-network, size, known metric."""
        config = self.model.config
        info: dict[str, Any] = {
            "model_dir": str(self.model_dir) if self.model_dir else None,
            "architecture": (getattr(config, "architectures", None) or
                             [type(self.model).__name__])[0],
            "model_type": getattr(config, "model_type", None),
            "num_layers": getattr(config, "num_hidden_layers", None),
            "hidden_size": getattr(config, "hidden_size", None),
            "parameters": int(sum(p.numel() for p in self.model.parameters())),
            "labels": self.labels,
            "problem_type": "regression" if self.regression else "classification",
            "max_length": self.max_length,
            "chunk_size": self.chunk_size,
            "subnet": None,
            "metrics": None,
        }
        if self.model_dir is not None:
            info["subnet"] = _read_json(self.model_dir / "subnet.json")
            info["metrics"] = _read_json(self.model_dir / "metrics.json")
        return info


# --------------------------------------------------------------------------- batching


class QueueFull(Exception):
    """The batcher's queue is at capacity: the caller should retry later (HTTP 503)."""


@dataclass
class _Pending:
    items: list[Item]
    future: asyncio.Future


class DynamicBatcher:
    """Group queued requests into batches of up to ``max_batch_size`` items.

    The first request of a batch waits at most ``max_wait_ms`` for company; requests
    that arrive while the model is busy are taken together as soon as it is free. A
    request is never split, so one bigger than ``max_batch_size`` runs alone.
    """

    def __init__(self, predict, *, max_batch_size: int, max_wait_ms: float, max_queue: int,
                 metrics: "_Metrics | None" = None):
        self._predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self._metrics = metrics
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._carry: _Pending | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def depth(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    async def start(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nasprune-model")
        self._task = asyncio.create_task(self._run(), name="nasprune-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._queue is not None:
            pending = [self._carry] if self._carry else []
            while not self._queue.empty():
                pending.append(self._queue.get_nowait())
            for p in pending:
                if not p.future.done():
                    p.future.set_exception(QueueFull("server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    async def submit(self, items: list[Item]) -> list[dict]:
        """Queue ``items`` and wait for their results; ``QueueFull`` if there is no room."""
        if self._queue is None:
            raise QueueFull("server is not ready")
        pending = _Pending(items, asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(pending)
        except asyncio.QueueFull:
            raise QueueFull("queue is full") from None
        return await pending.future

    async def _next_batch(self) -> list[_Pending]:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        first = self._carry or await self._queue.get()
        self._carry = None
        batch, size = [first], len(first.items)
        deadline = loop.time() + self.max_wait
        while size < self.max_batch_size:
            try:
                if self._queue.empty():
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    nxt = await asyncio.wait_for(self._queue.get(), remaining)
                else:
                    nxt = self._queue.get_nowait()
            except (asyncio.TimeoutError, asyncio.QueueEmpty):
                break
            if size + len(nxt.items) > self.max_batch_size:
                self._carry = nxt  # starts the next batch
                break
            batch.append(nxt)
            size += len(nxt.items)
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            batch = [p for p in batch if not p.future.done()]  # callers that went away
            if not batch:
                continue
            items = [item for p in batch for item in p.items]
            if self._metrics is not None:
                self._metrics.batch_size.observe(len(items))
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, self._predict, items)
            except asyncio.CancelledError:
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(QueueFull("server is shutting down"))
                raise
            except Exception as exc:  # noqa: BLE001 - a model failure fails this batch only
                _log.exception("inference failed for a batch of %d items", len(items))
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            if self._metrics is not None:
                self._metrics.inference.observe(time.perf_counter() - started)
            offset = 0
            for p in batch:
                n = len(p.items)
                if not p.future.done():
                    p.future.set_result(results[offset:offset + n])
                offset += n


# --------------------------------------------------------------------------- metrics


class _Metrics:
    """Prometheus metrics in a registry of their own, so several apps can live in one process."""

    def __init__(self, queue_depth):
        prom = require("prometheus_client", "serve")
        self.registry = prom.CollectorRegistry()
        self.requests = prom.Counter(
            "nasprune_requests", "HTTP requests by path and status code",
            ["path", "status"], registry=self.registry)
        self.latency = prom.Histogram(
            "nasprune_request_latency_seconds", "Predict request latency, queueing included",
            buckets=(.005, .01, .025, .05, .075, .1, .15, .2, .3, .5, .75, 1, 2, 5, 10),
            registry=self.registry)
        self.batch_size = prom.Histogram(
            "nasprune_batch_size", "Items per model call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry)
        self.inference = prom.Histogram(
            "nasprune_inference_seconds", "Model call duration (tokenisation included)",
            buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5),
            registry=self.registry)
        self.queue_depth = prom.Gauge(
            "nasprune_queue_depth", "Requests waiting for the batcher", registry=self.registry)
        self.queue_depth.set_function(queue_depth)
        self._prom = prom

    def render(self) -> tuple[bytes, str]:
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST


# --------------------------------------------------------------------------- app


def _request_models(max_items: int, max_chars: int):
    """Pydantic models with the configured limits baked in (violations are 422)."""
    from pydantic import BaseModel, ConfigDict, Field, model_validator

    class PredictRequest(BaseModel):
        """Exactly one of ``text`` (optionally with ``text_pair``) or ``texts``.

        ``texts`` items are strings or two-element ``[text, text_pair]`` lists.
        """

        model_config = ConfigDict(extra="forbid")
        text: str | None = Field(default=None, min_length=1, max_length=max_chars)
        text_pair: str | None = Field(default=None, min_length=1, max_length=max_chars)
        texts: list[str | tuple[str, str]] | None = Field(
            default=None, min_length=1, max_length=max_items)

        @model_validator(mode="after")
        def _one_form(self):
            if (self.text is None) == (self.texts is None):
                raise ValueError("give exactly one of 'text' or 'texts'")
            if self.text_pair is not None and self.text is None:
                raise ValueError("'text_pair' goes with 'text'")
            for i, entry in enumerate(self.texts or ()):
                for part in (entry,) if isinstance(entry, str) else entry:
                    if not 1 <= len(part) <= max_chars:
                        raise ValueError(f"texts[{i}]: each text must have 1 to "
                                         f"{max_chars} characters")
            return self

        def items(self) -> list[Item]:
            if self.text is not None:
                return [(self.text, self.text_pair)]
            return [(t, None) if isinstance(t, str) else (t[0], t[1]) for t in self.texts]

    class Prediction(BaseModel):
        label: int | None
        label_name: str | None
        scores: dict[str, float]
        value: float | None = None

    class PredictResponse(BaseModel):
        predictions: list[Prediction]

    return PredictRequest, PredictResponse


def create_app(model: "str | Path | Predictor", config: ServeConfig | None = None):
    """The FastAPI app for one model directory (or an already built ``Predictor``)."""
    fastapi = require("fastapi", "serve")
    from fastapi import HTTPException, Request
    from fastapi.responses import JSONResponse, Response
    from pydantic import ValidationError

    config = config or ServeConfig()
    if config.torch_threads:
        import torch

        torch.set_num_threads(config.torch_threads)
    predictor = model if isinstance(model, Predictor) else Predictor.from_dir(
        model, max_length=config.max_length, chunk_size=config.chunk_size,
        threads=config.torch_threads)
    description = predictor.describe()
    PredictRequest, PredictResponse = _request_models(config.max_items, config.max_text_chars)

    holder: dict[str, DynamicBatcher] = {}
    metrics = _Metrics(lambda: holder["batcher"].depth() if "batcher" in holder else 0)
    batcher = DynamicBatcher(predictor.predict, max_batch_size=config.max_batch_size,
                             max_wait_ms=config.max_wait_ms, max_queue=config.max_queue,
                             metrics=metrics)
    holder["batcher"] = batcher

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    app = fastapi.FastAPI(title="nasprune", version="1", lifespan=lifespan,
                          docs_url="/docs" if config.token is None else None, redoc_url=None)
    app.state.predictor = predictor
    app.state.batcher = batcher
    app.state.metrics = metrics
    app.state.config = config

    app.add_middleware(_GuardAndCount, token=config.token, metrics=metrics)

    @app.get("/healthz")
    async def healthz():
        """The process is up (liveness)."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        """The model is loaded and the batcher is accepting work (readiness)."""
        if not batcher.running:
            return JSONResponse({"status": "not ready"}, status_code=503)
        return {"status": "ready"}

    @app.get("/v1/model")
    async def model_info():
        return {**description, "serving": config.public_dict()}

    @app.get("/metrics")
    async def prometheus_metrics():
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    schema = {"requestBody": {"required": True, "content": {
        "application/json": {"schema": PredictRequest.model_json_schema()}}}}

    @app.post("/v1/predict", response_model=PredictResponse, openapi_extra=schema)
    async def predict(request: Request):
        """Classify one text, one pair, or a list of texts/pairs."""
        body = await _read_body(request, config.max_body_bytes)
        try:
            parsed = PredictRequest.model_validate_json(body)
        except ValidationError as exc:
            errors = json.loads(exc.json(include_url=False, include_input=False))
            raise HTTPException(422, detail=errors) from None
        try:
            results = await batcher.submit(parsed.items())
        except QueueFull as exc:
            raise HTTPException(503, detail=str(exc),
                                headers={"Retry-After": str(config.retry_after_s)}) from None
        except Exception:  # noqa: BLE001 - logged once per batch by the batcher
            raise HTTPException(500, detail="inference failed") from None
        return {"predictions": results}

    return app


class _GuardAndCount:
    """Pure ASGI middleware: bearer-token check, request counts, predict latency.

    ``/healthz`` and ``/readyz`` stay open so that probes need no secret.
    """

    OPEN_PATHS = frozenset({"/healthz", "/readyz"})

    def __init__(self, app, token: str | None, metrics: _Metrics):
        self.app = app
        self.expected = f"Bearer {token}".encode() if token else None
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        label = _path_label(path)
        if self.expected is not None and path not in self.OPEN_PATHS:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                from starlette.responses import JSONResponse

                self.metrics.requests.labels(path=label, status="401").inc()
                response = JSONResponse({"detail": "missing or wrong bearer token"},
                                        status_code=401, headers={"WWW-Authenticate": "Bearer"})
                await response(scope, receive, send)
                return
        status = {"code": 500}

        async def send_and_note(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self.metrics.requests.labels(path=label, status=str(status["code"])).inc()
            if path == "/v1/predict":
                self.metrics.latency.observe(time.perf_counter() - started)


def _path_label(path: str) -> str:
    """Known routes by name, anything else as 'other' (bounded label cardinality)."""
    known = {"/v1/predict", "/v1/model", "/metrics", "/healthz", "/readyz", "/docs",
             "/openapi.json"}
    return path if path in known else "other"


async def _read_body(request, limit: int) -> bytes:
    """The request body, or 413 as soon as it is known to exceed ``limit`` bytes."""
    from fastapi import HTTPException

    too_big = HTTPException(413, detail=f"request body larger than {limit} bytes")
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise too_big
        except ValueError:
            raise HTTPException(400, detail="bad Content-Length") from None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_big
    return bytes(body)


# --------------------------------------------------------------------------- running


def serve(model_dir: str | Path, config: ServeConfig | None = None) -> None:
    """Load the model and serve it with uvicorn until interrupted."""
    uvicorn = require("uvicorn", "serve")
    config = config or ServeConfig()
    if config.token is None and os.environ.get("NASPRUNE_TOKEN"):
        config.token = os.environ["NASPRUNE_TOKEN"]
    app = create_app(model_dir, config)
    uvicorn.run(app, host=config.host, port=config.port, log_level=config.log_level,
                access_log=False)


@contextlib.contextmanager
def serve_in_thread(app, host: str = "127.0.0.1", port: int = 0,
                    log_level: str = "warning") -> Iterator[str]:
    """Run ``app`` under uvicorn on a background thread; yields its base URL.

    ``port=0`` lets the OS pick a free port, so tests and benchmarks never collide.
    """
    uvicorn = require("uvicorn", "serve")
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                           access_log=False, lifespan="on"))
    server.install_signal_handlers = lambda: None  # not the main thread
    thread = threading.Thread(target=server.run, name="nasprune-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise NaspruneError(f"server did not start on {host}:{port}")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
