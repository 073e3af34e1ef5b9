"""Render pricing: a rate card and the two prices computed from it.

Money is integer fen everywhere outside this module. Inside, the rate is integer micro-fen
(1 fen = 1,000,000 micro-fen) per core-second, so a rate such as 0.04 yuan per core-hour
(1,111.1 micro-fen per core-second) is represented without floats, and every product below is
a Decimal computed exactly.

The charge of one frame task (`RateCard.frame_cost`):

    metered = ceil(core_seconds x rate x priority_factor(priority))      in whole fen
    charge  = max(metered, minimum_fen_per_frame x frames_in_chunk)

- Rounding: up, to a whole fen, once per frame task (never per frame, never per second), so a
  task pays at most one fen of rounding per frame task, and a metered amount is never given
  away as zero.
- Priority factor: priority 0..100 maps piecewise linearly through three points: 0 ->
  `priority_factor_low`, 50 -> 1.0, 100 -> `priority_factor_high`. The default priority (50)
  therefore pays the plain rate whatever the two ends are.
- The minimum applies per frame of the chunk, so chunking never changes the minimum a task
  pays.

The estimate (`RateCard.estimate`) prices every chunk the same way from predicted core-seconds:

    per_frame = core_seconds_per_frame[renderer] x (width x height) / (1920 x 1080)
    chunk     = chunk_overhead_core_seconds + frames_in_chunk x per_frame

`core_seconds_per_frame` are the operator's figures at 1920x1080 (unknown renderers use
`default_core_seconds_per_frame`); the overhead covers the renderer's start-up and scene load,
which every frame task pays once (Blender: about 1.5 s). Samples, scene complexity and the
machine's speed are not in the model: the estimate is what the hold is placed for, and the
actual charge is metered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal, localcontext
from types import MappingProxyType

from yuntu.render.contract import MAX_DIMENSION

MICRO_FEN_PER_FEN = 1_000_000
REFERENCE_PIXELS = 1920 * 1080
PRIORITY_MIN = 0
PRIORITY_DEFAULT = 50
PRIORITY_MAX = 100

Number = Decimal | int | float | str


def _decimal(value: Number, what: str) -> Decimal:
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number")
    try:
        # str() of a float is its shortest repr: 0.1 stays 0.1, not 0.1000000000000000055...
        result = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    except (ArithmeticError, TypeError) as exc:  # decimal.InvalidOperation for "abc"
        raise ValueError(f"{what} must be a number, not {value!r}") from exc
    if not result.is_finite():
        raise ValueError(f"{what} must be finite")
    return result


def _count(value: int, what: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{what} must be a whole number of at least {minimum}")
    return value


@dataclass(frozen=True, slots=True)
class RateCard:
    """Prices of the render farm. Build it from settings; it checks itself on creation."""

    micro_fen_per_core_second: int
    minimum_fen_per_frame: int = 0
    priority_factor_low: Decimal = Decimal("0.5")
    priority_factor_high: Decimal = Decimal("2")
    core_seconds_per_frame: Mapping[str, Decimal] = field(default_factory=dict)
    default_core_seconds_per_frame: Decimal = Decimal(60)
    chunk_overhead_core_seconds: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        _count(self.micro_fen_per_core_second, "the rate (micro-fen per core-second)")
        _count(self.minimum_fen_per_frame, "the minimum per frame (fen)")
        low = _decimal(self.priority_factor_low, "the low priority factor")
        high = _decimal(self.priority_factor_high, "the high priority factor")
        if not Decimal(0) < low <= Decimal(1) <= high:
            raise ValueError("priority factors must satisfy 0 < low <= 1 <= high")
        estimates = {
            str(name).lower(): _decimal(value, f"core-seconds per frame of {name}")
            for name, value in self.core_seconds_per_frame.items()
        }
        default = _decimal(self.default_core_seconds_per_frame, "default core-seconds per frame")
        overhead = _decimal(self.chunk_overhead_core_seconds, "the chunk overhead")
        if any(value <= 0 for value in estimates.values()) or default <= 0:
            raise ValueError("core-seconds per frame must be positive")
        if overhead < 0:
            raise ValueError("the chunk overhead cannot be negative")
        # normalized copies: frozen, so set through object.__setattr__
        object.__setattr__(self, "priority_factor_low", low)
        object.__setattr__(self, "priority_factor_high", high)
        object.__setattr__(self, "core_seconds_per_frame", MappingProxyType(estimates))
        object.__setattr__(self, "default_core_seconds_per_frame", default)
        object.__setattr__(self, "chunk_overhead_core_seconds", overhead)

    @classmethod
    def per_core_hour(cls, fen_per_core_hour: Number, **options: object) -> RateCard:
        """A card priced per core-hour in fen (`"4"` is 0.04 yuan), the unit price lists use;
        converted to micro-fen per core-second rounded half up (an error below 1e-6 fen)."""
        price = _decimal(fen_per_core_hour, "the price per core-hour")
        if price < 0:
            raise ValueError("the price per core-hour cannot be negative")
        micro = (price * MICRO_FEN_PER_FEN / 3600).to_integral_value(rounding=ROUND_HALF_UP)
        return cls(micro_fen_per_core_second=int(micro), **options)  # type: ignore[arg-type]

    def priority_factor(self, priority: int) -> Decimal:
        _count(priority, "the priority")
        if priority > PRIORITY_MAX:
            raise ValueError(f"the priority must be between {PRIORITY_MIN} and {PRIORITY_MAX}")
        low, high = self.priority_factor_low, self.priority_factor_high
        half = Decimal(PRIORITY_DEFAULT)
        if priority <= PRIORITY_DEFAULT:
            return low + (Decimal(1) - low) * priority / half
        return Decimal(1) + (high - Decimal(1)) * (priority - PRIORITY_DEFAULT) / half

    def frame_cost(self, core_seconds: Number, priority: int, frames_in_chunk: int) -> int:
        """What one finished frame task of `frames_in_chunk` frames costs, in fen."""
        used = _decimal(core_seconds, "core-seconds")
        if used < 0:
            raise ValueError("core-seconds cannot be negative")
        _count(frames_in_chunk, "the frames in a chunk", minimum=1)
        factor = self.priority_factor(priority)
        with localcontext() as context:
            context.prec = 60  # exact for any realistic product; Decimal's default is 28 digits
            micro = used * self.micro_fen_per_core_second * factor
            metered = int((micro / MICRO_FEN_PER_FEN).to_integral_value(rounding=ROUND_CEILING))
        return max(metered, self.minimum_fen_per_frame * frames_in_chunk)

    def core_seconds_estimate(self, renderer: str, resolution: tuple[int, int]) -> Decimal:
        """Predicted core-seconds of one frame of `renderer` at `resolution`."""
        width, height = resolution
        for side in (width, height):
            _count(side, "the resolution", minimum=1)
            if side > MAX_DIMENSION:
                raise ValueError(f"the resolution is at most {MAX_DIMENSION} per side")
        base = self.core_seconds_per_frame.get(
            renderer.lower(), self.default_core_seconds_per_frame
        )
        return base * width * height / REFERENCE_PIXELS

    def estimate_chunks(
        self,
        chunk_sizes: Sequence[int],
        renderer: str,
        priority: int,
        resolution: tuple[int, int],
    ) -> int:
        """The estimate, in fen, of frame tasks of the given sizes."""
        per_frame = self.core_seconds_estimate(renderer, resolution)
        total = 0
        prices: dict[int, int] = {}  # chunks mostly share one size
        for size in chunk_sizes:
            if size not in prices:
                seconds = self.chunk_overhead_core_seconds + per_frame * size
                prices[size] = self.frame_cost(seconds, priority, size)
            total += prices[size]
        return total

    def estimate(
        self,
        frames: int | Sequence[int],
        chunk_size: int,
        renderer: str,
        priority: int,
        resolution: tuple[int, int],
    ) -> int:
        """The estimate, in fen, of `frames` (a count or the frame list) split by `chunk_size`
        the way `frames.chunk` splits them (without `ranges=True`; for that, pass the chunks'
        sizes to `estimate_chunks`)."""
        count = frames if isinstance(frames, int) else len(frames)
        _count(count, "the number of frames")
        _count(chunk_size, "the chunk size", minimum=1)
        full, rest = divmod(count, chunk_size)
        if full == 0 and rest == 0:
            return 0
        price = self.estimate_chunks([chunk_size], renderer, priority, resolution) if full else 0
        tail = self.estimate_chunks([rest], renderer, priority, resolution) if rest else 0
        return full * price + tail
