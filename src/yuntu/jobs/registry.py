"""Handlers are async functions registered by kind, with per-kind limits."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from yuntu.jobs.context import JobContext

Handler = Callable[["JobContext"], Coroutine[Any, Any, dict[str, Any] | None]]


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    kind: str
    fn: Handler
    queue: str = "default"
    max_attempts: int = 5
    timeout_seconds: int = 300
    backoff_base_seconds: float = 2.0
    backoff_max_seconds: float = 600.0


_HANDLERS: dict[str, HandlerSpec] = {}


def handler(kind: str, **options: Any) -> Callable[[Handler], Handler]:
    """Register `fn` as the handler of `kind`: `@handler("drive.gc", timeout_seconds=60)`."""

    def register(fn: Handler) -> Handler:
        _HANDLERS[kind] = HandlerSpec(kind=kind, fn=fn, **options)
        return fn

    return register


def get(kind: str) -> HandlerSpec | None:
    return _HANDLERS.get(kind)


def kinds() -> list[str]:
    return sorted(_HANDLERS)


class PermanentError(Exception):
    """Raised by a handler when retrying cannot help: the job fails at once."""


class JobCancelled(Exception):
    pass


class JobPaused(Exception):
    pass


class LeaseLost(Exception):
    """This worker no longer owns the attempt: it must stop and write nothing."""
