"""`agentq bench shm`: shared-memory tensors vs pickling, and the engine process vs in-process
sessions, at the worker and end to end.

1. Transport: a tensor of 4 KB … 64 MB goes from this process to a child process and the child
   acknowledges. *shm*: the tensor is written once into a slab slot and only (slot, shape, dtype)
   crosses a multiprocessing Pipe; the child maps it as a numpy view. *pickle*: ``Connection.send``
   of the array (pickle, pipe write, unpickle in the child). µs per transfer and GB/s.
2. Worker path: P processes (P = CPU count) run what ``run_batch`` does around the database —
   ``handler.prepare`` → ``engine.run`` → ``handler.results`` — on batches as the bridge dispatches
   them under a backlog (digits-mlp: ``max_batch`` × ``MODEL_BATCH_SCALE`` = 256 rows in arrival
   order; minilm-l6: 64 texts of one token bucket), for a fixed time, with in-process sessions and
   with the shared engine process (started once, default options); rounds alternate (ABBA) so
   background load hits both alike; medians.
3. End to end: per drain a fresh topic, DLQ, consumer group and Celery queue, a real Celery
   worker (prefork, concurrency P) with ``AGENTQ_WORKER_ENGINE_MODE`` = inprocess or shared, and
   a real bridge (``ops.stack.Stack``); a warm-up, then a backlog pre-loaded while no bridge
   reads, then the bridge starts; jobs/s = jobs / (last finished_at − first received_at) from the
   ledger. Modes alternate drain by drain (ABBA); medians; the 1-minute load average is recorded
   per drain (the benchmark machine is shared).

Writes bench/results/shm.json and bench/results/shm.png. Options: --quick, --seconds, --rounds,
--reps, --e2e-digits, --e2e-minilm, --skip transport,worker,e2e, --out.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import signal
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.shm_e2e import _order, _registered, bridge_batch, end_to_end, summarize

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = [4 << 10, 64 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20]
_DESC = struct.Struct("<iq")  # slot, n float32


# ---- 1. transport ---------------------------------------------------------------------------
def _echo(conn: Any, slab_name: str, shm_dir: str) -> None:
    from engine.slab import Slab

    slab = Slab.attach(slab_name, Path(shm_dir))
    while True:
        msg = conn.recv_bytes()
        if msg == b"stop":
            break
        if msg[:1] == b"P":  # pickled: unpickle to a private array
            arr = conn.recv()
            conn.send_bytes(struct.pack("<q", arr.shape[0]))
        else:
            slot, n = _DESC.unpack(msg)
            view = slab.view(slot, 0, (n,), "float32")
            conn.send_bytes(struct.pack("<q", view.shape[0]))
            del view
    slab.close()


def _time_transfers(fn: Any, budget_s: float, min_reps: int = 3) -> float:
    fn()  # warm
    times: list[float] = []
    end = time.perf_counter() + budget_s
    while len(times) < min_reps or (time.perf_counter() < end and len(times) < 2000):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def transport(sizes: list[int], budget_s: float, progress: Any) -> list[dict[str, Any]]:
    from engine.slab import Slab

    ctx = mp.get_context("spawn")
    rows = []
    with Slab.create(n_slots=1, slot_bytes=max(sizes)) as slab:
        parent, child_end = ctx.Pipe()
        child = ctx.Process(target=_echo, args=(child_end, slab.name, str(slab.path.parent)))
        child.start()
        try:
            slot = slab.alloc()
            for size in sizes:
                arr = np.random.default_rng(0).random(size // 4, dtype=np.float32)

                def via_shm(arr: np.ndarray = arr) -> None:
                    slab.put(slot, [arr])  # the one write into shared memory
                    parent.send_bytes(_DESC.pack(slot, arr.shape[0]))
                    parent.recv_bytes()

                def via_pickle(arr: np.ndarray = arr) -> None:
                    parent.send_bytes(b"P")
                    parent.send(arr)
                    parent.recv_bytes()

                for method, fn in (("shm", via_shm), ("pickle", via_pickle)):
                    s = _time_transfers(fn, budget_s)
                    rows.append({"bytes": size, "method": method, "us": round(s * 1e6, 1),
                                 "gb_s": round(size / s / 1e9, 3)})
                    progress(f"transport {size >> 10} KiB {method}: {s * 1e6:,.0f} µs")
            parent.send_bytes(b"stop")
        finally:
            child.join(10)
            if child.is_alive():
                child.kill()
    return rows


def _batches(model: str, batch: int, n_batches: int = 24, seed: int = 0) -> list[list[dict]]:
    """Job inputs in batches as the bridge forms them: digits in arrival order; minilm texts
    grouped by token bucket (bridge.buckets) so each batch is padded to similar lengths."""
    from producers.synthetic import synthetic_jobs

    jobs = [j.input for j in synthetic_jobs(model, batch * n_batches, seed=seed)]
    if model != "minilm-l6":
        return [jobs[i:i + batch] for i in range(0, len(jobs), batch)]
    from bridge.buckets import token_bucket
    from models.minilm_l6 import make_token_counter

    count = make_token_counter()
    by_bucket: dict[int, list[dict]] = {}
    for inp in jobs:
        by_bucket.setdefault(token_bucket(count(inp)), []).append(inp)
    out = []
    for items in by_bucket.values():
        out += [items[i:i + batch] for i in range(0, len(items), batch)]
    return out


def _worker(mode: str, model: str, opts_json: str, seconds: float, batch: int,
            ready: Any, start: Any, out: Any) -> None:
    from agentq.config import Settings
    from models.catalog import CATALOG

    settings = Settings.from_env()
    if mode == "shared":
        from engine.client import EngineClient
        from engine.protocol import options_from_json

        engine: Any = EngineClient(settings.worker, options_from_json(opts_json))
        engine.wait_ready(60)
    else:
        from engine.sessions import InferenceEngine
        from storage.db import make_engine

        engine = InferenceEngine(settings.worker, make_engine(settings.worker_database_url,
                                                              pool_size=1, app_name="bench"))
    handler = CATALOG[model].make_handler(None)
    batches = _batches(model, batch, seed=os.getpid())
    for inputs in batches[:4]:  # warm
        engine.run(model, handler.prepare(inputs).feeds)
    ready.put(os.getpid())
    start.wait()
    done, k, end = 0, 0, time.perf_counter() + seconds
    while time.perf_counter() < end:  # what run_batch does around the database
        inputs = batches[k % len(batches)]
        prepared = handler.prepare(inputs)
        handler.results(engine.run(model, prepared.feeds), prepared)
        done += len(inputs)
        k += 1
    out.put(done)


def _round(mode: str, model: str, procs: int, seconds: float, batch: int,
           opts_json: str) -> float:
    ctx = mp.get_context("spawn")
    ready, start, out = ctx.Queue(), ctx.Event(), ctx.Queue()
    ps = [ctx.Process(target=_worker, args=(mode, model, opts_json, seconds, batch, ready, start,
                                            out))
          for _ in range(procs)]
    for p in ps:
        p.start()
    for _ in ps:  # every process set up and warm: the timed windows overlap
        ready.get(timeout=120)
    start.set()
    total = sum(out.get(timeout=seconds + 120) for _ in ps)
    for p in ps:
        p.join(30)
    return total / seconds


def throughput(models: list[str], procs: int, seconds: float, rounds: int,
               progress: Any) -> dict[str, Any]:
    """Worker path: P pool-like processes, in-process sessions vs the shared engine (started
    once with its default options, as a Celery worker would), interleaved rounds, medians."""
    from agentq.config import EngineOptions, Settings
    from engine.client import EngineClient
    from engine.protocol import options_json

    settings = Settings.from_env()
    run_dir = Path(tempfile.mkdtemp(prefix="agentq-bench-engine-"))
    opts = EngineOptions(run_dir=run_dir, watch_pid=os.getpid())
    keeper = EngineClient(settings.worker, opts)  # starts the engine once, for every round
    if not keeper.wait_ready(90):
        raise RuntimeError("engine did not start")
    results: dict[str, Any] = {}
    try:
        for model in models:
            keeper.model(model)
            batch = bridge_batch(model)
            before = keeper.stats()
            got: dict[str, list[float]] = {"inprocess": [], "shared": []}
            for r in range(rounds):
                for mode in _order(r, ("inprocess", "shared")):
                    jps = _round(mode, model, procs, seconds, batch, options_json(opts))
                    got[mode].append(round(jps, 1))
                    progress(f"worker path {model} {mode} round {r + 1}: {jps:,.0f} jobs/s")
            stats = keeper.stats()
            results[model] = {"batch": batch, "processes": procs, "seconds": seconds,
                              "engine_runners": stats.get("threads"),
                              "rounds": got, **summarize(got),
                              "engine_batches": stats["batches"] - before["batches"],
                              "engine_merged_requests": stats["merged"] - before["merged"]}
    finally:
        pid = keeper.engine_pid
        keeper.close()
        if pid:
            os.kill(pid, signal.SIGTERM)
    return results


CLEAR_WIN = 1.05  # the engine must beat in-process by this much on every model to be the default


def default_modes(result: dict[str, Any]) -> dict[str, Any]:
    """The measured default per device: on CPU the engine only if its median paired end-to-end
    ratio is >= CLEAR_WIN for every model (a tie goes to in-process sessions: one process fewer,
    no socket hop); on CUDA the engine (one process owns the device, pool processes never touch
    CUDA; not measured here)."""
    deciding = result.get("end_to_end") or result.get("throughput") or {}
    ratios = {m: v["paired_ratio_median"] for m, v in deciding.items()}
    return {"cpu": "shared" if ratios and min(ratios.values()) >= CLEAR_WIN else "inprocess",
            "cuda": "shared", "rule": f"cpu: shared when every paired ratio median >= "
                                      f"{CLEAR_WIN}", "ratios": ratios,
            "decided_by": "end_to_end" if result.get("end_to_end") else "throughput"}


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    a = axes[0]
    for method, style in (("shm", "o-"), ("pickle", "s--")):
        pts = [r for r in result.get("transport", []) if r["method"] == method]
        a.loglog([r["bytes"] for r in pts], [r["us"] for r in pts], style, label=method)
    a.set_xlabel("tensor bytes")
    a.set_ylabel("µs per transfer (median)")
    a.set_title("process-to-process transfer")
    a.grid(True, which="both", alpha=0.3)
    a.legend()
    for ax, key, title in ((axes[1], "throughput", "worker path (prepare → engine → results)"),
                           (axes[2], "end_to_end", "end to end (Kafka → … → Postgres)")):
        part = result.get(key, {})
        models = list(part)
        x = np.arange(len(models))
        for k, mode in enumerate(("inprocess", "shared")):
            vals = [part[m]["median_jobs_s"][mode] for m in models]
            bars = ax.bar(x + (k - 0.5) * 0.38, vals, 0.38, label=mode)
            if mode == "shared":
                for b, m in zip(bars, models, strict=True):
                    ax.annotate(f"{part[m]['shared_over_inprocess']:.2f}×",
                                (b.get_x() + b.get_width() / 2, b.get_height()),
                                ha="center", va="bottom", fontsize=8)
        ax.set_xticks(x, models)
        ax.set_yscale("log")
        ax.set_ylabel("jobs/s (median, log scale)")
        ax.set_title(f"{title}\n{result['machine']['cpus']} shared CPU(s)", fontsize=9)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="fewer sizes, shorter rounds, fewer jobs")
    p.add_argument("--seconds", type=float, default=6.0, help="length of one worker-path round")
    p.add_argument("--rounds", type=int, default=3, help="worker-path rounds per mode")
    p.add_argument("--reps", type=int, default=3, help="end-to-end drains per mode")
    p.add_argument("--procs", type=int, default=os.cpu_count() or 1,
                   help="pool processes (worker path) and Celery concurrency (end to end)")
    p.add_argument("--e2e-digits", type=int, default=20_000, help="digits-mlp jobs per drain")
    p.add_argument("--e2e-minilm", type=int, default=1_500, help="minilm-l6 jobs per drain")
    p.add_argument("--models", default="digits-mlp,minilm-l6")
    p.add_argument("--skip", default="", help="comma list of parts: transport,worker,e2e")
    p.add_argument("--timeout-s", type=float, default=600)
    p.add_argument("--out", type=Path, default=RESULTS)


def register(sub: Any) -> None:
    p = sub.add_parser("shm", help="shared memory vs pickling; engine vs in-process",
                       description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(run=command)


def main(argv: list[str] | None = None) -> int:
    from agentq.config import Settings

    p = argparse.ArgumentParser(prog="agentq bench shm")
    add_arguments(p)
    return command(p.parse_args(argv), Settings.from_env())


def command(args: argparse.Namespace, settings: Any) -> int:
    skip = set(filter(None, args.skip.split(",")))
    sizes = [4 << 10, 1 << 20, 64 << 20] if args.quick else SIZES
    seconds = 2.0 if args.quick else args.seconds
    e2e_jobs = {"digits-mlp": args.e2e_digits, "minilm-l6": args.e2e_minilm}
    if args.quick:
        e2e_jobs = {k: v // 5 for k, v in e2e_jobs.items()}
    t_start = time.perf_counter()

    def progress(text: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.1f}s] {text}", flush=True)

    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "load_avg_start": os.getloadavg()},
        "when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    if "transport" not in skip:
        result["transport"] = transport(sizes, 0.15 if args.quick else 0.4, progress)
        ratios = {}
        for size in sizes:
            us = {r["method"]: r["us"] for r in result["transport"] if r["bytes"] == size}
            ratios[str(size)] = round(us["pickle"] / us["shm"], 2)
        result["pickle_over_shm"] = ratios
        progress(f"pickle/shm time ratio by size: {ratios}")
    models = _registered([m for m in args.models.split(",") if m])
    if "worker" not in skip:
        result["throughput"] = throughput(models, args.procs, seconds, args.rounds, progress)
        result["machine"]["load_avg_after_worker_path"] = os.getloadavg()
    if "e2e" not in skip:
        result["end_to_end"] = end_to_end(models, e2e_jobs, args.procs,
                                          1 if args.quick else args.reps, args.timeout_s,
                                          progress)
    result["default_engine_mode"] = default_modes(result)
    result["machine"]["load_avg_end"] = os.getloadavg()
    result["elapsed_s"] = round(time.perf_counter() - t_start, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "shm.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out / "shm.png")
    for key in ("throughput", "end_to_end"):
        for m, v in result.get(key, {}).items():
            med = v["median_jobs_s"]
            progress(f"{key} {m}: in-process {med['inprocess']:,.0f} jobs/s, shared engine "
                     f"{med['shared']:,.0f} jobs/s ({v['shared_over_inprocess']}x of medians, "
                     f"{v['paired_ratio_median']}x median of paired runs)")
    progress(f"wrote {args.out / 'shm.json'} and {args.out / 'shm.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
