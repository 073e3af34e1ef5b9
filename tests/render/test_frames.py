"""Frame specs: parsing, limits, chunking and the compact form."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from yuntu.render import frames
from yuntu.render.frames import MAX_FRAME_NUMBER, MAX_FRAMES, as_range, chunk, describe, parse

sorted_frames = st.sets(st.integers(0, MAX_FRAME_NUMBER), min_size=1, max_size=200).map(sorted)
# dense lists too, so runs and steps appear often
dense_frames = st.sets(st.integers(0, 60), min_size=1).map(sorted)
any_frames = sorted_frames | dense_frames


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("1", [1]),
        ("0", [0]),
        ("1-4", [1, 2, 3, 4]),
        ("1-10x2", [1, 3, 5, 7, 9]),
        ("1-10X3", [1, 4, 7, 10]),
        ("1,5,10-12", [1, 5, 10, 11, 12]),
        ("  1 - 3 ,  7 ", [1, 2, 3, 7]),
        ("10-12, 1, 5", [1, 5, 10, 11, 12]),
        ("1-5,3-7", [1, 2, 3, 4, 5, 6, 7]),
        ("1-10x2, 2-10x2", list(range(1, 11))),
        (" 1 - 9 x 4 ", [1, 5, 9]),
        ("5-5", [5]),
        ("1\t,\n2", [1, 2]),
        ("1，2，3", [1, 2, 3]),
        (f"{MAX_FRAME_NUMBER}", [MAX_FRAME_NUMBER]),
        ("007", [7]),
    ],
)
def test_parse(spec: str, expected: list[int]) -> None:
    assert parse(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("1,,2", "entry 2 of the frame spec is empty"),
        ("1,2,", "entry 3"),
        ("10-1", "runs backwards"),
        ("1-10x0", "step must be between 1"),
        ("1-10x-2", "step must be a positive whole number"),
        ("1-10x", "is not a frame"),
        ("-5", "negative frame numbers"),
        ("-5-3", "negative frame numbers"),
        ("1--3", "negative frame numbers"),
        ("5x2", "a step needs a range"),
        (" 7 x ", "a step needs a range"),
        ("abc", "is not a frame"),
        ("1.5", "whole numbers"),
        ("1-2-3", "is not a frame"),
        ("١٢", "is not a frame"),  # Arabic-Indic digits, which int() would accept
        ("1 2", "is not a frame"),
        (f"{MAX_FRAME_NUMBER + 1}", "go up to"),
        ("1-99999999999999999999", "go up to"),
        ("1" * 5000, "go up to"),  # beyond int()'s digit limit: still our message
        (f"0-{MAX_FRAMES}", f"more than {MAX_FRAMES} frames"),
        (f"0-{MAX_FRAMES - 1},0-1", f"more than {MAX_FRAMES} frames"),
        ("1-10x" + "9" * 5000, "step must be between 1"),
        ("1," * 60_000, "longer than"),
    ],
)
def test_parse_refuses(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse(spec)


def test_parse_refuses_non_strings() -> None:
    with pytest.raises(ValueError, match="must be a string"):
        parse(12)  # type: ignore[arg-type]


def test_limits_hold_exactly() -> None:
    assert len(parse(f"0-{MAX_FRAMES - 1}")) == MAX_FRAMES
    assert parse(f"0-{MAX_FRAME_NUMBER}x{MAX_FRAME_NUMBER}") == [0, MAX_FRAME_NUMBER]
    with pytest.raises(ValueError, match="step must be between 1"):
        parse(f"0-10x{MAX_FRAME_NUMBER + 1}")


@pytest.mark.parametrize(
    ("frames_", "spec"),
    [
        ([1, 2, 3, 4], "1-4"),
        ([1, 5, 7], "1,5,7"),
        ([1, 2], "1-2"),
        ([1, 3], "1,3"),
        ([7], "7"),
        ([1, 3, 5, 7, 8], "1-7x2,8"),
        ([1, 5, 6, 7], "1,5-7"),
        ([0, 10, 20, 30], "0-30x10"),
    ],
)
def test_describe(frames_: list[int], spec: str) -> None:
    assert describe(frames_) == spec
    assert parse(spec) == frames_


@pytest.mark.parametrize("bad", [[], [2, 1], [1, 1]])
def test_describe_refuses_unsorted_or_empty(bad: list[int]) -> None:
    with pytest.raises(ValueError):
        describe(bad)


def test_normalize() -> None:
    assert frames.normalize(" 10-12 , 1, 5, 11 ") == "1,5,10-12"
    assert frames.normalize("1-100x2") == "1-99x2"


@given(any_frames)
def test_describe_round_trips(frame_list: list[int]) -> None:
    spec = describe(frame_list)
    assert parse(spec) == frame_list
    assert len(spec) <= len(",".join(map(str, frame_list)))


@given(any_frames, st.integers(1, 50))
def test_chunk_round_trips(frame_list: list[int], size: int) -> None:
    for piece in chunk(frame_list, size):
        assert parse(describe(piece)) == piece


@given(any_frames, st.integers(1, 50), st.booleans())
def test_chunking_covers_every_frame_once_in_order(
    frame_list: list[int], size: int, ranges: bool
) -> None:
    chunks = chunk(frame_list, size, ranges=ranges)
    assert [frame for piece in chunks for frame in piece] == frame_list
    assert all(1 <= len(piece) <= size for piece in chunks)
    if not ranges:
        # consecutive entries of the sorted list: every chunk but the last is full
        assert all(len(piece) == size for piece in chunks[:-1])
        assert len(chunks) == -(-len(frame_list) // size)
    else:
        assert all(as_range(piece) is not None for piece in chunks)


@given(
    st.lists(
        st.tuples(st.integers(0, 3000), st.integers(0, 200), st.integers(1, 9)),
        min_size=1,
        max_size=8,
    ),
    st.sampled_from([",", " , ", "，"]),
)
def test_parse_matches_the_ranges(entries: list[tuple[int, int, int]], comma: str) -> None:
    spec = comma.join(f"{start}-{start + length}x{step}" for start, length, step in entries)
    expected = sorted(
        {f for start, length, step in entries for f in range(start, start + length + 1, step)}
    )
    assert parse(spec) == expected


def test_chunk_examples() -> None:
    frame_list = parse("1,5,10-20")
    assert chunk(frame_list, 4) == [[1, 5, 10, 11], [12, 13, 14, 15], [16, 17, 18, 19], [20]]
    assert chunk(frame_list, 4, ranges=True) == [
        [1, 5],
        [10, 11, 12, 13],
        [14, 15, 16, 17],
        [18, 19, 20],
    ]
    assert chunk(parse("1-9x2"), 3, ranges=True) == [[1, 3, 5], [7, 9]]
    assert chunk([], 3) == []


@pytest.mark.parametrize("size", [0, -1, MAX_FRAMES + 1, 1.5, True, "2"])
def test_chunk_refuses_bad_sizes(size: object) -> None:
    with pytest.raises(ValueError, match="chunk size"):
        chunk([1, 2], size)  # type: ignore[arg-type]


def test_chunk_refuses_unsorted_frames() -> None:
    with pytest.raises(ValueError, match="sorted and unique"):
        chunk([3, 1, 2], 2)


def test_as_range() -> None:
    assert as_range([4]) == (4, 4, 1)
    assert as_range([1, 2, 3]) == (1, 3, 1)
    assert as_range([2, 4, 6]) == (2, 6, 2)
    assert as_range([1, 2, 4]) is None
    with pytest.raises(ValueError):
        as_range([])
