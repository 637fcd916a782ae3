"""`agentq bench models|e2e|roundtrip|shm|burst`: benchmarks, each writing JSON (most also a
plot) to bench/results."""

from __future__ import annotations

from typing import Any

from bench import burst, e2e, models_bench, roundtrip, shm_bench

BENCHMARKS = (models_bench, e2e, roundtrip, shm_bench, burst)


def register(sub: Any) -> None:
    p = sub.add_parser("bench", help="benchmarks: models | e2e | roundtrip | shm | burst",
                       description=__doc__)
    which = p.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    for module in BENCHMARKS:
        module.register(which)
