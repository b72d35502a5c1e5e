"""Sustained overload: the batcher sheds what cannot finish before its deadline (from the
measured time per item) and never computes for a request that was already answered."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from nasprune.deploy.serve.app import create_app
from nasprune.deploy.serve.batcher import DynamicBatcher, Overloaded, QueueFull
from nasprune.deploy.serve.config import ServeConfig
from nasprune.deploy.serve.predictor import Predictor
from nasprune.deploy.serve.runner import serve_in_thread

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

PER_ITEM = 0.01  # seconds the fake model takes per item


class SlowModel:
    """A model whose time is proportional to its items; records what it computed."""

    def __init__(self, per_item: float = PER_ITEM):
        self.per_item = per_item
        self.computed: list[str] = []

    def __call__(self, items):
        time.sleep(self.per_item * len(items))
        self.computed.extend(text for text, _ in items)
        return [{"label": text} for text, _ in items]


def _closed_loop(batcher: DynamicBatcher, users: int, items: int, seconds: float,
                 timeout: float, prelude=None) -> dict[str, str]:
    """``users`` coroutines submitting ``items`` texts each, again at once after every
    answer (10 ms after a 503), after ``await prelude(batcher)`` if given;
    ``{request id: "ok" | "503"}``."""
    outcome: dict[str, str] = {}

    async def user(u: int) -> None:
        loop = asyncio.get_running_loop()
        end, n = loop.time() + seconds, 0
        while loop.time() < end:
            rid = f"{u}-{n}"
            n += 1
            try:
                await batcher.submit([(rid, None)] * items, timeout=timeout)
                outcome[rid] = "ok"
            except QueueFull:
                outcome[rid] = "503"
                await asyncio.sleep(0.01)

    async def main() -> None:
        await batcher.start()
        try:
            if prelude is not None:
                await prelude(batcher)
            await asyncio.gather(*(user(u) for u in range(users)))
        finally:
            await batcher.stop()

    asyncio.run(main())
    return outcome


def test_sustained_overload_keeps_goodput_and_computes_nothing_in_vain():
    """40 closed-loop users, each request 64 items x 10 ms = 0.64 s of work, a deadline of
    2 s: without shedding the queue holds 25 s of work, every request expires and the few
    computed ones were already answered 503."""
    model = SlowModel()
    batcher = DynamicBatcher(model, max_batch_size=32, max_wait_ms=1, max_queue=256)
    started = time.monotonic()
    outcome = _closed_loop(batcher, users=40, items=64, seconds=6, timeout=2.0)
    took = time.monotonic() - started
    answered_503 = {rid for rid, status in outcome.items() if status == "503"}
    in_vain = {rid for rid in model.computed if rid in answered_503}
    ok = sum(status == "ok" for status in outcome.values())
    goodput = ok * 64 / took  # items answered with a result per second
    offline = 1 / PER_ITEM
    assert not in_vain, f"{len(in_vain)} requests computed after their 503"
    assert goodput >= 0.5 * offline, (ok, len(answered_503), goodput)
    assert answered_503  # it really was overloaded


class OnceSlow(SlowModel):
    """``SlowModel`` whose next batch, once armed, takes ``extra`` seconds more (a starved
    batch: the machine was busy)."""

    def __init__(self, extra: float):
        super().__init__(0.002)
        self.extra, self.armed = extra, False

    def __call__(self, items):
        if self.armed:
            self.armed = False
            time.sleep(self.extra)
        return super().__call__(items)


def test_one_slow_batch_does_not_shed_the_requests_after_it():
    """One batch of 8 items takes 1.5 s instead of 16 ms; the batches after it run at their
    normal speed again, so the requests after it must be served (before: the estimate kept
    the slow batch's time per item and the expected end of each later batch, and shed
    nearly every request for seconds)."""
    model = OnceSlow(extra=1.5)

    async def slow_batch(batcher: DynamicBatcher) -> None:
        await batcher.submit([("warm", None)] * 8, timeout=5)
        model.armed = True
        await batcher.submit([("slow", None)] * 8, timeout=5)

    batcher = DynamicBatcher(model, max_batch_size=32, max_wait_ms=1, max_queue=256)
    outcome = _closed_loop(batcher, users=4, items=8, seconds=1.5, timeout=0.5,
                           prelude=slow_batch)
    ok = sum(status == "ok" for status in outcome.values())
    assert ok >= 20 and ok >= 0.8 * len(outcome), (ok, len(outcome))


def test_a_request_that_cannot_finish_is_shed_on_arrival():
    async def main():
        batcher = DynamicBatcher(SlowModel(0.05), max_batch_size=8, max_wait_ms=0,
                                 max_queue=100)
        await batcher.start()
        try:
            await batcher.submit([("warm", None)] * 4, timeout=5)  # measures 50 ms per item
            running = asyncio.ensure_future(batcher.submit([("a", None)] * 8, timeout=5))
            await asyncio.sleep(0.01)
            started = time.monotonic()
            with pytest.raises(Overloaded, match="overloaded"):
                await batcher.submit([("b", None)] * 8, timeout=0.5)  # 0.4 s queued + 0.4 s
            shed_in = time.monotonic() - started
            assert await batcher.submit([("c", None)], timeout=5) == [{"label": "c"}]
            return shed_in, await running
        finally:
            await batcher.stop()

    shed_in, result = asyncio.run(main())
    assert shed_in < 0.05 and len(result) == 8


def test_a_running_request_gets_its_result_even_past_its_deadline():
    gate = threading.Event()

    def model(items):
        gate.wait(10)
        return [{}] * len(items)

    async def main():
        batcher = DynamicBatcher(model, max_batch_size=8, max_wait_ms=0, max_queue=10)
        await batcher.start()
        try:
            first = asyncio.ensure_future(batcher.submit([("a", None)], timeout=0.1))
            await asyncio.sleep(0.3)  # past its deadline, still computing
            assert not first.done()
            gate.set()
            return await first
        finally:
            gate.set()
            await batcher.stop()

    assert asyncio.run(main()) == [{}]


def test_overloaded_server_answers_503_at_once_and_counts_no_work_in_vain(model_dir_predictor):
    """Over HTTP: 12 closed-loop clients of 16-text requests against a model that takes
    20 ms per text and a 1 s request timeout."""
    slow = SlowPredictor(model_dir_predictor, per_item=0.02)
    app = create_app(slow, ServeConfig(request_timeout_s=1.0, max_items=16, max_wait_ms=1))
    statuses: list[int] = []
    lock = threading.Lock()
    with serve_in_thread(app) as url:
        end = time.monotonic() + 4

        def user():
            with httpx.Client(base_url=url, timeout=30) as client:
                while time.monotonic() < end:
                    response = client.post("/v1/predict", json={"texts": ["good fun"] * 16})
                    with lock:
                        statuses.append(response.status_code)
                    if response.status_code == 503:
                        time.sleep(float(response.headers["retry-after"]) / 10)

        started = time.monotonic()
        threads = [threading.Thread(target=user) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        took = time.monotonic() - started
        text = httpx.get(f"{url}/metrics").text
    ok = statuses.count(200)
    assert set(statuses) <= {200, 503} and statuses.count(503) > 0
    assert ok * 16 / took >= 0.5 / 0.02, statuses
    assert 'nasprune_computed_for_answered_requests_total 0.0' in text
    assert 'nasprune_dropped_requests_total{reason="shed"}' in text


class SlowPredictor(Predictor):
    """A real predictor slowed to ``per_item`` seconds per text."""

    def __init__(self, base: Predictor, per_item: float):
        super().__init__(base.model, base.tokenizer, max_length=base.max_length)
        self.per_item = per_item

    def predict(self, items):
        time.sleep(self.per_item * len(items))
        return super().predict(items)


@pytest.fixture(scope="module")
def model_dir_predictor(tmp_path_factory):
    from test_serve import make_tiny_classifier

    directory = make_tiny_classifier(tmp_path_factory.mktemp("tiny") / "model")
    return Predictor.from_dir(directory, max_length=32)
