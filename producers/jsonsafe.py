"""What JSON allows and the layers behind the edge refuse, found before anything is written.

``json.loads`` accepts values that PostgreSQL (``jsonb``, ``text``), UTF-8 encoders or float32
tensors refuse later: NUL characters (``\\u0000``), unpaired surrogates (``\\ud800``), non-finite
numbers (``NaN``, ``Infinity``, ``1e999``). ``problem`` walks a parsed value and names the first
such thing, so the contract can refuse the record with a reason instead of a later layer raising
on it; ``printable`` makes any text safe to store or log (error details echo user input).
"""

from __future__ import annotations

import math
from typing import Any

_NUMBERS = frozenset({int, float})
FLOAT32_MAX = 3.4028234663852886e38
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


def text_problem(s: str) -> str | None:
    """Why a string cannot be stored as PostgreSQL text / UTF-8, or None."""
    if "\x00" in s:
        return "contains a NUL character (\\u0000)"
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            return "contains an unpaired surrogate (not encodable as UTF-8)"
    return None


def number_problem(x: Any) -> str | None:
    if isinstance(x, float) and not math.isfinite(x):
        return "holds a non-finite number (NaN or Infinity)"
    if isinstance(x, int) and not INT64_MIN <= x <= INT64_MAX:
        return "holds an integer outside the 64-bit range"
    return None


def problem(value: Any, where: str) -> str | None:
    """The first value under ``value`` that a later layer would refuse, as ``where…: why``."""
    t = type(value)
    if t is str:
        why = text_problem(value)
        return f"{where} {why}" if why else None
    if t is int or t is float:
        why = number_problem(value)
        return f"{where} {why}" if why else None
    if t is list:
        try:  # all numbers: one finite sum in C says none is NaN, Infinity or huge
            types = {type(v) for v in value}
            if value and types <= _NUMBERS and math.isfinite(sum(value)) and (
                    int not in types
                    or all(INT64_MIN <= v <= INT64_MAX for v in value if type(v) is int)):
                return None
        except OverflowError:
            pass
        for i, v in enumerate(value):
            found = problem(v, f"{where}[{i}]")
            if found:
                return found
        return None
    if t is dict:
        for k, v in value.items():
            why = text_problem(k)
            if why:
                return f"a key of {where} {why}"
            found = problem(v, f"{where}.{k}" if k.isidentifier() else f"{where}[{k!r}]")
            if found:
                return found
    return None  # bool, None


def printable(text: str, limit: int = 2000) -> str:
    """``text`` without NULs or unpaired surrogates (escaped), cut to ``limit`` characters."""
    if text_problem(text) is None:
        return text[:limit]
    cleaned = text.replace("\x00", "\\u0000").encode("utf-8", "backslashreplace").decode("utf-8")
    return cleaned[:limit]
