"""9. overload_sustained: 40 users in a closed loop sending 64-text requests for 60 s
against ``nasprune serve`` with its defaults (``--threads 1``). Requests that cannot finish
before their deadline must be shed at once (503), no batch may be computed for a request
already answered, and the texts answered per second (goodput) must stay >= 50 % of what
the same model computes offline in batches of 64 on one thread."""

from __future__ import annotations

import random
import statistics
import threading
import time
from pathlib import Path

from benchmarks.reliability.shared import Server, metric, texts_of, tracebacks

ITEMS = 64
COMPUTED_FOR_ANSWERED = "nasprune_computed_for_answered_requests_total"


def offline_texts_per_s(model_dir: Path, bodies: list[dict], seconds: float = 10.0) -> float:
    """Texts per second of the served model in this process, batches of ``ITEMS``, one
    torch thread, the server's own tokenisation and length-sorted chunks."""
    import torch

    from nasprune.deploy.serve.predictor import Predictor

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        predictor = Predictor.from_dir(model_dir, max_length=128, chunk_size=8, threads=1)
        batches = [[(t, None) for t in body["texts"]] for body in bodies]
        predictor.predict(batches[0])  # warm up
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            predictor.predict(batches[done % len(batches)])
            done += 1
        return done * ITEMS / (time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)


def run_overload_sustained(model_dir: Path, work: Path, users: int, seconds: float,
                           seed: int) -> tuple[dict, dict]:
    import httpx

    rng = random.Random(seed)
    bodies = [{"texts": [texts_of(rng, 60) for _ in range(ITEMS)]} for _ in range(50)]
    offline = offline_texts_per_s(model_dir, bodies)
    server = Server(model_dir, work / "sustained-server.log")
    statuses: dict[str, int] = {}
    latencies: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as warm:
            warm.post("/v1/predict", json=bodies[0])
        before = server.metrics()
        end = time.monotonic() + seconds

        def user(u: int) -> None:
            with httpx.Client(base_url=server.url, timeout=60) as client:
                n = u
                while time.monotonic() < end:
                    sent = time.monotonic()
                    try:
                        response = client.post("/v1/predict", json=bodies[n % len(bodies)])
                    except httpx.HTTPError as exc:
                        with lock:
                            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                        continue
                    n += users
                    with lock:
                        key = str(response.status_code)
                        statuses[key] = statuses.get(key, 0) + 1
                        if response.status_code == 200:
                            latencies.append(time.monotonic() - sent)
                    if response.status_code == 503:  # a well-behaved client backs off
                        time.sleep(float(response.headers.get("retry-after", 1)))

        started = time.monotonic()
        threads = [threading.Thread(target=user, args=(u,)) for u in range(users)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(seconds + 120)
        took = time.monotonic() - started
        time.sleep(1.0)
        after = server.metrics()
        output = server.output()
    finally:
        server.stop()

    def delta(name: str) -> float:
        return metric(after, name) - metric(before, name)

    ok = statuses.get("200", 0)
    goodput = ok * ITEMS / took
    figures = {"requests": sum(statuses.values()) + sum(errors.values()), "ok": ok,
               "shed": statuses.get("503", 0),
               "computed_for_answered": int(delta(COMPUTED_FOR_ANSWERED)),
               "goodput_ratio": round(goodput / offline, 3)}
    detail = {"users": users, "seconds": round(took, 1), "items_per_request": ITEMS,
              "statuses": statuses, "errors_by_kind": errors,
              "offline_texts_per_s": round(offline, 1), "goodput_texts_per_s": round(goodput, 1),
              "latency_ok_p50_s": round(statistics.median(latencies), 2) if latencies else None,
              "latency_ok_max_s": round(max(latencies), 2) if latencies else None,
              "computed_items": delta("nasprune_computed_items_total"),
              "shed_by_server": delta('nasprune_dropped_requests_total{reason="shed"}'),
              "expired_in_queue": delta('nasprune_dropped_requests_total{reason="deadline"}'),
              "server_tracebacks": tracebacks(output)}
    return figures, detail
