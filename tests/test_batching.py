"""serving/batching.py: requests that arrive while a batch is being worked on are answered together, each with its
own outcome; a failing batch fails each of its requests; a lone request is answered at once."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from mnist_lightning.serving.batching import MicroBatcher


class Recorder:
    """process(): each job doubled; the batches it was given are kept, and the first one waits for `release`."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = threading.Event()

    def __call__(self, jobs: list[int]) -> list[int]:
        self.batches.append(list(jobs))
        if len(self.batches) == 1:
            assert self.release.wait(10), "the first batch was never released"
        return [job * 2 for job in jobs]


def test_requests_arriving_during_a_batch_are_the_next_batch_and_each_gets_its_own_answer():
    recorder = Recorder()
    batcher = MicroBatcher(recorder, max_batch=4)

    async def scenario():
        first = asyncio.ensure_future(batcher.submit(1))
        while not recorder.batches:  # the first batch is in the thread pool, held there
            await asyncio.sleep(0.005)
        later = [asyncio.ensure_future(batcher.submit(job)) for job in range(2, 8)]
        await asyncio.sleep(0.05)
        recorder.release.set()
        return await first, await asyncio.gather(*later)

    first, later = asyncio.run(scenario())
    assert first == 2 and later == [4, 6, 8, 10, 12, 14]
    assert recorder.batches == [[1], [2, 3, 4, 5], [6, 7]]  # at most max_batch at a time, in arrival order


def test_a_lone_request_is_answered_at_once_and_max_wait_gathers_a_batch():
    recorder = Recorder()
    recorder.release.set()
    alone = MicroBatcher(recorder, max_batch=8)
    started = time.perf_counter()
    assert asyncio.run(alone.submit(21)) == 42
    assert time.perf_counter() - started < 1 and recorder.batches == [[21]]

    waiting = Recorder()
    waiting.release.set()
    batcher = MicroBatcher(waiting, max_batch=8, max_wait_s=0.2)

    async def spread_out():
        first = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0.02)  # arrives within the first request's wait
        return await asyncio.gather(first, batcher.submit(2))

    assert asyncio.run(spread_out()) == [2, 4]
    assert waiting.batches == [[1, 2]]


def test_a_batch_that_fails_fails_each_of_its_requests_and_the_next_batch_is_served():
    calls = []

    def process(jobs):
        calls.append(list(jobs))
        if len(calls) == 1:
            raise ConnectionError("the log cannot be reached")
        return [job + 1 for job in jobs]

    batcher = MicroBatcher(process, max_batch=4)

    async def scenario():
        failed = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
        return failed, await batcher.submit(3)

    failed, after = asyncio.run(scenario())
    assert [type(outcome) for outcome in failed] == [ConnectionError, ConnectionError]
    assert after == 4 and calls == [[1, 2], [3]]


def test_a_batcher_follows_the_event_loop_it_is_called_from():
    """A TestClient without `with` runs each request in an event loop of its own: the batcher starts again in
    each rather than waiting on a loop that has ended."""
    batcher = MicroBatcher(lambda jobs: [job for job in jobs], max_batch=2)
    assert [asyncio.run(batcher.submit(n)) for n in range(3)] == [0, 1, 2]


@pytest.mark.parametrize("max_batch", [0, 1025])
def test_the_batch_size_setting_is_checked(max_batch):
    from pydantic import ValidationError

    from mnist_lightning.serving.settings import Batching

    with pytest.raises(ValidationError, match="max_batch"):
        Batching(max_batch=max_batch)
