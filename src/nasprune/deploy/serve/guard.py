"""The ASGI middleware in front of every route: bearer token, request counts and latency,
499 for clients that left, 503 for requests cut off by the end of a shutdown's drain."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time

from nasprune.deploy.serve.batcher import ClientClosed
from nasprune.deploy.serve.metrics import Metrics

_log = logging.getLogger("nasprune.deploy.serve")


class GuardAndCount:
    """Pure ASGI middleware: bearer-token check, request counts, predict latency.

    The token is checked as ``Bearer TOKEN`` with the scheme in any case; a request with
    more than one ``Authorization`` header is answered 400 (proxies disagree on which
    one counts).

    ``/healthz`` and ``/readyz`` stay open so that probes need no secret. It also

    - answers with ``Connection: close`` whenever the request body was not read to its
      end (a 401/413/415 before the upload finished), so a left-over body is never parsed
      as the next request;
    - counts a client that went away before its answer as status 499 (nginx's "client
      closed request") and logs one line instead of uvicorn's traceback;
    - answers 503 to requests still running when the shutdown's drain time is up.
    """

    OPEN_PATHS = frozenset({"/healthz", "/readyz"})

    def __init__(self, app, token: str | None, metrics: Metrics,
                 draining: asyncio.Event | None = None, retry_after_s: int = 1):
        self.app = app
        self.token = token.encode() if token else None
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
        authorization = [v for k, v in scope["headers"] if k.lower() == b"authorization"]
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
            if self.token is not None and path not in self.OPEN_PATHS:
                refusal = None
                if len(authorization) > 1:  # which one would count is up to each proxy
                    refusal = (400, "more than one Authorization header", {})
                elif not _bearer_matches(authorization[0] if authorization else b"",
                                         self.token):
                    refusal = (401, "missing or wrong bearer token",
                               {"WWW-Authenticate": "Bearer"})
                if refusal is not None:
                    from starlette.responses import JSONResponse

                    status, detail, extra = refusal
                    response = JSONResponse({"detail": detail}, status_code=status,
                                            headers=extra)
                    await response(scope, receive_and_note, send_and_note)
                    return
            await self.app(scope, receive_and_note, send_and_note)
        except ClientClosed as exc:
            state["gone"] = True
            if "nasprune.status" not in scope:  # else the connection guard answered it
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
            code = scope.get("nasprune.status", state["status"])  # 413 by the guard
            if state["gone"] and (code is None or code < 400):
                code = 499  # the client left before (or while) it was answered
            self.metrics.requests.labels(path=label, status=str(code or 500)).inc()
            if path == "/v1/predict":
                self.metrics.latency.observe(time.perf_counter() - started)


def _bearer_matches(header: bytes, token: bytes) -> bool:
    """``Authorization: Bearer TOKEN``; the scheme is case-insensitive (RFC 9110)."""
    scheme, _, credentials = header.strip().partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), token)


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
    known = {"/", "/v1/predict", "/v1/model", "/metrics", "/healthz", "/readyz", "/docs",
             "/openapi.json"}
    return path if path in known else "other"
