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
import math
import os
import re
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nasprune.errors import NaspruneError, require

_log = logging.getLogger("nasprune.deploy.serve.app")

#: One input: a text, or a text pair (premise, hypothesis).
Item = tuple[str, str | None]


#: uvicorn's log levels, the accepted values of ``--log-level``.
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


@dataclass
class ServeConfig:
    """Everything ``nasprune serve`` takes besides the model directory.

    Every value is checked here, before anything is loaded; a bad one is a
    ``NaspruneError`` naming the command-line option.
    """

    host: str = "127.0.0.1"
    port: int = 8000  # 0 = any free port
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
    request_timeout_s: float = 10.0  # queue + model once the body is in; 503 beyond
    header_timeout_s: float = 10.0  # request line + headers, from connect / last response
    body_timeout_s: float = 30.0  # the whole body, from the end of the headers; 408 beyond
    keep_alive_s: float = 5.0  # an idle kept-alive connection is closed after this
    drain_timeout_s: float = 5.0  # on SIGINT/SIGTERM, running requests get this long
    max_connections: int = 512  # open connections; more are answered 503 and closed
    max_header_bytes: int = 32_768  # request line + headers

    def __post_init__(self) -> None:
        from nasprune.deploy.serve.http import check_host

        def positive(value, option: str, *, integer: bool = True, minimum: float = 1) -> None:
            kind = int if integer else (int, float)
            if isinstance(value, bool) or not isinstance(value, kind) or value < minimum or (
                    not integer and not math.isfinite(value)):
                what = "an integer" if integer else "a number"
                raise NaspruneError(f"{option} must be {what} >= {minimum:g}, got {value!r}")

        if isinstance(self.port, bool) or not isinstance(self.port, int) or \
                not 0 <= self.port <= 65535:
            raise NaspruneError(f"--port must be 0..65535 (0 = any free port), got {self.port!r}")
        check_host(self.host)
        positive(self.max_batch_size, "--max-batch-size")
        positive(self.max_wait_ms, "--max-wait-ms", integer=False, minimum=0)
        positive(self.max_queue, "--max-queue")
        positive(self.max_body_bytes, "--max-body-bytes")
        positive(self.max_items, "--max-items")
        positive(self.max_text_chars, "--max-text-chars")
        positive(self.max_length, "--max-length", minimum=2)
        positive(self.chunk_size, "--chunk-size")
        if self.torch_threads is not None:
            positive(self.torch_threads, "--threads")
        positive(self.retry_after_s, "retry_after_s", minimum=0)
        for value, option in ((self.request_timeout_s, "--request-timeout"),
                              (self.header_timeout_s, "--header-timeout"),
                              (self.body_timeout_s, "--body-timeout"),
                              (self.keep_alive_s, "--keep-alive"),
                              (self.drain_timeout_s, "--drain-timeout")):
            positive(value, option, integer=False, minimum=0.001)
        positive(self.max_connections, "--max-connections")
        positive(self.max_header_bytes, "--max-header-bytes", minimum=1024)
        level = str(self.log_level).lower()
        if level not in LOG_LEVELS:
            raise NaspruneError(f"--log-level must be one of {', '.join(LOG_LEVELS)}, "
                                f"got {self.log_level!r}")
        self.log_level = level
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

    ``nasprune.deploy.export.writer.load_model_dir`` decides: a directory holding any of nasprune's
    files is an export, verified whole (checksums, pruned architecture, possibly ONNX
    Runtime) and refused if damaged; only a directory with none of them is loaded with
    ``AutoModelForSequenceClassification.from_pretrained``.
    """
    from nasprune.deploy.export import writer as export

    if hasattr(export, "load_model_dir"):
        loaded = export.load_model_dir(model_dir, threads=threads)
    else:  # an older nasprune.deploy.export.writer
        loaded = _load_plain_or_export(Path(model_dir).expanduser(), threads)
    model, tokenizer = loaded  # a tuple, or an Export (which unpacks the same way)
    if tokenizer is None:
        raise NaspruneError(f"{Path(model_dir).name} has no tokenizer files; serving needs one")
    model.eval()
    return model, tokenizer


def _load_plain_or_export(path: Path, threads: int | None):
    if not path.is_dir():
        raise NaspruneError(f"model directory not found: {path}")
    if not (path / "config.json").is_file():
        raise NaspruneError(f"{path} is not a model directory (no config.json)")
    if (path / "subnet.json").is_file() and (path / "manifest.json").is_file():
        from nasprune.deploy.export import writer as export

        return export.load(path, threads=threads)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        model = AutoModelForSequenceClassification.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise NaspruneError(f"cannot load {path}: {str(exc).splitlines()[0]}") from exc
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
            "model_dir": self.model_dir.name if self.model_dir else None,  # never a full path
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
            info["subnet"] = _without_paths(_read_json(self.model_dir / "subnet.json"))
            info["metrics"] = _without_paths(_read_json(self.model_dir / "metrics.json"))
        return info


_ABSOLUTE = re.compile(r"^(/|~|[A-Za-z]:[\\/]|\\\\)")


def _without_paths(value):
    """JSON with every absolute path (``/home/...``, ``C:\\...``) cut to its last part.

    ``/v1/model`` is readable by any client; the layout of the server's disk is no
    business of theirs.
    """
    if isinstance(value, str):
        if _ABSOLUTE.match(value):
            return re.split(r"[\\/]", value.rstrip("/\\"))[-1] or value[:1]
        return value
    if isinstance(value, dict):
        return {k: _without_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_paths(v) for v in value]
    return value


# --------------------------------------------------------------------------- batching


class QueueFull(Exception):
    """The batcher's queue is at capacity: the caller should retry later (HTTP 503)."""


class DeadlineExceeded(QueueFull):
    """A request was not answered within its deadline (HTTP 503, like a full queue)."""


class ClientClosed(Exception):
    """The client closed its connection before it was answered (counted as status 499)."""


@dataclass
class _Pending:
    items: list[Item]
    future: asyncio.Future
    deadline: float | None = None  # loop time; still queued then = dropped, never computed
    running: bool = False  # handed to the model


class DynamicBatcher:
    """Group queued requests into batches of up to ``max_batch_size`` items.

    The first request of a batch waits at most ``max_wait_ms`` for company; requests
    that arrive while the model is busy are taken together as soon as it is free. A
    request is never split, so one bigger than ``max_batch_size`` runs alone. A request
    whose caller went away (its future is cancelled) or whose deadline passed while it
    waited is dropped before the model sees it.
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

    async def submit(self, items: list[Item], *, timeout: float | None = None,
                     cancel_when: "asyncio.Future | None" = None) -> list[dict]:
        """Queue ``items`` and wait for their results.

        ``QueueFull`` if there is no room; ``DeadlineExceeded`` after ``timeout`` seconds
        (a request still queued then is never computed); ``ClientClosed`` as soon as
        ``cancel_when`` (e.g. "the client disconnected") completes first. In every case
        the request leaves the queue unanswered and the model never sees it unless it was
        already running.
        """
        if self._queue is None:
            raise QueueFull("server is not ready")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout is not None else None
        pending = _Pending(items, loop.create_future(), deadline)
        try:
            self._queue.put_nowait(pending)
        except asyncio.QueueFull:
            raise QueueFull("queue is full") from None
        waiters = {pending.future} if cancel_when is None else {pending.future, cancel_when}
        try:
            done, _ = await asyncio.wait(waiters, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # cancelled (e.g. at the end of a shutdown): drop it
            pending.future.cancel()
            raise
        if pending.future.done():
            return pending.future.result()
        was_running = pending.running
        pending.future.cancel()
        if cancel_when is not None and cancel_when in done:
            if not was_running:
                self._count_dropped("client_closed")
            raise ClientClosed("the client closed the connection while its request was "
                               + ("computed" if was_running else "queued"))
        if not was_running:
            self._count_dropped("deadline")
        raise DeadlineExceeded(f"not answered within the request timeout of {timeout:g} s")

    def _count_dropped(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.dropped.labels(reason=reason).inc()

    async def _get(self) -> _Pending:
        """The next request still wanted (cancelled ones are skipped without a look)."""
        assert self._queue is not None
        while True:
            pending = await self._queue.get()
            if not pending.future.done():
                return pending

    async def _next_batch(self) -> list[_Pending]:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        first = self._carry if self._carry and not self._carry.future.done() else None
        self._carry = None
        first = first or await self._get()
        batch, size = [first], len(first.items)
        deadline = loop.time() + self.max_wait
        while size < self.max_batch_size:
            try:
                if self._queue.empty():
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    nxt = await asyncio.wait_for(self._get(), remaining)
                else:
                    nxt = self._queue.get_nowait()
                    if nxt.future.done():
                        continue
            except (asyncio.TimeoutError, asyncio.QueueEmpty):
                break
            if size + len(nxt.items) > self.max_batch_size:
                self._carry = nxt  # starts the next batch
                break
            batch.append(nxt)
            size += len(nxt.items)
        return batch

    def _still_wanted(self, batch: list[_Pending], now: float) -> list[_Pending]:
        """Drop callers that went away and requests whose deadline passed in the queue."""
        kept = []
        for p in batch:
            if p.future.done():
                continue
            if p.deadline is not None and now >= p.deadline:
                p.future.set_exception(DeadlineExceeded(
                    "not answered within the request timeout (dropped from the queue)"))
                self._count_dropped("deadline")
                continue
            kept.append(p)
        return kept

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = self._still_wanted(await self._next_batch(), loop.time())
            if not batch:
                continue
            items = [item for p in batch for item in p.items]
            for p in batch:
                p.running = True
            if self._metrics is not None:
                self._metrics.batch_size.observe(len(items))
                self._metrics.computed_batches.inc()
                self._metrics.computed_items.inc(len(items))
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
        self.computed_batches = prom.Counter(
            "nasprune_computed_batches", "Model calls made", registry=self.registry)
        self.computed_items = prom.Counter(
            "nasprune_computed_items", "Texts (or pairs) handed to the model",
            registry=self.registry)
        self.dropped = prom.Counter(
            "nasprune_dropped_requests",
            "Requests dropped from the queue before the model saw them: their client went "
            "away (client_closed) or their --request-timeout passed (deadline)",
            ["reason"], registry=self.registry)
        for reason in ("client_closed", "deadline"):
            self.dropped.labels(reason=reason)
        self.connections_closed = prom.Counter(
            "nasprune_connections_closed",
            "Connections the server closed: request head too slow (header_timeout) or too "
            "large (header_too_large), or over --max-connections (max_connections)",
            ["reason"], registry=self.registry)
        for reason in ("header_timeout", "header_too_large", "max_connections"):
            self.connections_closed.labels(reason=reason)
        self.open_connections = prom.Gauge(
            "nasprune_open_connections", "Open HTTP connections", registry=self.registry)
        self.model_info = prom.Info("nasprune_model", "The served model",
                                    registry=self.registry)
        prom.ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, RSS, fds
        self._prom = prom

    def describe_model(self, description: dict) -> None:
        keys = ("model_dir", "architecture", "model_type", "num_layers", "hidden_size",
                "parameters", "problem_type", "max_length")
        self.model_info.info({("model" if k == "model_dir" else k): str(description.get(k))
                              for k in keys})

    def render(self) -> tuple[bytes, str]:
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST


# --------------------------------------------------------------------------- app


def _request_models(max_items: int, max_chars: int):
    """Pydantic models with the configured limits baked in (violations are 422)."""
    from pydantic import BaseModel, ConfigDict, Field, model_validator

    class PredictRequest(BaseModel):
        """Exactly one of ``text`` (optionally with ``text_pair``), ``texts`` or ``inputs``.

        ``texts`` items are strings or two-element ``[text, text_pair]`` lists. ``inputs``
        (the convention of Hugging Face inference servers) is a string, or a list like
        ``texts``.
        """

        model_config = ConfigDict(extra="forbid")
        text: str | None = Field(default=None, min_length=1, max_length=max_chars)
        text_pair: str | None = Field(default=None, min_length=1, max_length=max_chars)
        texts: list[str | tuple[str, str]] | None = Field(
            default=None, min_length=1, max_length=max_items)
        inputs: str | list[str | tuple[str, str]] | None = None

        @model_validator(mode="after")
        def _one_form(self):
            given = [name for name in ("text", "texts", "inputs")
                     if getattr(self, name) is not None]
            if len(given) != 1:
                raise ValueError("give exactly one of 'text', 'texts' or 'inputs'")
            if self.text_pair is not None and self.text is None:
                raise ValueError("'text_pair' goes with 'text'")
            name = given[0]
            entries = getattr(self, name)
            if isinstance(entries, str):
                entries = [entries]
            if not entries:
                raise ValueError(f"{name}: give at least one input")
            if len(entries) > max_items:
                raise ValueError(f"{name}: at most {max_items} inputs per request")
            for i, entry in enumerate(entries):
                for part in (entry,) if isinstance(entry, str) else entry:
                    if not 1 <= len(part) <= max_chars:
                        raise ValueError(f"{name}[{i}]: each text must have 1 to "
                                         f"{max_chars} characters")
            return self

        def items(self) -> list[Item]:
            if self.text is not None:
                return [(self.text, self.text_pair)]
            entries = self.texts if self.texts is not None else self.inputs
            if isinstance(entries, str):
                return [(entries, None)]
            return [(t, None) if isinstance(t, str) else (t[0], t[1]) for t in entries]

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
    metrics.describe_model(description)
    batcher = DynamicBatcher(predictor.predict, max_batch_size=config.max_batch_size,
                             max_wait_ms=config.max_wait_ms, max_queue=config.max_queue,
                             metrics=metrics)
    holder["batcher"] = batcher
    draining = asyncio.Event()  # set when shutdown begins (see begin_drain)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()

    # redirect_slashes=False: Starlette's trailing-slash redirect builds an absolute URL
    # from the request's Host header, which any client can set.
    app = fastapi.FastAPI(title="nasprune", version="1", lifespan=lifespan,
                          redirect_slashes=False,
                          docs_url="/docs" if config.token is None else None, redoc_url=None)
    app.state.predictor = predictor
    app.state.batcher = batcher
    app.state.metrics = metrics
    app.state.config = config
    app.state.draining = draining

    app.add_middleware(_GuardAndCount, token=config.token, metrics=metrics, draining=draining,
                       retry_after_s=config.retry_after_s)

    @app.get("/healthz")
    async def healthz():
        """The process is up (liveness)."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        """The model is loaded and the batcher is accepting work (readiness)."""
        if not batcher.running or draining.is_set():
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
    retry = {"Retry-After": str(config.retry_after_s)}

    @app.post("/v1/predict", response_model=PredictResponse, openapi_extra=schema)
    async def predict(request: Request):
        """Classify one text, one pair, or a list of texts/pairs."""
        _require_json(request)
        body = await _read_body(request, config.max_body_bytes, config.body_timeout_s,
                                draining)
        try:
            parsed = PredictRequest.model_validate_json(body)
        except ValidationError as exc:
            errors = json.loads(exc.json(include_url=False, include_input=False))
            raise HTTPException(422, detail=errors) from None
        gone = asyncio.ensure_future(_disconnected(request.receive))
        try:
            results = await batcher.submit(parsed.items(), timeout=config.request_timeout_s,
                                           cancel_when=gone)
        except QueueFull as exc:
            raise HTTPException(503, detail=str(exc), headers=retry) from None
        except ClientClosed:
            raise
        except Exception:  # noqa: BLE001 - logged once per batch by the batcher
            raise HTTPException(500, detail="inference failed") from None
        finally:
            gone.cancel()
        return {"predictions": results}

    return app


def begin_drain(app) -> None:
    """Shutdown begins: uploads still in progress are answered 503, /readyz says so."""
    app.state.draining.set()


def _require_json(request) -> None:
    """415 unless the body is declared JSON (a web page may POST text/plain cross-site)."""
    from fastapi import HTTPException

    declared = request.headers.get("content-type", "")
    if declared.split(";", 1)[0].strip().lower() != "application/json":
        raise HTTPException(415, detail="Content-Type must be application/json")


async def _disconnected(receive) -> None:
    """Returns once the client has gone (to be called after the body is read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class _Draining(Exception):
    pass


async def _receive_until(receive, timeout: float, draining: asyncio.Event | None):
    """The next ASGI message, ``None`` after ``timeout`` s, ``_Draining`` once draining."""
    received = asyncio.ensure_future(receive())
    waiters = {received}
    stop = None
    if draining is not None:
        stop = asyncio.ensure_future(draining.wait())
        waiters.add(stop)
    try:
        await asyncio.wait(waiters, timeout=timeout if math.isfinite(timeout) else None,
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            if not waiter.done():
                waiter.cancel()
    if received.done() and not received.cancelled():
        return received.result()
    if stop is not None and stop.done():
        raise _Draining
    return None


class _GuardAndCount:
    """Pure ASGI middleware: bearer-token check, request counts, predict latency.

    ``/healthz`` and ``/readyz`` stay open so that probes need no secret. It also

    - answers with ``Connection: close`` whenever the request body was not read to its
      end (a 401/413/415 before the upload finished), so a left-over body is never parsed
      as the next request;
    - counts a client that went away before its answer as status 499 (nginx's "client
      closed request") and logs one line instead of uvicorn's traceback;
    - answers 503 to requests still running when the shutdown's drain time is up.
    """

    OPEN_PATHS = frozenset({"/healthz", "/readyz"})

    def __init__(self, app, token: str | None, metrics: _Metrics,
                 draining: asyncio.Event | None = None, retry_after_s: int = 1):
        self.app = app
        self.expected = f"Bearer {token}".encode() if token else None
        self.metrics = metrics
        self.draining = draining
        self.retry_after = str(retry_after_s).encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        label = _path_label(path)
        headers = dict(scope["headers"])
        state = {"status": None, "body_done": not _has_body(headers), "gone": False}

        async def receive_and_note():
            message = await receive()
            if message["type"] == "http.disconnect":
                state["gone"] = True
            elif not message.get("more_body", False):
                state["body_done"] = True
            return message

        async def send_and_note(message):
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                sent = list(message.get("headers", []))
                if not state["body_done"] and not any(k.lower() == b"connection"
                                                      for k, _ in sent):
                    message = {**message, "headers": [*sent, (b"connection", b"close")]}
            await send(message)

        started = time.perf_counter()
        try:
            if self.expected is not None and path not in self.OPEN_PATHS:
                given = headers.get(b"authorization", b"")
                if not hmac.compare_digest(given, self.expected):
                    from starlette.responses import JSONResponse

                    response = JSONResponse({"detail": "missing or wrong bearer token"},
                                            status_code=401,
                                            headers={"WWW-Authenticate": "Bearer"})
                    await response(scope, receive_and_note, send_and_note)
                    return
            await self.app(scope, receive_and_note, send_and_note)
        except ClientClosed as exc:
            state["gone"] = True
            _log.info("%s %s: %s", _client(scope), path, exc)
        except asyncio.CancelledError:
            if self.draining is None or not self.draining.is_set():
                raise
            # uvicorn cancels what is still running when the drain time is up.
            _log.warning("%s %s: still running when the drain time was up; answered 503",
                         _client(scope), path)
            if state["status"] is None:
                await _plain(send_and_note, 503, b"server is shutting down",
                             [(b"retry-after", self.retry_after), (b"connection", b"close")])
        finally:
            code = state["status"]
            if state["gone"] and (code is None or code < 400):
                code = 499  # the client left before (or while) it was answered
            self.metrics.requests.labels(path=label, status=str(code or 500)).inc()
            if path == "/v1/predict":
                self.metrics.latency.observe(time.perf_counter() - started)


def _has_body(headers: dict) -> bool:
    length = headers.get(b"content-length", b"0").strip()
    return (length not in (b"", b"0")) or b"chunked" in headers.get(b"transfer-encoding", b"")


def _client(scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else "client"


async def _plain(send, status: int, text: bytes, headers: list) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(text)).encode()), *headers]})
    await send({"type": "http.response.body", "body": text, "more_body": False})


def _path_label(path: str) -> str:
    """Known routes by name, anything else as 'other' (bounded label cardinality)."""
    known = {"/v1/predict", "/v1/model", "/metrics", "/healthz", "/readyz", "/docs",
             "/openapi.json"}
    return path if path in known else "other"


async def _read_body(request, limit: int, timeout: float = math.inf,
                     draining: asyncio.Event | None = None) -> bytes:
    """The request body within ``timeout`` seconds.

    413 as soon as it is known to exceed ``limit`` bytes, 408 when it is not complete in
    time, 503 when shutdown begins during the upload, ``ClientClosed`` when the client
    goes away. Every error answer closes the connection (the rest of the body is unread).
    """
    from fastapi import HTTPException

    close = {"Connection": "close"}
    too_big = HTTPException(413, detail=f"request body larger than {limit} bytes",
                            headers=close)
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise too_big
        except ValueError:
            raise HTTPException(400, detail="bad Content-Length", headers=close) from None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    body = bytearray()
    while True:
        try:
            message = await _receive_until(request.receive, deadline - loop.time(), draining)
        except _Draining:
            raise HTTPException(503, detail="server is shutting down",
                                headers={**close, "Retry-After": "1"}) from None
        if message is None:
            raise HTTPException(408, detail=f"request body not received within {timeout:g} s",
                                headers=close)
        if message["type"] == "http.disconnect":
            raise ClientClosed(f"the client closed the connection during the upload "
                               f"({len(body)} bytes received)")
        body += message.get("body", b"")
        if len(body) > limit:
            raise too_big
        if not message.get("more_body", False):
            return bytes(body)


# --------------------------------------------------------------------------- running


def _uvicorn_server(app, config: ServeConfig, log_level: str | None = None):
    """A uvicorn server for ``app`` with nasprune's connection guard and drain."""
    uvicorn = require("uvicorn", "serve")
    from nasprune.deploy.serve.http import draining_server_class, guarded_protocol

    metrics: _Metrics = app.state.metrics
    protocol = guarded_protocol(
        header_timeout=config.header_timeout_s, max_header_bytes=config.max_header_bytes,
        max_connections=config.max_connections,
        on_close=lambda reason: metrics.connections_closed.labels(reason=reason).inc())
    uv_config = uvicorn.Config(
        app, host=config.host, port=config.port, log_level=log_level or config.log_level,
        access_log=False, lifespan="on", http=protocol,
        timeout_keep_alive=config.keep_alive_s,
        timeout_graceful_shutdown=config.drain_timeout_s,
        h11_max_incomplete_event_size=config.max_header_bytes)
    server = draining_server_class()(uv_config)
    server.on_drain = lambda: begin_drain(app)
    metrics.open_connections.set_function(lambda: len(server.server_state.connections))
    return server


def serve(model_dir: str | Path, config: ServeConfig | None = None, *,
          announce=None, before_load=None) -> None:
    """Load the model and serve it with uvicorn until interrupted (SIGINT/SIGTERM).

    The address is bound first, so a bad or busy one fails before anything heavy is
    imported or loaded; then ``before_load()`` runs (if given), the model loads, and
    ``announce(url)`` is called with the real port just before uvicorn starts.
    """
    from nasprune.deploy.serve.http import bind_socket, raise_open_file_limit

    config = config or ServeConfig()
    if config.token is None and os.environ.get("NASPRUNE_TOKEN"):
        config.token = os.environ["NASPRUNE_TOKEN"]
    raise_open_file_limit(config.max_connections)
    sock = bind_socket(config.host, config.port)
    try:
        require("uvicorn", "serve")
        require("fastapi", "serve")
        if before_load is not None:
            before_load()
        _setup_logging(config.log_level)
        app = create_app(model_dir, config)
        server = _uvicorn_server(app, config)
        if announce is not None:
            announce(_url(config.host, sock.getsockname()[1]))
        server.run(sockets=[sock])
    finally:
        sock.close()


def _setup_logging(level: str) -> None:
    """nasprune.deploy.serve.app's one-line messages in uvicorn's format and at its level."""
    from uvicorn.logging import DefaultFormatter

    numeric = {"trace": 5}.get(level, getattr(logging, level.upper(), logging.INFO))
    if not _log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(DefaultFormatter("%(levelprefix)s %(message)s"))
        _log.addHandler(handler)
        _log.propagate = False
    _log.setLevel(numeric)


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@contextlib.contextmanager
def serve_in_thread(app, host: str = "127.0.0.1", port: int = 0,
                    log_level: str = "warning") -> Iterator[str]:
    """Run ``app`` under uvicorn on a background thread; yields its base URL.

    ``port=0`` lets the OS pick a free port, so tests and benchmarks never collide. The
    app's ``ServeConfig`` timeouts and limits apply, as under ``serve``.
    """
    from nasprune.deploy.serve.http import bind_socket

    config = getattr(app.state, "config", None) or ServeConfig()
    sock = bind_socket(host, port)
    server = _uvicorn_server(app, config, log_level=log_level)
    server.install_signal_handlers = lambda: None  # not the main thread
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                              name="nasprune-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise NaspruneError(f"server did not start on {host}:{port}")
        time.sleep(0.02)
    bound = sock.getsockname()[1]
    try:
        yield _url(host, bound)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
