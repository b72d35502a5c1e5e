"""4. abandoned: heavy requests whose clients left while queued are never computed."""

from __future__ import annotations

import json
import math
import random
import socket
import threading
import time
from pathlib import Path

from benchmarks.reliability.shared import (
    Server,
    metric,
    texts_of,
    tracebacks,
)


def run_abandoned(model_dir: Path, work: Path, n: int, seed: int) -> tuple[dict, dict]:
    """Blocking requests keep the model busy; ``n`` heavy requests queue behind them and
    their clients give up after 1 s. How many of those reached the model afterwards?"""
    import httpx

    rng = random.Random(seed)
    items = 64
    heavy = json.dumps({"texts": [texts_of(rng, 400) for _ in range(items)]}).encode()
    server = Server(model_dir, work / "abandoned-server.log", "--max-queue", "128",
                    "--max-batch-size", str(items), "--max-items", str(items),
                    "--max-length", "512", "--request-timeout", "300")
    computed = "nasprune_computed_items_total"
    try:
        with httpx.Client(base_url=server.url, timeout=300) as client:
            headers = {"content-type": "application/json"}
            client.post("/v1/predict", json={"text": "warm up"})
            started = time.monotonic()
            assert client.post("/v1/predict", content=heavy, headers=headers).status_code == 200
            one_heavy = time.monotonic() - started
        # enough blockers to keep the model busy >= 8 s after the abandoned clients left
        blockers = max(2, math.ceil((1.0 + 8.0) / one_heavy))
        before = server.metrics()
        answered: list[tuple[int, float]] = []

        def block():
            with httpx.Client(base_url=server.url, timeout=600) as c:
                status = c.post("/v1/predict", content=heavy, headers=headers).status_code
                answered.append((status, time.monotonic()))

        threads = [threading.Thread(target=block) for _ in range(blockers)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 120
        while metric(server.metrics(), computed) < metric(before, computed) + items:
            if time.monotonic() > deadline:
                raise RuntimeError("the first blocker never reached the model")
            time.sleep(0.05)
        time.sleep(0.3)  # the other blockers are queued by now
        request = (b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: " + str(len(heavy)).encode() + b"\r\n\r\n" + heavy)
        socks = []
        for _ in range(n):
            sock = socket.create_connection(server.address)
            sock.sendall(request)
            socks.append(sock)
        time.sleep(1.0)  # the clients give up
        for sock in socks:
            sock.close()
        gave_up = time.monotonic()
        for t in threads:
            t.join(600)
        time.sleep(1.0)
        after = server.metrics()
        output = server.output()
    finally:
        server.stop()
    delta_items = metric(after, computed) - metric(before, computed)
    abandoned_items = delta_items - blockers * items
    last_answer = max((t for _, t in answered), default=None)
    detail = {
        "items_per_request": items, "one_heavy_request_s": round(one_heavy, 2),
        "blockers": blockers, "blocker_statuses": sorted(s for s, _ in answered),
        "model_busy_when_clients_gave_up": last_answer is not None and last_answer > gave_up,
        "dropped_client_closed": metric(after, 'nasprune_dropped_requests_total'
                                               '{reason="client_closed"}')
        - metric(before, 'nasprune_dropped_requests_total{reason="client_closed"}'),
        "counted_499": metric(after, 'nasprune_requests_total{path="/v1/predict",status="499"}'),
        "counted_5xx": sum(float(line.split()[-1]) for line in after.splitlines()
                           if line.startswith("nasprune_requests_total") and 'status="5' in line),
        "server_tracebacks": tracebacks(output)}
    computed_requests = abandoned_items / items
    if computed_requests == int(computed_requests):
        computed_requests = int(computed_requests)
    return {"requests": n, "computed": computed_requests}, detail
