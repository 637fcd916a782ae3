"""`agentq bench shm`: shared-memory tensors vs pickling, and the engine process vs in-process
sessions.

1. Transport: a tensor of 4 KB … 64 MB goes from this process to a child process and the child
   acknowledges. *shm*: the tensor is written once into a slab slot and only (slot, shape, dtype)
   crosses a multiprocessing Pipe; the child maps it as a numpy view. *pickle*: ``Connection.send``
   of the array (pickle, pipe write, unpickle in the child). µs per transfer and GB/s.
2. Worker path throughput: P processes (P = CPU count) run the pool's inference loop —
   ``handler.prepare`` → ``engine.run`` → ``handler.results`` on batches of 64 — for a fixed time,
   with in-process sessions and with the shared engine process; rounds alternate so background
   load hits both alike; the best round of each counts. Models: digits-mlp, and minilm-l6 when it
   is registered.

Writes bench/results/shm.json and bench/results/shm.png. Options: --quick, --seconds, --out.
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

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = [4 << 10, 64 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20]
_DESC = struct.Struct("<iq")  # slot, n float32


# ---- 1. transport ---------------------------------------------------------------------------
def _echo(conn: Any, slab_name: str, shm_dir: str) -> None:
    from workers.shm import Slab

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
    from workers.shm import Slab

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


# ---- 2. worker path throughput --------------------------------------------------------------
def _inputs(model: str, n: int) -> list[dict[str, Any]]:
    if model == "digits-mlp":
        from sklearn.datasets import load_digits

        data = load_digits().data
        return [{"pixels": data[i % len(data)].tolist()} for i in range(n)]
    words = "agents send short jobs to a queue and read the embeddings back from postgres".split()
    rng = np.random.default_rng(0)
    return [{"text": " ".join(rng.choice(words, size=12 + i % 20))} for i in range(n)]


def _worker(mode: str, model: str, opts_json: str, seconds: float, batch: int,
            ready: Any, start: Any, out: Any) -> None:
    from agentq.config import Settings
    from workers.handlers import make_handler

    settings = Settings.from_env()
    if mode == "shared":
        from workers.engine_client import EngineClient, EngineOptions

        engine: Any = EngineClient(settings.worker, EngineOptions.from_json(opts_json))
        engine.wait_ready(60)
    else:
        from storage.db import make_engine
        from workers.engine import InferenceEngine

        engine = InferenceEngine(settings.worker, make_engine(settings.worker_database_url,
                                                              pool_size=1, app_name="bench"))
    handler = make_handler(model)
    inputs = _inputs(model, batch)
    engine.run(model, handler.prepare(inputs).feeds)  # warm
    ready.put(os.getpid())
    start.wait()
    done, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        prepared = handler.prepare(inputs)
        handler.results(engine.run(model, prepared.feeds), prepared)
        done += batch
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
    from agentq.config import Settings
    from workers.engine_client import EngineClient, EngineOptions

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
            batch = 64 if model == "digits-mlp" else 32
            got: dict[str, list[float]] = {"inprocess": [], "shared": []}
            for r in range(rounds):
                for mode in ("inprocess", "shared") if r % 2 == 0 else ("shared", "inprocess"):
                    jps = _round(mode, model, procs, seconds, batch, opts.to_json())
                    got[mode].append(round(jps, 1))
                    progress(f"{model} {mode} round {r + 1}: {jps:,.0f} jobs/s")
            best = {m: max(v) for m, v in got.items()}
            stats = keeper.stats()
            results[model] = {"batch": batch, "processes": procs, "seconds": seconds,
                              "rounds": got, "best_jobs_s": best,
                              "shared_over_inprocess": round(best["shared"] / best["inprocess"], 3),
                              "engine_batches": stats["batches"],
                              "engine_merged_requests": stats["merged"]}
    finally:
        pid = keeper.engine_pid
        keeper.close()
        if pid:
            os.kill(pid, signal.SIGTERM)
    return results


def _registered(names: list[str]) -> list[str]:
    from agentq.config import Settings
    from storage.db import make_engine
    from storage.registry import registered_names

    s = Settings.from_env()
    eng = make_engine(s.worker_database_url, pool_size=1, app_name="bench")
    try:
        with eng.connect() as conn:
            have = registered_names(conn)
    finally:
        eng.dispose()
    return [n for n in names if n in have]


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for method, style in (("shm", "o-"), ("pickle", "s--")):
        pts = [r for r in result["transport"] if r["method"] == method]
        a.loglog([r["bytes"] for r in pts], [r["us"] for r in pts], style, label=method)
    a.set_xlabel("tensor bytes")
    a.set_ylabel("µs per transfer (median)")
    a.set_title("process-to-process transfer")
    a.grid(True, which="both", alpha=0.3)
    a.legend()
    models = list(result["throughput"])
    x = np.arange(len(models))
    for k, mode in enumerate(("inprocess", "shared")):
        vals = [result["throughput"][m]["best_jobs_s"][mode] for m in models]
        b.bar(x + (k - 0.5) * 0.38, vals, 0.38, label=mode)
    b.set_xticks(x, models)
    b.set_ylabel("jobs/s (worker path)")
    b.set_title(f"engine vs in-process, {result['machine']['cpus']} CPU(s)")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="agentq bench shm")
    p.add_argument("--quick", action="store_true", help="fewer sizes and shorter rounds")
    p.add_argument("--seconds", type=float, default=6.0, help="length of one throughput round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--procs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    sizes = [4 << 10, 1 << 20, 64 << 20] if args.quick else SIZES
    seconds = 2.0 if args.quick else args.seconds
    t_start = time.perf_counter()

    def progress(text: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.1f}s] {text}", flush=True)

    result: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "load_avg_start": os.getloadavg()},
        "transport": transport(sizes, 0.15 if args.quick else 0.4, progress)}
    ratios = {}
    for size in sizes:
        us = {r["method"]: r["us"] for r in result["transport"] if r["bytes"] == size}
        ratios[str(size)] = round(us["pickle"] / us["shm"], 2)
    result["pickle_over_shm"] = ratios
    models = _registered(["digits-mlp", "minilm-l6"])
    result["throughput"] = throughput(models, args.procs, seconds, args.rounds, progress)
    cpu_ratios = [v["shared_over_inprocess"] for v in result["throughput"].values()]
    result["default_engine_mode"] = {
        "cpu": "shared" if cpu_ratios and min(cpu_ratios) >= 1.0 else "inprocess",
        "cuda": "shared (one process owns the device; not measured here)"}
    result["machine"]["load_avg_end"] = os.getloadavg()
    result["elapsed_s"] = round(time.perf_counter() - t_start, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "shm.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out / "shm.png")
    progress(f"pickle/shm time ratio by size: {ratios}")
    for m, v in result["throughput"].items():
        progress(f"{m}: in-process {v['best_jobs_s']['inprocess']:,.0f} jobs/s, shared engine "
                 f"{v['best_jobs_s']['shared']:,.0f} jobs/s ({v['shared_over_inprocess']}x)")
    progress(f"wrote {args.out / 'shm.json'} and {args.out / 'shm.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
