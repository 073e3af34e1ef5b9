"""Structured JSON logs through structlog; request context travels in contextvars."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_SENSITIVE_KEYS = re.compile(
    r"pass(word)?|secret|token|authorization|api[_-]?key|cookie|credential|signature", re.I
)


def _redact(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Last line of defence: a value logged under a sensitive-looking key never reaches the log."""
    for key in list(event_dict):
        if key != "event" and _SENSITIVE_KEYS.search(key):
            event_dict[key] = "[redacted]"
    return event_dict


class _StderrLogger:
    """Writes each rendered line to whatever sys.stderr is at that moment (daemonizers and test
    capture replace it), without building a logger per call."""

    def msg(self, message: str) -> None:
        sys.stderr.write(message + "\n")

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


_STDERR = _StderrLogger()


def configure_logging(level: str = "INFO", json: bool = True) -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=lambda *_args: _STDERR,
        cache_logger_on_first_use=False,  # tests reconfigure the level between apps
    )


def get_logger(name: str = "yuntu") -> Any:
    return structlog.get_logger(name)
