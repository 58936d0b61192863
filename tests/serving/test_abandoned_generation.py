"""A model replica keeps its device until an abandoned generation has stopped.

``ModelWorker.run`` holds the device lock around a generation thread; if the request is cancelled
(once or again and again) the lock must stay taken until the thread is done, or the request the
replica holds could start a second generation beside it.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from serving.deployments import _outlast_cancellation

pytestmark = pytest.mark.unit


def test_the_device_stays_taken_until_the_abandoned_thread_ends_however_often_it_is_cancelled():
    async def scenario():
        device = asyncio.Lock()
        release = threading.Event()

        async def run():
            async with device:
                work = asyncio.ensure_future(asyncio.to_thread(release.wait, 10))
                try:
                    await asyncio.shield(work)
                except asyncio.CancelledError:
                    await _outlast_cancellation(work)
                    raise

        task = asyncio.create_task(run())
        await asyncio.sleep(0.05)
        for _ in range(3):
            task.cancel()
            await asyncio.sleep(0.05)
            assert device.locked() and not task.done()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not device.locked()

    asyncio.run(scenario())


def test_a_failure_of_the_abandoned_thread_is_waited_for_and_not_raised():
    async def scenario():
        def fail():
            raise RuntimeError("boom")

        work = asyncio.ensure_future(asyncio.to_thread(fail))
        await _outlast_cancellation(work)
        return work

    work = asyncio.run(scenario())
    assert isinstance(work.exception(), RuntimeError)
