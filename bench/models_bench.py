"""Model benchmark: PyTorch eager fp32 vs ONNX Runtime fp32 vs fused vs int8, same threads.

`agentq bench models [--threads N] [--models-dir DIR] [--out DIR] [--quick]`

minilm-l6 over batch sizes 1/8/32/128 × padded lengths 16/64/128; digits-mlp over batch sizes
only. Inputs are pre-tokenised (the ceiling: no tokenizer, no queue, no database). For each
shape the engines are warmed up, then timed in alternating rounds; big shapes get few rounds, so
a full run stays within a few minutes on two cores. Throughput and ratios use each engine's best
time (``ms``; the median is kept as ``ms_median``). Writes ``models.json`` and ``models.png``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

BATCHES = [1, 8, 32, 128]
LENGTHS = [16, 64, 128]
MINILM_ENGINES = ["torch-fp32", "ort-fp32", "ort-fused", "ort-int8"]
DIGITS_ENGINES = ["torch-fp32", "ort-fp32", "ort-int8"]


def time_interleaved(fns: dict[str, Callable[[], Any]], target_s: float, min_rounds: int = 2,
                     max_rounds: int = 50) -> dict[str, dict[str, float]]:
    """Time several engines on one shape in alternating rounds (one call each per round).

    Interleaving keeps a comparison fair when the machine's load changes during the run; the
    best (minimum) time is the least disturbed estimate and is what the ratios use, the median
    is kept beside it. Each engine is warmed up once first.
    """
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    rounds = 0
    while rounds < max_rounds and (rounds < min_rounds
                                   or time.perf_counter() - start < target_s * len(fns)):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        rounds += 1
    return {name: {"min_s": min(t), "median_s": statistics.median(t), "repeats": len(t)}
            for name, t in times.items()}


def _row(engine: str, batch: int, t: dict[str, float], length: int | None = None
         ) -> dict[str, Any]:
    row: dict[str, Any] = {"engine": engine, "batch": batch}
    if length is not None:
        row["length"] = length
    row.update(ms=round(t["min_s"] * 1000, 4), ms_median=round(t["median_s"] * 1000, 4),
               items_per_s=round(batch / t["min_s"], 1), repeats=int(t["repeats"]))
    return row


def _minilm_inputs(batch: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(batch * 1000 + length)
    ids = rng.integers(1000, 29000, size=(batch, length), dtype=np.int64)
    ids[:, 0], ids[:, -1] = 101, 102
    return ids, np.ones_like(ids)


def cpu_session(path: Path, threads: int) -> Any:
    """An ONNX Runtime CPU session with ``threads`` intra-op threads (every bench uses this)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def registry_file(settings: Any, path: str) -> Path:
    """A registry row's model path: absolute, or relative to the workers' models directory."""
    p = Path(path)
    return p if p.is_absolute() else settings.worker.models_dir / p


def _files(manifest: dict[str, Any], models_dir: Path) -> dict[str, Path]:
    base = models_dir / manifest["name"] / manifest["version"]
    return {v["variant"]: base / v["file"] for v in manifest["variants"]}


def minilm_runners(manifest: dict[str, Any], models_dir: Path, threads: int
                   ) -> dict[str, Callable[[np.ndarray, np.ndarray], Any]]:
    import torch

    from models import minilm
    from models.tokenizer import package_model_dir

    files = _files(manifest, models_dir)
    model = minilm.load_model(package_model_dir())
    runners: dict[str, Callable[[np.ndarray, np.ndarray], Any]] = {}

    def torch_run(ids: np.ndarray, mask: np.ndarray) -> Any:
        with torch.inference_mode():
            return model(torch.from_numpy(ids), torch.from_numpy(mask))

    runners["torch-fp32"] = torch_run
    if "fused" not in files:  # not registered: it did not pay (docs/models.md); bench it anyway
        from models.minilm_build import fuse

        files["fused"] = Path(tempfile.mkdtemp(prefix="agentq-fused-")) / "fused.onnx"
        fuse(files["fp32"], files["fused"])
    for engine, variant in (("ort-fp32", "fp32"), ("ort-fused", "fused"), ("ort-int8", "int8")):
        sess = cpu_session(files[variant], threads)
        runners[engine] = (lambda s: lambda ids, mask: s.run(
            None, {"input_ids": ids, "attention_mask": mask}))(sess)
    return runners


def digits_runners(manifest: dict[str, Any], models_dir: Path, threads: int
                   ) -> dict[str, Callable[[np.ndarray], Any]]:
    import torch

    from models import digits, digits_build

    files = _files(manifest, models_dir)
    model = digits_build._train_single_thread(digits, digits.load_data())
    runners: dict[str, Callable[[np.ndarray], Any]] = {}

    def torch_run(x: np.ndarray) -> Any:
        with torch.inference_mode():
            return model(torch.from_numpy(x))

    runners["torch-fp32"] = torch_run
    for engine, variant in (("ort-fp32", "fp32"), ("ort-int8", "int8")):
        sess = cpu_session(files[variant], threads)
        runners[engine] = (lambda s: lambda x: s.run(None, {"pixels": x}))(sess)
    return runners


def ratios(rows: list[dict[str, Any]], pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Throughput ratio a/b per shape, and the median over shapes, for each (a, b)."""
    by = {(r["engine"], r["batch"], r.get("length")): r["items_per_s"] for r in rows}
    shapes = sorted({(r["batch"], r.get("length")) for r in rows}, key=lambda s: (s[0], s[1] or 0))
    out: dict[str, Any] = {}
    for a, b in pairs:
        per = {f"b{bs}" + (f"_l{ln}" if ln else ""): round(by[(a, bs, ln)] / by[(b, bs, ln)], 3)
               for bs, ln in shapes if (a, bs, ln) in by and (b, bs, ln) in by}
        out[f"{a}/{b}"] = {"median": round(statistics.median(per.values()), 3), "per_shape": per}
    return out


def run(models_dir: Path, threads: int, quick: bool = False) -> dict[str, Any]:
    import torch

    from models.build import build_models

    torch.set_num_threads(threads)
    manifests = {m["name"]: m for m in build_models(None, models_dir, None)}
    batches, lengths = ([1, 32], [16, 64]) if quick else (BATCHES, LENGTHS)
    cells = len(batches) * (len(lengths) * len(MINILM_ENGINES) + len(DIGITS_ENGINES))
    result: dict[str, Any] = {"meta": {
        "threads": threads, "cpu_count": os.cpu_count(), "machine": platform.processor()
        or platform.machine(), "torch": dist_version("torch"),
        "onnxruntime": dist_version("onnxruntime"),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": {n: m["version"] for n, m in manifests.items()},
        "inputs": "pre-tokenised, every row padded to the full length (attention mask all ones)",
        "statistic": "items_per_s and ratios from the best of the interleaved rounds",
        "load_avg_1m_start": round(os.getloadavg()[0], 2),
    }, "minilm-l6": [], "digits-mlp": []}
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/"
                  "{task.total}"), TimeElapsedColumn()) as progress:
        task = progress.add_task("loading models", total=cells)
        mr = minilm_runners(manifests["minilm-l6"], models_dir, threads)
        for length in lengths:
            for batch in batches:
                ids, mask = _minilm_inputs(batch, length)
                progress.update(task, description=f"minilm-l6 batch {batch} length {length}")
                big = batch * length >= 4096
                timed = time_interleaved(
                    {e: functools.partial(mr[e], ids, mask) for e in MINILM_ENGINES},
                    target_s=0.4 if big else 0.8, min_rounds=2, max_rounds=4 if big else 50)
                result["minilm-l6"] += [_row(e, batch, t, length) for e, t in timed.items()]
                progress.advance(task, len(MINILM_ENGINES))
        dr = digits_runners(manifests["digits-mlp"], models_dir, threads)
        rng = np.random.default_rng(0)
        for batch in batches:
            x = rng.integers(0, 17, size=(batch, 64)).astype(np.float32)
            progress.update(task, description=f"digits-mlp batch {batch}")
            timed = time_interleaved({e: functools.partial(dr[e], x) for e in DIGITS_ENGINES},
                                     target_s=0.3, min_rounds=20, max_rounds=2000)
            result["digits-mlp"] += [_row(e, batch, t) for e, t in timed.items()]
            progress.advance(task, len(DIGITS_ENGINES))
    result["meta"]["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    result["ratios"] = {
        "minilm-l6": ratios(result["minilm-l6"], [
            ("ort-int8", "torch-fp32"), ("ort-int8", "ort-fp32"), ("ort-fused", "ort-fp32"),
            ("ort-fp32", "torch-fp32"), ("ort-int8", "ort-fused")]),
        "digits-mlp": ratios(result["digits-mlp"], [
            ("ort-fp32", "torch-fp32"), ("ort-int8", "ort-fp32"), ("ort-int8", "torch-fp32")]),
    }
    return result


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["minilm-l6"]
    batches = sorted({r["batch"] for r in rows})
    lengths = sorted({r["length"] for r in rows})
    fig, axes = plt.subplots(2, 2, figsize=(12, 9))
    mid_len = 64 if 64 in lengths else lengths[-1]
    mid_batch = 32 if 32 in batches else batches[-1]
    ax = axes[0][0]
    for e in MINILM_ENGINES:
        pts = sorted((r["batch"], r["items_per_s"]) for r in rows
                     if r["engine"] == e and r["length"] == mid_len)
        ax.plot(*zip(*pts, strict=True), marker="o", label=e)
    ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="sentences/s",
           title=f"minilm-l6, padded length {mid_len}")
    ax.set_xticks(batches, [str(b) for b in batches])
    ax = axes[0][1]
    width = 0.8 / len(MINILM_ENGINES)
    for i, e in enumerate(MINILM_ENGINES):
        vals = [next(r["items_per_s"] for r in rows if r["engine"] == e and r["length"] == ln
                     and r["batch"] == mid_batch) for ln in lengths]
        ax.bar(np.arange(len(lengths)) + i * width, vals, width, label=e)
    ax.set_xticks(np.arange(len(lengths)) + 0.4 - width / 2, [str(x) for x in lengths])
    ax.set(yscale="log", xlabel="padded length", ylabel="sentences/s",
           title=f"minilm-l6, batch {mid_batch}: padding is the biggest lever")
    ax = axes[1][0]
    per = result["ratios"]["minilm-l6"]
    grid = np.array([[per["ort-int8/torch-fp32"]["per_shape"][f"b{b}_l{ln}"] for b in batches]
                     for ln in lengths])
    im = ax.imshow(grid, cmap="viridis", aspect="auto")
    for (i, j), v in np.ndenumerate(grid):
        ax.text(j, i, f"{v:.2f}×", ha="center", va="center", color="white")
    ax.set_xticks(range(len(batches)), [str(b) for b in batches])
    ax.set_yticks(range(len(lengths)), [str(x) for x in lengths])
    ax.set(xlabel="batch size", ylabel="padded length", title="minilm-l6: ORT int8 / torch fp32")
    fig.colorbar(im, ax=ax)
    ax = axes[1][1]
    for e in DIGITS_ENGINES:
        pts = sorted((r["batch"], r["items_per_s"]) for r in result["digits-mlp"]
                     if r["engine"] == e)
        ax.plot(*zip(*pts, strict=True), marker="o", label=e)
    ax.set(xscale="log", yscale="log", xlabel="batch size", ylabel="items/s",
           title="digits-mlp")
    ax.set_xticks(batches, [str(b) for b in batches])
    for a in (axes[0][0], axes[0][1], axes[1][1]):
        a.legend(fontsize=8)
    meta = result["meta"]
    fig.suptitle(f"agentq model benchmark — {meta['threads']} thread(s), torch {meta['torch']}, "
                 f"onnxruntime {meta['onnxruntime']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1),
                   help="intra-op threads for torch and ONNX Runtime alike (default 2)")
    p.add_argument("--models-dir", type=Path, default=None,
                   help="artifact root (default: AGENTQ_MODELS_DIR or artifacts/models)")
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    p.add_argument("--quick", action="store_true", help="a 2×2 grid, for smoke tests")


def register(sub: Any) -> None:
    p = sub.add_parser("models",
                       help="PyTorch eager vs ORT fp32 / fused / int8 over batch x length",
                       description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(run=command)


def main(argv: list[str] | None = None) -> int:
    from agentq.config import Settings

    p = argparse.ArgumentParser(prog="agentq bench models", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    return command(p.parse_args(argv), Settings.from_env())


def command(args: argparse.Namespace, settings: Any) -> int:
    from agentq.config import Settings

    models_dir = args.models_dir or Settings.from_env().worker.models_dir
    result = run(models_dir, args.threads, quick=args.quick)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "models.json").write_text(json.dumps(result, indent=2))
    plot(result, args.out / "models.png")
    for model, table in result["ratios"].items():
        for pair, r in table.items():
            print(f"{model:10s} {pair:24s} median {r['median']:.2f}×")
    print(f"wrote {args.out / 'models.json'} and {args.out / 'models.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
