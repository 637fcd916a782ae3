"""Seeded mutations of valid v1 job records: the class of input JSON (or a type-only check)
lets through and a later layer refuses, plus plain garbage. Deterministic per seed, so a failing
record can be reproduced from the test's seed and index.

Each case is ``(value bytes, timestamp_ms or None, good)``: ``good`` records must succeed, the
others must end as exactly one terminal ledger row (most as ``rejected``) without stopping the
bridge.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable, Iterator
from typing import Any

# Raw JSON fragments (not Python values: json.dumps could not write most of them).
NASTY_VALUES = [
    "NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1e39", "-3.5e38", "1e308",
    "123456789012345678901234567890", "-9223372036854775809", "9223372036854775808",
    "2147483648", "-2147483649", "true", "false", "null", "0", "-1", "1.5", "[]", "{}",
    '"\\u0000"', '"a\\u0000b"', '"\\ud800"', '"x\\udfff"', '"\\ud83d"', '"\\ud83d\\ude00"',
    '"' + "é" * 50 + '"', '""', '"   "', '"' + "x" * 300 + '"', '"\\n\\t\\r"',
    '{"a": "\\u0000"}', '{"\\u0000": 1}', '{"\\ud800": 1}', '[NaN]', '[1e999]', '[{"x": [[]]}]',
    '"2024-01-01T00:00:00Z"', "253402300800000", "-62135596800001", "99999999999999999",
]
FIELDS = ["v", "job_id", "model", "input", "priority", "deadline_ms", "tenant", "meta",
          "reply_to", "extra_field"]
INPUT_FIELDS = {"digits-mlp": ["pixels"], "minilm-l6": ["text"]}
TIMESTAMPS = [None, None, None, 1, 0, 253402300799999, 253402300800000, (1 << 62),
              -1 + (1 << 63)]


def base_message(model: str, rng: random.Random, pixels: list[list[float]]) -> dict[str, Any]:
    # Fresh job_ids every run (the mutations stay seeded): a job_id seen by an earlier run on the
    # same ledger would collapse into that run's job.
    msg: dict[str, Any] = {"v": 1, "job_id": str(uuid.uuid4()), "model": model}
    if model == "digits-mlp":
        msg["input"] = {"pixels": pixels[rng.randrange(len(pixels))]}
    else:
        msg["input"] = {"text": rng.choice(["reset my password", "where is my parcel?",
                                            "Привет, как дела?", "注文をキャンセルしたい",
                                            "🙂 thanks!", "ok"])}
    if rng.random() < 0.5:
        msg["tenant"] = rng.choice(["acme", "globex", "t-" + str(rng.randrange(99))])
    if rng.random() < 0.3:
        msg["meta"] = {"trace": rng.randrange(1 << 30), "tags": ["a", "b"]}
    if rng.random() < 0.3:
        msg["priority"] = rng.randrange(-5, 6)
    return msg


def _splice(msg: dict[str, Any], path: list[str], raw: str) -> bytes:
    """``msg`` as JSON with the value at ``path`` replaced by the raw JSON fragment ``raw``."""
    marker = f"__FUZZ_{uuid.uuid4().hex}__"
    target: Any = msg
    for key in path[:-1]:
        if not isinstance(target.get(key), dict):
            target[key] = {}
        target = target[key]
    target[path[-1]] = marker
    return json.dumps(msg, ensure_ascii=False).replace(f'"{marker}"', raw).encode()


def _mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    kind = rng.randrange(8)
    if kind == 0:
        return data[: rng.randrange(len(data))]  # truncated
    if kind == 1:
        b = bytearray(data)
        for _ in range(rng.randrange(1, 6)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)  # bit rot
    if kind == 2:
        i = rng.randrange(len(data))
        return data[:i] + rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x00"]) + data[i:]
    if kind == 3:
        return b""
    if kind == 4:
        return b"[" * rng.randrange(5, 200) + b"1" + b"]" * rng.randrange(0, 200)
    if kind == 5:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
    if kind == 6:
        return b'{"v":1,"job_id":"' + str(uuid.uuid4()).encode() + b'","model":"digits-mlp",' \
            b'"input":{"pixels":[' + b"1," * rng.randrange(70_000, 90_000) + b"1]}}"  # too big
    return json.dumps(rng.choice([[], "x", 1, None, [1, 2], {"v": 1}])).encode()


def cases(n: int, seed: int, pixels: list[list[float]], good_every: int = 3,
          models: tuple[str, ...] = ("digits-mlp",)) -> Iterator[tuple[bytes, int | None, bool]]:
    """``n`` records: every ``good_every``-th is a valid job, the rest are mutations."""
    rng = random.Random(seed)
    mutators: list[Callable[[dict[str, Any]], bytes]] = [
        lambda m: _splice(m, [rng.choice(FIELDS)], rng.choice(NASTY_VALUES)),
        lambda m: _splice(m, ["input", rng.choice(INPUT_FIELDS[m["model"]])],
                          rng.choice(NASTY_VALUES)),
        lambda m: _splice(m, ["input", "pixels"] if m["model"] == "digits-mlp"
                          else ["input", "text"],
                          "[" + ",".join(rng.choice(["1", "2.5"] + NASTY_VALUES[:14])
                                         for _ in range(64)) + "]"
                          if m["model"] == "digits-mlp" else rng.choice(NASTY_VALUES)),
        lambda m: _splice(m, ["meta", rng.choice(["k", "\u00e9", "deep"])],
                          rng.choice(NASTY_VALUES)),
        lambda m: _mutate_bytes(json.dumps(m).encode(), rng),
    ]
    for i in range(n):
        msg = base_message(rng.choice(models), rng, pixels)
        if i % good_every == 0:
            yield json.dumps(msg).encode(), None, True
            continue
        value = rng.choice(mutators)(msg)
        yield value, rng.choice(TIMESTAMPS), False
