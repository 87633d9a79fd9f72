"""Micro-batching: the /predict requests that arrive while the model is busy are answered together, with one
forward pass and one commit of the prediction log, as LitServe's and Triton's dynamic batchers do.

Each request puts its job in a queue on the event loop and waits for its own answer. One batch is worked on at a
time, on a thread of its own: when it is done, everything that arrived meanwhile (up to `max_batch`) is the next
batch. A single client is answered at once (a batch of one, no waiting); eight clients share the forward pass and
the commit. With `max_wait_s` > 0 a batch smaller than `max_batch` waits that long for more requests first, which
only pays when arrivals are spread out and the forward pass is expensive (a large network, a GPU).
"""

from __future__ import annotations

import asyncio
import copy
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


class MicroBatcher:
    """`await submit(job)` returns `process(batch)[i]` for the job's place i in its batch. `process` runs in a
    worker thread and returns one outcome per job; if it raises, every request of that batch gets the exception."""

    def __init__(self, process: Callable[[list], list], max_batch: int, max_wait_s: float = 0.0) -> None:
        self.process, self.max_batch, self.max_wait_s = process, max_batch, max_wait_s
        self._pending: deque[tuple[Any, asyncio.Future]] = deque()
        self._runner: asyncio.Task | None = None
        # one batch at a time, always on the same thread: leaner than a turn in anyio's pool for every batch
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="micro-batch")
        weakref.finalize(self, self._thread.shutdown, wait=False)

    @property
    def queued(self) -> int:
        """Requests waiting for the next batch (not the one being worked on)."""
        return len(self._pending)

    async def submit(self, job: Any) -> Any:
        loop = asyncio.get_running_loop()
        if self._runner is not None and not self._runner.done() and self._runner.get_loop() is not loop:
            # another event loop's batches are under way (a TestClient without `with`, used from several threads):
            # this job alone, rather than sharing that loop's queue
            (outcome,) = await loop.run_in_executor(None, self.process, [job])
            return outcome
        future = loop.create_future()
        self._pending.append((job, future))
        if self._runner is None or self._runner.done() or self._runner.get_loop() is not loop:
            self._runner = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        """Work through the queue a batch at a time, and end when it is empty (the next request starts it again)."""
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                if self.max_wait_s > 0 and len(self._pending) < self.max_batch:
                    await asyncio.sleep(self.max_wait_s)
                batch = [self._pending.popleft() for _ in range(min(self.max_batch, len(self._pending)))]
                batch = [(job, future) for job, future in batch if not future.done()]  # done: its request was cancelled
                if not batch:
                    continue
                try:
                    outcomes = await loop.run_in_executor(self._thread, self.process, [job for job, _ in batch])
                    if len(outcomes) != len(batch):
                        raise RuntimeError(f"{len(outcomes)} outcomes for a batch of {len(batch)}")
                except BaseException as exc:
                    for _, future in batch:
                        if future.done():
                            continue
                        if isinstance(exc, asyncio.CancelledError):
                            future.cancel()
                        else:  # each request raises its own copy: one instance would gather every traceback
                            future.set_exception(copy.copy(exc))
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if not future.done():
                        future.set_result(outcome)
        finally:  # cancelled (the server is stopping): no request waits for an answer that will not come
            while self._pending:
                _, future = self._pending.popleft()
                future.cancel()
