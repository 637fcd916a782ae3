"""A steady job stream for the soak, run as its own process:
``python -m tests.faults.stream --rate 20 --poison-tag TAG --out FILE [--minilm-every K]``.

``rate`` digits jobs/s in chunks of ``--period-s`` (0.1 s), paced on a clock: chunks that could not
be sent (a broker outage) are made up afterwards as fast as the producer goes, up to
``--catch-up-s`` (20 s) of them, as a producer that buffers through an outage would; every 5 s a
poison job, every 3.5 s a duplicate job_id, every 2.5 s a malformed record; with
``--minilm-every K`` one minilm-l6 job per K digits jobs. A chunk whose send fails is sent again
(same job_ids). Each acknowledged chunk is appended to FILE (``job ID`` / ``poison ID`` / ``dup`` /
``bad``) so the test knows exactly what reached Kafka. SIGTERM ends it after the current chunk.
"""

from __future__ import annotations

import argparse
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from agentq.config import Settings
from producers.contract import JobMessage
from producers.producer import JobProducer
from tests.faults.harness import digits_jobs

BAD = [b"{not json", b"\xff\xfe", b'{"v":1,"model":"digits-mlp","input":{}}']


@dataclass
class Produced:
    job_ids: list[str] = field(default_factory=list)
    poison: list[str] = field(default_factory=list)
    records: int = 0
    bad: int = 0
    send_errors: int = 0

    @classmethod
    def read(cls, path: Path) -> Produced:
        p = cls()
        for line in path.read_text().splitlines() if path.exists() else []:
            kind, _, value = line.partition(" ")
            if kind in ("job", "poison"):
                p.job_ids.append(value)
                p.records += 1
                if kind == "poison":
                    p.poison.append(value)
            elif kind in ("dup", "bad"):
                p.records += 1
                p.bad += kind == "bad"
            elif kind == "send_errors":
                p.send_errors = int(value)
        return p


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=20)
    ap.add_argument("--poison-tag", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--minilm-every", type=int, default=0)
    ap.add_argument("--period-s", type=float, default=0.1)
    ap.add_argument("--catch-up-s", type=float, default=20.0)
    args = ap.parse_args()
    texts: list[str] = []
    if args.minilm_every:
        from bench.workload import mixed_texts

        texts = mixed_texts(2000, seed=11)
    s = Settings.from_env()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    producer = None
    errors = 0
    n = 0
    period = args.period_s
    per_chunk = max(1, round(args.rate * period))
    k = max(1, round(0.5 / period))  # chunks per half second: the cadences below are in time
    minilm_due = 0.0
    t0 = time.monotonic()
    with args.out.open("a") as out:
        while not stop.is_set():
            chunk = digits_jobs(per_chunk)
            if texts:
                minilm_due += per_chunk / args.minilm_every
                while minilm_due >= 1:
                    minilm_due -= 1
                    chunk.append(JobMessage.new("minilm-l6",
                                                {"text": texts[(n + len(chunk)) % len(texts)]},
                                                tenant="soak"))
            if n % (10 * k) == 3:
                chunk += digits_jobs(1, marker=args.poison_tag)
            dup = chunk[0] if n % (7 * k) == 5 else None
            bad = BAD[(n // (5 * k)) % len(BAD)] if n % (5 * k) == 1 else None
            while True:
                try:
                    producer = producer or JobProducer(s.kafka, s.limits)
                    futures = [producer.send(j) for j in chunk]
                    if dup is not None:
                        futures.append(producer.send(dup))
                    if bad is not None:
                        futures.append(producer.send_raw(bad))
                    for f in futures:
                        f.get(timeout=60)
                    break
                except Exception:
                    errors += 1
                    time.sleep(1)
            for j in chunk:
                out.write(f"{'poison' if 'tag' in j.input else 'job'} {j.job_id}\n")
            out.write("dup\n" if dup is not None else "")
            out.write("bad\n" if bad is not None else "")
            out.flush()
            n += 1
            ahead = t0 + n * period - time.monotonic()
            if ahead > 0:
                stop.wait(ahead)
            elif ahead < -args.catch_up_s:  # owed more than that: drop the rest of the debt
                t0 = time.monotonic() - n * period - args.catch_up_s
        out.write(f"send_errors {errors}\n")
    if producer is not None:
        producer.close()


if __name__ == "__main__":
    main()
