"""The FastAPI app for one model: POST /v1/predict, POST / (the body and answer of Hugging
Face's text-classification API, for ``huggingface_hub.InferenceClient``), /healthz,
/readyz, /v1/model, /metrics, /docs (served from this machine).

Requests are parsed and checked on the event loop and handed to the dynamic batcher
(``batcher.py``); a full queue answers 503 with ``Retry-After``, bad input is always a
4xx, a failed model call a 500.
"""

# No `from __future__ import annotations`: FastAPI must see the real `Request` class in
# the endpoint signatures, which are defined inside create_app.

import asyncio
import contextlib
import json
from pathlib import Path

from nasprune.deploy.serve.batcher import ClientClosed, DynamicBatcher, QueueFull
from nasprune.deploy.serve.body import disconnected, read_body, require_json
from nasprune.deploy.serve.config import ServeConfig
from nasprune.deploy.serve.guard import GuardAndCount
from nasprune.deploy.serve.metrics import Metrics
from nasprune.deploy.serve.predictor import Predictor
from nasprune.deploy.serve.schemas import hf_answer, hf_request_model, request_models
from nasprune.errors import require


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
        threads=config.torch_threads, device=config.device)
    description = predictor.describe()
    PredictRequest, PredictResponse = request_models(config.max_items, config.max_text_chars)
    HFRequest = hf_request_model(config.max_items, config.max_text_chars)

    holder: dict[str, DynamicBatcher] = {}
    metrics = Metrics(lambda: holder["batcher"].depth() if "batcher" in holder else 0)
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
    from nasprune import __version__

    app = fastapi.FastAPI(title="nasprune", version=__version__, lifespan=lifespan,
                          redirect_slashes=False,
                          docs_url=None, redoc_url=None)
    app.state.predictor = predictor
    app.state.batcher = batcher
    app.state.metrics = metrics
    app.state.config = config
    app.state.draining = draining

    app.add_middleware(GuardAndCount, token=config.token, metrics=metrics, draining=draining,
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

    if config.token is None:  # the schema is open then too (as FastAPI's own /docs was)
        from fastapi.responses import HTMLResponse

        from nasprune.deploy.serve.docs_page import docs_html

        @app.get("/docs", include_in_schema=False)
        async def docs():
            """The API on one page built here: no CDN, so it works offline."""
            return HTMLResponse(docs_html(app.openapi()))

    @app.get("/metrics")
    async def prometheus_metrics():
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    schema = {"requestBody": {"required": True, "content": {
        "application/json": {"schema": PredictRequest.model_json_schema()}}}}
    retry = {"Retry-After": str(config.retry_after_s)}

    async def parse(request: Request, model):
        require_json(request)
        body = await read_body(request, config.max_body_bytes, config.body_timeout_s,
                                draining)
        try:
            return model.model_validate_json(body)
        except ValidationError as exc:
            errors = json.loads(exc.json(include_url=False, include_input=False))
            raise HTTPException(422, detail=errors) from None

    async def classify(request: Request, items) -> list[dict]:
        gone = asyncio.ensure_future(disconnected(request.receive))
        try:
            return await batcher.submit(items, timeout=config.request_timeout_s,
                                        cancel_when=gone)
        except QueueFull as exc:
            raise HTTPException(503, detail=str(exc), headers=retry) from None
        except ClientClosed:
            raise
        except Exception:  # noqa: BLE001 - logged once per batch by the batcher
            raise HTTPException(500, detail="inference failed") from None
        finally:
            gone.cancel()

    @app.post("/v1/predict", response_model=PredictResponse, openapi_extra=schema)
    async def predict(request: Request):
        """Classify one text, one pair, or a list of texts/pairs."""
        parsed = await parse(request, PredictRequest)
        return {"predictions": await classify(request, parsed.items())}

    hf_schema = {"requestBody": {"required": True, "content": {
        "application/json": {"schema": HFRequest.model_json_schema()}}}}

    @app.post("/", openapi_extra=hf_schema)
    async def text_classification(request: Request):
        """Hugging Face's text-classification API: ``{"inputs", "parameters"}`` in,
        ``[[{"label", "score"}, ...]]`` (one list per input, best first) out."""
        parsed = await parse(request, HFRequest)
        texts, options = parsed.texts(), parsed.parameters
        if options.truncation is False:
            first = await asyncio.to_thread(predictor.too_long, texts)
            if first is not None:
                raise HTTPException(422, detail=f"inputs[{first}] is longer than "
                                    f"{predictor.max_length} tokens and truncation is false")
        results = await classify(request, [(t, None) for t in texts])
        return [hf_answer(r, predictor.labels, options.function_to_apply, options.top_k)
                for r in results]

    return app


def begin_drain(app) -> None:
    """Shutdown begins: uploads still in progress are answered 503, /readyz says so."""
    app.state.draining.set()
