"""Frame specs and chunks: the pure arithmetic under render tasks.

A frame spec is a comma-separated list of entries, each `N`, `A-B` or `A-BxS` (every S-th frame
from A up to B), with whitespace allowed anywhere between tokens: `1-100`, `1-100x2`,
`1, 5, 10-20`. A full-width comma (what Chinese input methods type) counts as a comma. `parse`
turns a spec into a sorted list of unique frame numbers; overlapping entries are merged.

Limits, checked before anything is expanded (so `1-999999999` costs nothing to refuse):
- at most MAX_FRAMES frames in one spec (counted before overlaps are merged), and at most
  MAX_SPEC_LENGTH characters (over 10,000 single frames listed one by one);
- frame numbers from 0 to MAX_FRAME_NUMBER, Blender's own upper limit (MAXFRAME);
- negative frames are refused. Blender allows them, but its `-f` flag reads `-5` as "five
  before the end", OpenCue and Flamenco specs use `-` as the range separator, and no renderer
  we drive needs them.

`chunk` splits a frame list into frame tasks the way Flamenco and OpenCue do: each chunk is up
to `chunk_size` consecutive entries of the sorted list, so contiguous runs stay together.
`describe` writes a chunk back as a compact spec (a greedy rule, see there); for any sorted list
of unique frames, `parse(describe(frames)) == frames`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from itertools import pairwise

MAX_FRAMES = 100_000
MAX_FRAME_NUMBER = 1_048_574  # Blender's MAXFRAME
MAX_SPEC_LENGTH = 100_000
MAX_CHUNK_SIZE = MAX_FRAMES

# ASCII digits only: `\d` would accept other scripts' digits, which int() then reads.
_ENTRY = re.compile(r"([0-9]+)(?:\s*-\s*([0-9]+)(?:\s*[xX]\s*([0-9]+))?)?", re.ASCII)
_DIGITS_MAX = len(str(MAX_FRAME_NUMBER))


def parse(spec: str) -> list[int]:
    """The sorted unique frames of `spec`, or ValueError with a message fit for an API user."""
    if not isinstance(spec, str):
        raise ValueError("the frame spec must be a string such as '1-100' or '1,5,10-20'")
    if len(spec) > MAX_SPEC_LENGTH:
        raise ValueError(f"the frame spec is longer than {MAX_SPEC_LENGTH} characters")
    if not spec.strip():
        raise ValueError("the frame spec is empty")
    ranges: list[range] = []
    total = 0
    # a full-width comma is what a Chinese input method types
    for position, raw in enumerate(spec.replace("\uff0c", ",").split(","), start=1):
        entry = raw.strip()
        if not entry:
            raise ValueError(f"entry {position} of the frame spec is empty (a stray comma?)")
        match = _ENTRY.fullmatch(entry)
        if match is None:
            raise ValueError(_explain(entry))
        start = _number(match.group(1), entry)
        end = _number(match.group(2), entry) if match.group(2) is not None else start
        step = 1
        if (digits := match.group(3)) is not None:
            if len(digits) > _DIGITS_MAX or not 1 <= int(digits) <= MAX_FRAME_NUMBER:
                raise ValueError(f"'{entry}': the step must be between 1 and {MAX_FRAME_NUMBER}")
            step = int(digits)
        if end < start:
            raise ValueError(f"'{entry}': the range runs backwards ({start} is after {end})")
        total += (end - start) // step + 1
        if total > MAX_FRAMES:
            raise ValueError(f"the frame spec holds more than {MAX_FRAMES} frames")
        ranges.append(range(start, end + 1, step))
    if len(ranges) == 1:
        return list(ranges[0])
    return sorted({frame for frame_range in ranges for frame in frame_range})


def _number(digits: str, entry: str) -> int:
    if len(digits) > _DIGITS_MAX or int(digits) > MAX_FRAME_NUMBER:
        raise ValueError(f"'{entry}': frame numbers go up to {MAX_FRAME_NUMBER}")
    return int(digits)


def _explain(entry: str) -> str:
    """Why `entry` is not `N`, `A-B` or `A-BxS`, in the user's terms."""
    shown = entry if len(entry) <= 40 else entry[:37] + "..."
    if entry.startswith("-"):
        return f"'{shown}': negative frame numbers are not supported"
    if re.search(r"[xX]\s*-", entry):
        return f"'{shown}': the step must be a positive whole number"
    if re.search(r"[0-9]\s*-\s*-", entry):
        return f"'{shown}': negative frame numbers are not supported"
    if re.fullmatch(r"[0-9]+\s*[xX].*", entry):
        return f"'{shown}': a step needs a range, as in '1-100x2'"
    if re.search(r"[0-9]\.[0-9]", entry):
        return f"'{shown}': frame numbers must be whole numbers"
    return f"'{shown}' is not a frame, a range (1-100) or a stepped range (1-100x2)"


def _checked(frames: Iterable[int]) -> list[int]:
    """`frames` as a list, which must be strictly increasing (what `parse` returns)."""
    result = list(frames)
    for before, after in pairwise(result):
        if after <= before:
            raise ValueError("frames must be sorted and unique")
    return result


def chunk(frames: Iterable[int], chunk_size: int, *, ranges: bool = False) -> list[list[int]]:
    """Split sorted unique `frames` into frame tasks of up to `chunk_size` consecutive entries.

    With `ranges=True` a chunk also ends where the gap between frames changes, so each chunk is
    one arithmetic progression (start, end, step): what renderers that only take a frame range
    (Maya's `Render -s -e -b`) can run in one command."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise ValueError("the chunk size must be a whole number")
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"the chunk size must be between 1 and {MAX_CHUNK_SIZE}")
    ordered = _checked(frames)
    if not ranges:
        return [ordered[i : i + chunk_size] for i in range(0, len(ordered), chunk_size)]
    chunks: list[list[int]] = []
    current: list[int] = []
    for frame in ordered:
        if current and (
            len(current) == chunk_size
            or (len(current) >= 2 and frame - current[-1] != current[1] - current[0])
        ):
            chunks.append(current)
            current = []
        current.append(frame)
    if current:
        chunks.append(current)
    return chunks


def as_range(frames: Sequence[int]) -> tuple[int, int, int] | None:
    """(start, end, step) when sorted unique `frames` are one arithmetic progression, else None.
    A single frame is (f, f, 1)."""
    ordered = _checked(frames)
    if not ordered:
        raise ValueError("a chunk holds at least one frame")
    if len(ordered) == 1:
        return ordered[0], ordered[0], 1
    step = ordered[1] - ordered[0]
    if all(after - before == step for before, after in pairwise(ordered)):
        return ordered[0], ordered[-1], step
    return None


def describe(frames: Sequence[int]) -> str:
    """A compact spec for sorted unique `frames`: `[1, 2, 3, 4]` -> "1-4", `[1, 5, 7]` ->
    "1,5,7", `[1, 3, 5, 7, 8]` -> "1-7x2,8".

    Greedy from the left: a run of three or more frames with one gap is written `A-B` (gap 1)
    or `A-BxS`; a run of two consecutive frames is written `A-B`; anything else stays single."""
    ordered = _checked(frames)
    if not ordered:
        raise ValueError("a chunk holds at least one frame")
    parts: list[str] = []
    i = 0
    while i < len(ordered):
        j = i
        if i + 1 < len(ordered):
            step = ordered[i + 1] - ordered[i]
            j = i + 1
            while j + 1 < len(ordered) and ordered[j + 1] - ordered[j] == step:
                j += 1
            if j - i + 1 == 2 and step != 1:
                j = i  # "1,5" is no longer than "1-5x4" and reads better
        if j == i:
            parts.append(str(ordered[i]))
        elif ordered[i + 1] - ordered[i] == 1:
            parts.append(f"{ordered[i]}-{ordered[j]}")
        else:
            parts.append(f"{ordered[i]}-{ordered[j]}x{ordered[i + 1] - ordered[i]}")
        i = j + 1
    return ",".join(parts)


def normalize(spec: str) -> str:
    """The canonical compact form of `spec` (what a task stores and shows)."""
    return describe(parse(spec))
