"""Snowflake ids: 41 bits of ms since the project epoch, 10 bits node, 12 bits sequence."""

from __future__ import annotations

import secrets
import threading
import time
from datetime import UTC, datetime

EPOCH_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
NODE_BITS = 10
SEQUENCE_BITS = 12
MAX_NODE = (1 << NODE_BITS) - 1
MAX_SEQUENCE = (1 << SEQUENCE_BITS) - 1
MAX_ID = (1 << 63) - 1


class SnowflakeGenerator:
    """Thread-safe and monotonic: when the wall clock steps back, ids keep counting from the last
    timestamp issued instead of repeating or going backwards."""

    def __init__(self, node_id: int = 0, clock: object = None) -> None:
        if not 0 <= node_id <= MAX_NODE:
            raise ValueError(f"node id must be within 0..{MAX_NODE}")
        self.node_id = node_id
        self._clock = clock or (lambda: time.time_ns() // 1_000_000)
        self._lock = threading.Lock()
        self._last_ms = -1
        self._sequence = 0

    def __call__(self) -> int:
        with self._lock:
            now = self._clock() - EPOCH_MS  # type: ignore[operator]
            if now > self._last_ms:
                self._last_ms = now
                self._sequence = 0
            else:
                # Same millisecond or the clock went back: continue on the last timestamp and
                # borrow the next millisecond when its sequence is used up.
                self._sequence += 1
                if self._sequence > MAX_SEQUENCE:
                    self._last_ms += 1
                    self._sequence = 0
            return (
                (self._last_ms << (NODE_BITS + SEQUENCE_BITS))
                | (self.node_id << SEQUENCE_BITS)
                | self._sequence
            )


_generator = SnowflakeGenerator()


def configure(node_id: int | None) -> None:
    """Use `node_id`; None picks one at random, once per process. Ids are unique per node, so a
    fixed shared default would let two processes (a server and a CLI command, say) mint the same
    id in the same millisecond: a random node makes that unlikely, an explicit one rules it out."""
    global _generator, _random_node
    if node_id is None:
        if _random_node is None:
            _random_node = secrets.randbelow(MAX_NODE + 1)
        node_id = _random_node
    if _generator.node_id != node_id:
        _generator = SnowflakeGenerator(node_id)


_random_node: int | None = None


def new_id() -> int:
    return _generator()


def id_timestamp(snowflake: int) -> datetime:
    ms = (snowflake >> (NODE_BITS + SEQUENCE_BITS)) + EPOCH_MS
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
