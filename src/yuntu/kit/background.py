"""Fire-and-forget work on the running event loop (clean-ups after a commit, a directory fsync).

asyncio keeps only a weak reference to a task, so a task nobody holds may be garbage collected
before it finishes; `spawn` holds it until it is done."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

_RUNNING: set[asyncio.Task[Any]] = set()


def spawn(work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    task = asyncio.get_running_loop().create_task(work)
    _RUNNING.add(task)
    task.add_done_callback(_RUNNING.discard)
    return task
