"""Dynamic batching: requests wait on a bounded queue and run together on one thread.

One task groups queued requests (up to ``max_batch_size`` inputs or ``max_wait_ms`` of
waiting) and runs the model on a single worker thread, so the event loop keeps accepting
requests while the model computes; each caller awaits its own future. A full queue is
refused at once (``QueueFull``) instead of letting latency grow without bound.

Under sustained overload the batcher sheds (``Overloaded``, HTTP 503) what cannot be
answered before its deadline: the time per item is measured on every batch, so a request
is refused on arrival when the work queued ahead of it would outlast its deadline, and
dropped before its batch starts when that batch would. The estimate recovers as soon as
a batch ends: the running batch's expected end is cleared, and a batch faster than the
average sets the time per item at once, so one starved batch sheds only while it runs.
A request handed to the model is
always answered with its result (never 503 while its batch still computes), so no batch is
computed for a client that was already answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nasprune.deploy.serve.predictor import Item

if TYPE_CHECKING:
    from nasprune.deploy.serve.metrics import Metrics

_log = logging.getLogger("nasprune.deploy.serve")


class QueueFull(Exception):
    """The batcher's queue is at capacity: the caller should retry later (HTTP 503)."""


class DeadlineExceeded(QueueFull):
    """A request was not answered within its deadline (HTTP 503, like a full queue)."""


class Overloaded(QueueFull):
    """The request could not finish before its deadline (estimated from the measured time
    per item): shed at once instead of queued in vain (HTTP 503, like a full queue)."""


class ClientClosed(Exception):
    """The client closed its connection before it was answered (counted as status 499)."""


@dataclass
class _Pending:
    items: list[Item]
    future: asyncio.Future
    deadline: float | None = None  # loop time; still queued then = dropped, never computed
    running: bool = False  # handed to the model
    queued: bool = True  # counted in DynamicBatcher._queued_items


class _PerItem:
    """Seconds per item of the recent batches: slower batches move it by an exponential
    moving average, a faster one sets it at once. One starved batch (the machine was busy)
    must not keep shedding once batches run at their normal speed again."""

    def __init__(self, weight: float = 0.3):
        self.weight = weight
        self.seconds: float | None = None  # unknown until the first batch ran

    def observe(self, elapsed: float, items: int) -> None:
        value = elapsed / max(items, 1)
        if self.seconds is None or value <= self.seconds:
            self.seconds = value
        else:
            self.seconds = self.weight * value + (1 - self.weight) * self.seconds

    def of(self, items: int) -> float:
        return 0.0 if self.seconds is None else self.seconds * items


class DynamicBatcher:
    """Group queued requests into batches of up to ``max_batch_size`` items.

    The first request of a batch waits at most ``max_wait_ms`` for company; requests
    that arrive while the model is busy are taken together as soon as it is free. A
    request is never split, so one bigger than ``max_batch_size`` runs alone. A request
    whose caller went away (its future is cancelled), whose deadline passed while it waited,
    or that its batch would finish too late for is dropped before the model sees it.
    """

    def __init__(self, predict, *, max_batch_size: int, max_wait_ms: float, max_queue: int,
                 metrics: Metrics | None = None):
        self._predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self._metrics = metrics
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._carry: _Pending | None = None
        self.per_item = _PerItem()
        self._queued_items = 0  # items submitted and not yet handed to the model
        self._busy_until = 0.0  # loop time the running batch is expected to end

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
                     cancel_when: asyncio.Future | None = None) -> list[dict]:
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
        if timeout is not None:
            ahead = self.expected_wait(0, loop.time())
            if ahead > 0 and ahead + self.per_item.of(len(items)) > timeout:
                self._count_dropped("shed")
                raise Overloaded(f"overloaded: about {ahead:.1f} s of work is queued ahead, "
                                 f"too much for the request timeout of {timeout:g} s")
        deadline = loop.time() + timeout if timeout is not None else None
        pending = _Pending(items, loop.create_future(), deadline)
        try:
            self._queue.put_nowait(pending)
        except asyncio.QueueFull:
            raise QueueFull("queue is full") from None
        self._queued_items += len(items)
        waiters = {pending.future} if cancel_when is None else {pending.future, cancel_when}
        try:
            done, _ = await asyncio.wait(waiters, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            if not done and pending.running:  # computing: its result is on its way
                done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # cancelled (e.g. at the end of a shutdown): drop it
            self._unqueue(pending)
            pending.future.cancel()
            raise
        if pending.future.done():
            return pending.future.result()
        was_running = pending.running
        self._unqueue(pending)
        pending.future.cancel()
        if cancel_when is not None and cancel_when in done:
            if not was_running:
                self._count_dropped("client_closed")
            raise ClientClosed("the client closed the connection while its request was "
                               + ("computed" if was_running else "queued"))
        if not was_running:
            self._count_dropped("deadline")
        raise DeadlineExceeded(f"not answered within the request timeout of {timeout:g} s")

    def expected_wait(self, items: int, now: float) -> float:
        """Seconds until ``items`` more would be answered: the rest of the running batch
        plus everything queued, at the measured time per item (0 before the first batch).

        Only work *ahead* of a request sheds it, and the first request of a batch always
        runs: an idle model measures again, so one slow batch cannot shed all later ones."""
        if self.per_item.seconds is None:
            return 0.0
        return max(self._busy_until - now, 0.0) + self.per_item.of(self._queued_items + items)

    def _unqueue(self, pending: _Pending) -> None:
        if pending.queued:
            pending.queued = False
            self._queued_items -= len(pending.items)

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
        """Drop callers that went away, requests whose deadline passed in the queue, and
        those the batch would (by the measured time per item) finish too late for."""
        kept: list[_Pending] = []
        ends = now + self.per_item.of(sum(len(p.items) for p in batch))
        for p in batch:
            if p.future.done():
                self._unqueue(p)
                continue
            if p.deadline is not None and now >= p.deadline:
                p.future.set_exception(DeadlineExceeded(
                    "not answered within the request timeout (dropped from the queue)"))
                self._count_dropped("deadline")
            elif kept and p.deadline is not None and ends > p.deadline:
                p.future.set_exception(Overloaded(
                    "overloaded: would not be answered within the request timeout (dropped "
                    "from the queue)"))
                self._count_dropped("shed")
            else:
                kept.append(p)
                continue
            self._unqueue(p)
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
                self._unqueue(p)
            self._busy_until = loop.time() + self.per_item.of(len(items))
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
            elapsed = time.perf_counter() - started
            self._busy_until = 0.0  # measured, not remembered: the model is free now
            self.per_item.observe(elapsed, len(items))
            if self._metrics is not None:
                self._metrics.inference.observe(elapsed)
            offset = 0
            for p in batch:
                n = len(p.items)
                if not p.future.done():
                    p.future.set_result(results[offset:offset + n])
                elif self._metrics is not None:  # its client left while it was computed
                    self._metrics.computed_for_answered.inc()
                offset += n
