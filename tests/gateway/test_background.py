"""Stopping background tasks: a cancellation the task's awaits drop is asked again."""

from __future__ import annotations

import asyncio

import pytest

from gateway import background

pytestmark = pytest.mark.anyio


async def test_a_task_that_drops_a_cancellation_is_stopped() -> None:
    started = asyncio.Event()
    dropped = 0

    async def listener() -> None:
        nonlocal dropped
        started.set()
        while True:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                if dropped:
                    raise
                # as Python 3.11's asyncio.wait_for does when a result arrives with the cancellation
                dropped += 1

    task = asyncio.create_task(listener())
    await started.wait()
    stopping = asyncio.create_task(background.stop(task))
    # not wait_for: on Python 3.11 its own timeout would cancel the stop, and with it the task
    await asyncio.wait({stopping}, timeout=30)
    assert stopping.done(), "the task is still running"
    assert task.cancelled()
    assert dropped == 1
