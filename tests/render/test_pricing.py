"""The rate card: frame costs, the priority factor and estimates."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from yuntu.render.frames import chunk
from yuntu.render.pricing import MICRO_FEN_PER_FEN, RateCard

# 0.01 fen per core-second (36 fen per core-hour), 1 fen minimum per frame
CARD = RateCard(
    micro_fen_per_core_second=10_000,
    minimum_fen_per_frame=1,
    core_seconds_per_frame={"Cycles": Decimal(600), "eevee": Decimal(60)},
    chunk_overhead_core_seconds=Decimal(2),
)

cards = st.builds(
    RateCard,
    micro_fen_per_core_second=st.integers(0, 10 * MICRO_FEN_PER_FEN),
    minimum_fen_per_frame=st.integers(0, 100),
    priority_factor_low=st.decimals("0.1", "1", places=2),
    priority_factor_high=st.decimals("1", "5", places=2),
)
seconds = st.decimals(0, 10_000_000, places=3)
priorities = st.integers(0, 100)


def test_frame_cost_examples() -> None:
    assert CARD.frame_cost(1000, 50, 1) == 10  # 1,000 core-s x 0.01 fen
    assert CARD.frame_cost(1000, 50, 20) == 20  # the minimum, per frame of the chunk
    assert CARD.frame_cost(1001, 50, 1) == 11  # 10.01 fen rounds up
    assert CARD.frame_cost(0, 50, 3) == 3
    assert CARD.frame_cost(Decimal("0.001"), 50, 1) == 1
    assert CARD.frame_cost(1000, 100, 1) == 20  # factor 2
    assert CARD.frame_cost(1000, 0, 1) == 5  # factor 0.5
    assert CARD.frame_cost(0.1, 50, 1) == 1
    assert CARD.frame_cost("1000", 50, 1) == 10
    free = RateCard(micro_fen_per_core_second=0)
    assert free.frame_cost(10**9, 100, 5) == 0


def test_metered_amounts_round_up_to_whole_fen() -> None:
    card = RateCard(micro_fen_per_core_second=1)  # a millionth of a fen per core-second
    assert card.frame_cost(1, 50, 1) == 1
    assert card.frame_cost(MICRO_FEN_PER_FEN, 50, 1) == 1
    assert card.frame_cost(MICRO_FEN_PER_FEN + 1, 50, 1) == 2


def test_priority_factor() -> None:
    assert CARD.priority_factor(50) == 1
    assert CARD.priority_factor(0) == Decimal("0.5")
    assert CARD.priority_factor(100) == 2
    assert CARD.priority_factor(25) == Decimal("0.75")
    assert CARD.priority_factor(75) == Decimal("1.5")
    flat = RateCard(
        micro_fen_per_core_second=1, priority_factor_low=Decimal(1), priority_factor_high=Decimal(1)
    )
    assert {flat.priority_factor(p) for p in range(101)} == {1}


@given(cards)
def test_priority_factor_is_monotonic_and_one_at_fifty(card: RateCard) -> None:
    factors = [card.priority_factor(p) for p in range(101)]
    assert factors == sorted(factors)
    assert factors[50] == 1
    assert factors[0] == card.priority_factor_low
    assert factors[100] == card.priority_factor_high


@given(cards, seconds, seconds, priorities, st.integers(1, 100))
def test_cost_never_below_minimum_and_monotonic(
    card: RateCard, a: Decimal, b: Decimal, priority: int, size: int
) -> None:
    low, high = sorted((a, b))
    cheap = card.frame_cost(low, priority, size)
    dear = card.frame_cost(high, priority, size)
    assert cheap >= card.minimum_fen_per_frame * size
    assert cheap <= dear
    # and never more than one fen above the exact metered amount (or the minimum)
    exact = high * card.micro_fen_per_core_second * card.priority_factor(priority)
    assert dear <= max(exact / MICRO_FEN_PER_FEN + 1, Decimal(card.minimum_fen_per_frame * size))


@given(cards, seconds, priorities, priorities)
def test_cost_is_monotonic_in_priority(card: RateCard, used: Decimal, p: int, q: int) -> None:
    low, high = sorted((p, q))
    assert card.frame_cost(used, low, 1) <= card.frame_cost(used, high, 1)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((-1, 50, 1), "cannot be negative"),
        ((float("nan"), 50, 1), "finite"),
        (("abc", 50, 1), "must be a number"),
        ((None, 50, 1), "must be a number"),
        ((True, 50, 1), "must be a number"),
        ((1, 101, 1), "priority"),
        ((1, -1, 1), "priority"),
        ((1, 50.0, 1), "priority"),
        ((1, 50, 0), "frames in a chunk"),
    ],
)
def test_frame_cost_refuses(arguments: tuple[object, object, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CARD.frame_cost(*arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"micro_fen_per_core_second": -1}, "rate"),
        ({"micro_fen_per_core_second": 1.5}, "rate"),
        ({"micro_fen_per_core_second": 1, "minimum_fen_per_frame": -1}, "minimum"),
        ({"micro_fen_per_core_second": 1, "priority_factor_low": 0}, "priority factors"),
        ({"micro_fen_per_core_second": 1, "priority_factor_low": 2}, "priority factors"),
        ({"micro_fen_per_core_second": 1, "priority_factor_high": "0.9"}, "priority factors"),
        ({"micro_fen_per_core_second": 1, "core_seconds_per_frame": {"x": 0}}, "positive"),
        ({"micro_fen_per_core_second": 1, "chunk_overhead_core_seconds": -1}, "overhead"),
    ],
)
def test_rate_card_checks_itself(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RateCard(**options)  # type: ignore[arg-type]


def test_per_core_hour() -> None:
    card = RateCard.per_core_hour("4", minimum_fen_per_frame=1)  # 0.04 yuan per core-hour
    assert card.micro_fen_per_core_second == 1111  # 1,111.1 rounded
    assert card.minimum_fen_per_frame == 1
    assert RateCard.per_core_hour(36).micro_fen_per_core_second == 10_000
    with pytest.raises(ValueError):
        RateCard.per_core_hour(-1)


def test_estimate_model() -> None:
    # cycles, 1920x1080: 600 core-s per frame; chunk of 2 = 2 + 1,200 core-s = 12.02 -> 13 fen
    assert CARD.estimate(6, 2, "cycles", 50, (1920, 1080)) == 3 * 13
    # 960x540 is a quarter of the pixels: 2 + 300 = 3.02 -> 4 fen per chunk
    assert CARD.estimate(6, 2, "CYCLES", 50, (960, 540)) == 3 * 4
    # a short last chunk: 5 frames -> 2, 2, 1 (2 + 600 = 6.02 -> 7)
    assert CARD.estimate(5, 2, "cycles", 50, (1920, 1080)) == 2 * 13 + 7
    assert CARD.estimate(list(range(1, 6)), 2, "cycles", 50, (1920, 1080)) == 2 * 13 + 7
    # unknown renderers use the default (60 core-s); the minimum still applies
    assert CARD.estimate(1, 1, "arnold", 50, (1920, 1080)) == 1  # 0.62 -> 1
    assert CARD.estimate(0, 4, "cycles", 50, (1920, 1080)) == 0
    assert CARD.estimate(6, 2, "cycles", 100, (1920, 1080)) == 3 * 25  # 24.04 -> 25


@given(
    st.lists(st.integers(0, 500), min_size=0, max_size=80, unique=True).map(sorted),
    st.integers(1, 12),
    priorities,
    st.integers(1, 4000),
    st.integers(1, 4000),
)
def test_estimate_prices_each_chunk(
    frame_list: list[int], size: int, priority: int, width: int, height: int
) -> None:
    chunks = chunk(frame_list, size)
    expected = sum(
        CARD.frame_cost(
            CARD.chunk_overhead_core_seconds
            + Decimal(600) * width * height / (1920 * 1080) * len(piece),
            priority,
            len(piece),
        )
        for piece in chunks
    )
    assert CARD.estimate(frame_list, size, "cycles", priority, (width, height)) == expected
    assert CARD.estimate_chunks([len(p) for p in chunks], "cycles", priority, (width, height)) == (
        expected
    )
    assert expected >= CARD.minimum_fen_per_frame * len(frame_list)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((6, 0, "cycles", 50, (64, 36)), "chunk size"),
        ((-1, 2, "cycles", 50, (64, 36)), "number of frames"),
        ((6, 2, "cycles", 50, (0, 36)), "resolution"),
        ((6, 2, "cycles", 50, (64, 70_000)), "resolution"),
        ((6, 2, "cycles", 500, (64, 36)), "priority"),
    ],
)
def test_estimate_refuses(arguments: tuple[object, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CARD.estimate(*arguments)  # type: ignore[arg-type]
