"""Snowflake ids: layout, uniqueness, monotonic under a clock that steps back."""

from __future__ import annotations

import threading

import pytest

from yuntu.kit.ids import EPOCH_MS, MAX_SEQUENCE, SnowflakeGenerator, id_timestamp


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def test_layout_holds_time_node_and_sequence():
    clock = Clock(EPOCH_MS + 123_456)
    generator = SnowflakeGenerator(node_id=5, clock=clock)
    first, second = generator(), generator()
    assert first >> 22 == 123_456
    assert (first >> 12) & 0x3FF == 5
    assert first & 0xFFF == 0 and second & 0xFFF == 1
    assert id_timestamp(first).timestamp() * 1000 == pytest.approx(EPOCH_MS + 123_456)
    assert first < 2**63


def test_monotonic_when_the_clock_steps_back():
    clock = Clock(EPOCH_MS + 10_000)
    generator = SnowflakeGenerator(node_id=1, clock=clock)
    before = [generator() for _ in range(3)]
    clock.now -= 5_000  # NTP step backwards
    after = [generator() for _ in range(3)]
    ids = before + after
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_sequence_overflow_borrows_the_next_millisecond():
    clock = Clock(EPOCH_MS + 50)
    generator = SnowflakeGenerator(clock=clock)
    ids = [generator() for _ in range(MAX_SEQUENCE + 10)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert ids[-1] >> 22 == 51


def test_unique_across_threads():
    generator = SnowflakeGenerator(node_id=3)
    results: list[int] = []
    lock = threading.Lock()

    def work() -> None:
        local = [generator() for _ in range(5000)]
        with lock:
            results.extend(local)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 20_000


def test_node_id_bounds():
    with pytest.raises(ValueError):
        SnowflakeGenerator(node_id=1024)
