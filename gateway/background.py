"""Stopping the gateway's background tasks (the schema listener, the NOTIFY check, the pool metrics, the
replica monitor) at shutdown."""

from __future__ import annotations

import asyncio
import contextlib

# how long a cancelled task may take to end before it is asked again
_ASK_AGAIN = 1.0


async def stop(task: asyncio.Task[None]) -> None:
    """Cancels `task` and waits until it has ended.

    One cancel is not always enough on Python 3.11: `asyncio.wait_for` (psycopg_pool waits for a
    connection with it) returns a result that arrived together with the cancellation and drops the
    cancellation, so a listener cancelled just as its reload got a connection goes back to listening, and
    a plain `await task` would wait for ever. The cancel is repeated until the task ends.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=_ASK_AGAIN)
    with contextlib.suppress(asyncio.CancelledError):
        await task
