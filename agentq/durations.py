"""Durations as a person types them: ``90s``, ``10m``, ``1h30m``, ``2d``, ``250ms`` (or bare seconds).

Hand-written: it is one regular expression, and the libraries that parse such strings
(pytimeparse, humanfriendly) are unmaintained or far larger than this need.
"""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str) -> float:
    """Seconds in ``text``; ``ValueError`` saying what is accepted if it is not a duration."""
    cleaned = text.strip().lower()
    try:
        seconds = float(cleaned)
    except ValueError:
        if not _WHOLE.fullmatch(cleaned):
            raise ValueError(
                f"{text!r} is not a duration: use e.g. 90s, 10m, 1h30m, 2d or a number of seconds"
            ) from None
        seconds = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(cleaned))
    if seconds <= 0:
        raise ValueError(f"{text!r} is not a duration: it must be longer than 0")
    return seconds
