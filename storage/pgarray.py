"""PostgreSQL array literals for whole columns, built with a few C-level string operations.

The ledger binds one array per column (``storage.ledger``). Handing psycopg a Python list makes it
adapt and quote every element in Python (a regex search and substitution per element): for a
batch of 1,024 digits jobs that was ~40% of the bridge's ledger write. These functions render the
literal of a whole column at once (``{a,b,NULL}``, element syntax as in PostgreSQL's
*Array Value Input*), bound as one text parameter and cast server-side (``CAST(:x AS uuid[])``).

Every element that is not a number or a UUID is double-quoted, with ``\\`` and ``"`` escaped: a
quoted element is taken verbatim (``"NULL"`` is the string, not a null; braces, commas and
blanks are plain characters). Strings reach the ledger validated (no NUL: PostgreSQL text cannot
hold it, and the edge refuses it), so no other escaping exists.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

_ENCODE = msgspec.json.Encoder().encode  # C; UTF-8 out
_JSON = json.JSONEncoder(separators=(",", ":"))  # what msgspec refuses (a lone surrogate)


def _json(v: Any) -> str:
    try:
        return _ENCODE(v).decode()
    except (TypeError, ValueError, OverflowError):
        return _JSON.encode(v)  # escaped: PostgreSQL then names what it refuses


def _quoted(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def texts(values: Sequence[str | None]) -> str:
    """text[] (also any type read from its text form: enum labels, topic names)."""
    return "{" + ",".join("NULL" if v is None else _quoted(v) for v in values) + "}"


def uuids(values: Sequence[str | uuid.UUID]) -> str:
    """uuid[]: canonical UUID strings need no quoting (hex digits and dashes only)."""
    return "{" + ",".join(map(str, values)) + "}"


def ints(values: Sequence[int | None]) -> str:
    """int[], smallint[], bigint[]."""
    return "{" + ",".join("NULL" if v is None else str(int(v)) for v in values) + "}"


def timestamps(values: Sequence[datetime | None]) -> str:
    """timestamptz[] from aware datetimes (ISO 8601 with the offset, microseconds kept); a
    batch's rows share a few timestamp objects, so each is formatted once."""
    seen: dict[int, str] = {}
    out = []
    for v in values:
        if v is None:
            out.append("NULL")
            continue
        s = seen.get(id(v))
        if s is None:
            if v.tzinfo is None:
                raise ValueError("timestamps must be timezone-aware")
            s = seen[id(v)] = '"' + v.isoformat() + '"'
        out.append(s)
    return "{" + ",".join(out) + "}"


def jsons(values: Sequence[Any]) -> str:
    """text[] of JSON documents (cast per element to jsonb in the statement); None is NULL."""
    return "{" + ",".join("NULL" if v is None else _quoted(_json(v)) for v in values) + "}"


def floats(values: Sequence[float] | None) -> str | None:
    """One element of a real[] column as its own literal (vectors: ``unnest`` of a 2-D array
    would flatten it); 9 significant digits round-trip a float32."""
    if values is None:
        return None
    return "{" + ",".join(map("{:.9g}".format, values)) + "}"
