"""Running whole-file digests of multipart uploads whose parts arrive in order.

Hashing each part as it arrives means completing a 1 GiB upload reads nothing back: the MD5 and
SHA-256 are ready. The state lives in this process only; when parts arrive out of order, land on
another server process, or this process restarted, completion hashes the missing tail from
storage instead (always correct, just a second pass over those bytes)."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass, field

import anyio
import anyio.to_thread

from yuntu.storage.blobs import Hasher

MAX_TRACKED = 256


@dataclass(slots=True)
class RunningDigest:
    hasher: Hasher = field(default_factory=Hasher)
    next_offset: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


_STATE: OrderedDict[int, RunningDigest] = OrderedDict()


def _get(upload_id: int, create: bool) -> RunningDigest | None:
    state = _STATE.get(upload_id)
    if state is None and create:
        state = _STATE[upload_id] = RunningDigest()
        while len(_STATE) > MAX_TRACKED:
            _STATE.popitem(last=False)
    if state is not None:
        _STATE.move_to_end(upload_id)
    return state


async def feed(upload_id: int, offset: int, data: bytes) -> None:
    """Account for a stored part. In order: hash it. A re-sent part that was already hashed
    (its bytes may differ now): forget the state, completion re-hashes from storage."""
    state = _get(upload_id, create=offset == 0)
    if state is None:
        return
    async with state.lock:
        if offset == state.next_offset:
            # Both digests release the GIL on large buffers: hash them on two threads at once.
            hasher = state.hasher
            async with anyio.create_task_group() as group:
                group.start_soon(anyio.to_thread.run_sync, hasher.md5.update, data)
                group.start_soon(anyio.to_thread.run_sync, hasher.sha256.update, data)
            hasher.size += len(data)
            state.next_offset += len(data)
        elif offset < state.next_offset:
            forget(upload_id)


def take(upload_id: int) -> RunningDigest | None:
    """The state for completion (removed from the registry)."""
    return _STATE.pop(upload_id, None)


def forget(upload_id: int) -> None:
    _STATE.pop(upload_id, None)
