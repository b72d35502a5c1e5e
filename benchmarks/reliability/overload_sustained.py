"""9. overload_sustained: 40 users in a closed loop sending 64-text requests for 60 s
against ``nasprune serve`` with its defaults (``--threads 1``). Requests that cannot finish
before their deadline must be shed at once (503), no batch may be computed for a request
already answered, and the texts answered per second (goodput) must stay >= 50 % of what
the same model computes offline in batches of 64 on one thread.

10. overload_after_slow_batch: the same load right after one batch was starved for 20 s
(the server stopped with SIGSTOP while it computed): goodput >= 80 % of offline."""

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


def _closed_loop(url: str, bodies: list[dict], users: int, seconds: float) -> dict:
    """``users`` threads posting the bodies in turn for ``seconds``, each waiting
    ``Retry-After`` after a 503: statuses, latencies of the 200s, client errors, time."""
    import httpx

    statuses: dict[str, int] = {}
    latencies: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def user(u: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
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
    return {"statuses": statuses, "latencies": latencies, "errors": errors,
            "took": time.monotonic() - started}


def _bodies(seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"texts": [texts_of(rng, 60) for _ in range(ITEMS)]} for _ in range(50)]


def _figures(loop: dict, offline: float, delta) -> tuple[dict, dict]:
    statuses, latencies, errors = loop["statuses"], loop["latencies"], loop["errors"]
    ok = statuses.get("200", 0)
    goodput = ok * ITEMS / loop["took"]
    figures = {"requests": sum(statuses.values()) + sum(errors.values()), "ok": ok,
               "shed": statuses.get("503", 0),
               "computed_for_answered": int(delta(COMPUTED_FOR_ANSWERED)),
               "goodput_ratio": round(goodput / offline, 3)}
    detail = {"seconds": round(loop["took"], 1), "items_per_request": ITEMS,
              "statuses": statuses, "errors_by_kind": errors,
              "offline_texts_per_s": round(offline, 1), "goodput_texts_per_s": round(goodput, 1),
              "latency_ok_p50_s": round(statistics.median(latencies), 2) if latencies else None,
              "latency_ok_max_s": round(max(latencies), 2) if latencies else None,
              "computed_items": delta("nasprune_computed_items_total"),
              "shed_by_server": delta('nasprune_dropped_requests_total{reason="shed"}'),
              "expired_in_queue": delta('nasprune_dropped_requests_total{reason="deadline"}')}
    return figures, detail


def _measured(model_dir: Path, work: Path, log: str, users: int, seconds: float, seed: int,
              prelude) -> tuple[dict, dict]:
    """Offline throughput, then the closed loop against a warmed server after
    ``prelude(server, bodies)`` (its dict goes into the figures)."""
    import httpx

    bodies = _bodies(seed)
    offline = offline_texts_per_s(model_dir, bodies)
    server = Server(model_dir, work / log)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as warm:
            for body in bodies[:3]:
                warm.post("/v1/predict", json=body)
        extra = prelude(server, bodies)
        before = server.metrics()
        loop = _closed_loop(server.url, bodies, users, seconds)
        time.sleep(1.0)
        after = server.metrics()
        output = server.output()
    finally:
        server.stop()
    figures, detail = _figures(loop, offline, lambda name: metric(after, name)
                               - metric(before, name))
    detail.update(users=users, server_tracebacks=tracebacks(output))
    return {**figures, **extra}, detail


def run_overload_sustained(model_dir: Path, work: Path, users: int, seconds: float,
                           seed: int) -> tuple[dict, dict]:
    return _measured(model_dir, work, "sustained-server.log", users, seconds, seed,
                     lambda server, bodies: {})


def run_after_slow_batch(model_dir: Path, work: Path, users: int, seconds: float, seed: int,
                         stall: float = 20.0) -> tuple[dict, dict]:
    """The sustained overload right after one starved batch: a 64-text request is sent,
    the server is stopped (SIGSTOP) for ``stall`` s while it computes, as a busy machine
    would starve it, then resumed; the closed loop starts once that request is answered.
    Goodput must be back at >= 80 % of offline (before: 3 of 2,374 requests served in
    the minute after a 25.8 s batch)."""
    import signal

    import httpx

    def starve_one_batch(server, bodies) -> dict:
        before = server.metrics()
        answer: dict = {}

        def slow_request() -> None:
            with httpx.Client(base_url=server.url, timeout=stall + 120) as client:
                answer["status"] = client.post("/v1/predict", json=bodies[3]).status_code

        sender = threading.Thread(target=slow_request)
        sender.start()
        time.sleep(0.2)  # its batch is computing (about 0.6 s alone)
        server.proc.send_signal(signal.SIGSTOP)
        time.sleep(stall)
        server.proc.send_signal(signal.SIGCONT)
        sender.join(stall + 120)
        took = metric(server.metrics(), "nasprune_inference_seconds_sum") - metric(
            before, "nasprune_inference_seconds_sum")
        return {"slow_batch_s": round(took, 1), "slow_request_status": answer.get("status")}

    figures, detail = _measured(model_dir, work, "slow-batch-server.log", users, seconds,
                                seed, starve_one_batch)
    detail.update(stall_s=stall, slow_request_status=figures.pop("slow_request_status"))
    return figures, detail
