"""How fast one `JobProducer` process publishes digits jobs (acks=all, idempotence, lz4), with
agentq's partitioner against kafka-python's default one in the same run.

``python -m bench.producer_rate [--jobs 60000] [--rounds 3]``: for each round and each partitioner
(interleaved), a fresh topic, 2,000 warm-up sends, then ``--jobs`` sends and a flush, timed by the
wall clock and by this process's CPU (the main thread and kafka-python's sender thread). Both
partitioners put every key on the same partition (``tests/unit/test_partitioner.py``); only the
cost differs. Writes ``bench/results/producer.json`` and ``producer.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = ("kafka-python DefaultPartitioner", "agentq KeyHashPartitioner")


def one(settings: Any, jobs: list[Any], variant: str) -> dict[str, float]:
    from kafka.partitioner.default import DefaultPartitioner

    from producers.partitioner import KeyHashPartitioner
    from producers.producer import JobProducer
    from producers.topics import delete_topics, ensure_topics

    kafka = replace(settings.kafka, jobs_topic=f"agentq.bench.producer-{uuid.uuid4().hex[:8]}")
    ensure_topics(kafka)
    part = DefaultPartitioner() if variant == VARIANTS[0] else KeyHashPartitioner()
    try:
        with JobProducer(kafka, settings.limits, partitioner=part) as producer:
            for job in jobs[:2000]:
                producer.send(job)
            producer.flush()
            c0, t0 = time.process_time(), time.perf_counter()
            for job in jobs:
                producer.send(job)
            producer.flush()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        delete_topics(kafka, [kafka.jobs_topic])
    return {"jobs_per_s": round(len(jobs) / wall),
            "cpu_us_per_job": round(cpu / len(jobs) * 1e6, 1)}


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    names = list(report["median"])
    rates = [report["median"][n]["jobs_per_s"] for n in names]
    ax.barh(names, rates, color=["#999999", "#3b7dd8"])
    for y, r in enumerate(rates):
        ax.text(r, y, f" {r:,.0f}", va="center")
    ax.axvline(20_000, color="#c33", linestyle="--", linewidth=1, label="20,000 jobs/s")
    ax.set_xlabel("digits jobs/s from one JobProducer process (median of rounds)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.producer_rate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=60_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args(argv)

    from agentq.config import Settings
    from bench.e2e import cpu_model
    from producers.contract import JobMessage

    settings = Settings.from_env()
    rng = random.Random(0)
    jobs = [JobMessage.new("digits-mlp", {"pixels": [float(rng.randint(0, 16)) for _ in range(64)]})
            for _ in range(a.jobs)]
    runs: list[dict[str, Any]] = []
    load_start = round(os.getloadavg()[0], 2)
    for rnd in range(a.rounds):
        for variant in VARIANTS:
            r = {"round": rnd, "variant": variant, **one(settings, jobs, variant)}
            runs.append(r)
            print(f"{variant}: {r['jobs_per_s']:,} jobs/s, {r['cpu_us_per_job']} µs CPU/job",
                  flush=True)
    median = {v: {k: statistics.median(r[k] for r in runs if r["variant"] == v)
                  for k in ("jobs_per_s", "cpu_us_per_job")} for v in VARIANTS}
    report = {"when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
              "cpu_model": cpu_model(), "jobs": a.jobs, "rounds": a.rounds,
              "load_start": load_start, "load_end": round(os.getloadavg()[0], 2),
              "median": median,
              "ratio": round(median[VARIANTS[1]]["jobs_per_s"] / median[VARIANTS[0]]["jobs_per_s"],
                             3),
              "runs": runs}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "producer.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(report, a.out / "producer.png")
    print(json.dumps({"median": median, "ratio": report["ratio"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
