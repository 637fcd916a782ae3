"""What the model alone allows: raw ORT CPU time per job on the e2e workload, and the drain rate
it bounds on this machine's cores.

`python -m bench.model_bound [--jobs 3000] [--batch 54] [--naive JOBS_PER_S]`

For each text model of the catalogue (minilm-l6, minilm-l6-fast: the variants of their current
builds), ``bench.workload.mixed_texts`` — the texts `agentq bench e2e` sends — go through a raw
ORT session (one intra-op thread, as a pool process runs) in length-sorted batches: no padding at
all, no queue, no ledger, tokenising included. The bound is ``cores / (µs per job)``: what a
drain could reach if every other stage (bridge, broker, Celery, PostgreSQL) cost nothing. With
``--naive`` (the naive PyTorch worker's jobs/s from the same host's `agentq bench e2e`) each
bound is also given as a ratio to it. Writes ``bench/results/model-bound.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from agentq.config import Settings
from bench.workload import mixed_texts
from models.artifacts import artifact_dir, read_manifest
from models.catalog import CATALOG
from models.minilm_build import ort_runner, session
from models.tokenizer import TextTokenizer

RESULTS = Path(__file__).parent / "results"
MODELS = ("minilm-l6", "minilm-l6-fast")


def time_variant(path: Path, tok: TextTokenizer, texts: list[str], order: np.ndarray,
                 batch: int, threads: int = 1) -> float:
    """µs of wall time per job on one session of ``threads`` intra-op threads (best of 2), the
    texts taken in ``order`` (shortest first)."""
    run = ort_runner(session(path, threads))
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        for i in range(0, len(texts), batch):
            enc = tok.encode([texts[j] for j in order[i:i + batch]])
            run(enc.input_ids, enc.attention_mask)
        best = min(best, time.perf_counter() - t0)
    return best * 1e6 / len(texts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.model_bound", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=3000)
    p.add_argument("--batch", type=int, default=54, help="texts per batch (e2e's average: 54)")
    p.add_argument("--naive", type=float, default=None,
                   help="the naive worker's jobs/s on this host (agentq bench e2e)")
    p.add_argument("--out", type=Path, default=RESULTS / "model-bound.json")
    args = p.parse_args(argv)
    models_dir = Settings.from_env().worker.models_dir
    texts = mixed_texts(args.jobs)
    cores = os.cpu_count() or 1
    res: dict[str, Any] = {"when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                           "jobs": args.jobs, "batch": args.batch, "cores": cores,
                           "naive_jobs_per_s": args.naive, "models": {}}
    for name in MODELS:
        version = CATALOG[name].version()
        directory = artifact_dir(models_dir, name, version)
        manifest = read_manifest(directory)
        if manifest is None:
            res["models"][name] = {"missing": f"no build of version {version}"}
            continue
        tok = TextTokenizer.from_artifacts(directory)
        lengths = np.array([int(tok.encode([t]).attention_mask.sum()) for t in texts])
        order = np.argsort(lengths, kind="stable")  # length-sorted batches: no padding
        res.setdefault("tokens", {"mean": round(float(lengths.mean()), 1),
                                  "median": float(np.median(lengths)), "max": int(lengths.max())})
        out = {}
        for v in manifest["variants"]:
            if v["device"] != "cpu":
                continue
            us = time_variant(directory / v["file"], tok, texts, order, args.batch)
            bound = cores * 1e6 / us
            out[v["variant"]] = {"active": v["active"], "us_per_job": round(us, 1),
                                 "jobs_per_s_per_core": round(1e6 / us, 1),
                                 "bound_jobs_per_s": round(bound, 1)}
            if args.naive:
                out[v["variant"]]["bound_vs_naive"] = round(bound / args.naive, 2)
            print(f"{name} {v['variant']}: {us:,.0f} µs/job, bound {bound:,.0f} jobs/s",
                  flush=True)
        res["models"][name] = {"version": version, "variants": out}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
