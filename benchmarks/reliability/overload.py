"""2. overload: a burst of 48 concurrent clients against --max-queue 4; every request is
answered (200 or 503), no connection error or client timeout."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.reliability.shared import (
    Server,
    texts_of,
    tracebacks,
)


def run_overload(model_dir: Path, work: Path, n: int, clients: int, seed: int
                 ) -> tuple[dict, dict]:
    import httpx

    rng = random.Random(seed)
    bodies = [{"texts": [texts_of(rng, 60) for _ in range(8)]} for _ in range(n)]
    server = Server(model_dir, work / "overload-server.log", "--max-queue", "4",
                    "--max-batch-size", "16", "--max-length", "128")
    try:
        with httpx.Client(base_url=server.url, timeout=5) as warm:
            warm.post("/v1/predict", json=bodies[0])
        before = server.rss_mb()
        statuses: dict[str, int] = {}
        errors: dict[str, int] = {}
        retry_after = [0]
        lock = threading.Lock()
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        with httpx.Client(base_url=server.url, timeout=60, limits=limits) as client:
            def one(body):
                try:
                    response = client.post("/v1/predict", json=body)
                    status = str(response.status_code)
                    with lock:
                        statuses[status] = statuses.get(status, 0) + 1
                        if status == "503" and response.headers.get("retry-after"):
                            retry_after[0] += 1
                except httpx.HTTPError as exc:
                    with lock:
                        errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

            started = time.monotonic()
            with ThreadPoolExecutor(clients) as pool:
                list(pool.map(one, bodies))
            took = time.monotonic() - started
        time.sleep(1)
        after = server.rss_mb()
        alive = server.alive()
        output = server.output()
    finally:
        server.stop()
    figures = {"requests": n, "ok": statuses.get("200", 0), "status_503": statuses.get("503", 0),
               "errors": sum(errors.values()), "rss_growth_mb": round(after - before, 1)}
    detail = {"clients": clients, "statuses": statuses, "errors_by_kind": errors,
              "503_with_retry_after": retry_after[0],
              "rss_before_mb": round(before, 1), "rss_after_mb": round(after, 1),
              "took_s": round(took, 1), "alive_after": alive,
              "server_tracebacks": tracebacks(output)}
    return figures, detail
