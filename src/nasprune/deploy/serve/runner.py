"""Running the app under uvicorn: ``serve`` (the command, until SIGINT/SIGTERM) and
``serve_in_thread`` (tests and benchmarks), both with nasprune's connection guard, timeouts
and drain (``http.py``)."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from nasprune.deploy.serve.app import begin_drain, create_app
from nasprune.deploy.serve.config import ServeConfig
from nasprune.deploy.serve.http import (
    bind_socket,
    draining_server_class,
    guarded_protocol,
    raise_open_file_limit,
)
from nasprune.deploy.serve.metrics import Metrics
from nasprune.errors import NaspruneError, require

_log = logging.getLogger("nasprune.deploy.serve")


def _uvicorn_server(app, config: ServeConfig, log_level: str | None = None):
    """A uvicorn server for ``app`` with nasprune's connection guard and drain."""
    uvicorn = require("uvicorn", "serve")
    metrics: Metrics = app.state.metrics
    protocol = guarded_protocol(
        header_timeout=config.header_timeout_s, max_header_bytes=config.max_header_bytes,
        max_connections=config.max_connections, max_body_bytes=config.max_body_bytes,
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
    ``announce(url, runtime)`` is called with the real port and what the model runs on
    (backend, precision and why: ``Predictor.runtime``) just before uvicorn starts.
    """
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
            announce(_url(config.host, sock.getsockname()[1]), app.state.predictor.runtime)
        server.run(sockets=[sock])
    finally:
        sock.close()


def _setup_logging(level: str) -> None:
    """nasprune.deploy.serve's one-line messages in uvicorn's format and at its level."""
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
