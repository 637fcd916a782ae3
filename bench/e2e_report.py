"""The e2e benchmark's report: ratios, the markdown table, the plot, merging per-model runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console

console = Console(stderr=True)


# -- report ------------------------------------------------------------------------------------
def ratios(m: dict[str, Any]) -> dict[str, float | None]:
    a = m.get("agentq", {}).get("drain", {}).get("jobs_per_s")
    n = m.get("naive", {}).get("jobs_per_s")
    b = m.get("celery_batches", {}).get("jobs_per_s")
    c = m.get("ceiling", {}).get("jobs_per_s")
    return {"agentq_vs_naive": round(a / n, 2) if a and n else None,
            "agentq_vs_celery_batches": round(a / b, 2) if a and b else None,
            "agentq_vs_ceiling": round(a / c, 3) if a and c else None}


def _extra_meta(meta: dict[str, Any]) -> str:
    """Bridge batch limits and the load average around the run, when the run recorded them."""
    out = f" · {meta['cpu_model']}" if meta.get("cpu_model") else ""
    if meta.get("bridge_max_batch"):
        out += " · bridge max batch " + ", ".join(f"{m} {n}"
                                                  for m, n in meta["bridge_max_batch"].items())
    if meta.get("loadavg_start") and meta.get("loadavg_end"):
        out += (f" · load average {meta['loadavg_start'][0]:.2f} at start, "
                f"{meta['loadavg_end'][0]:.2f} at end")
    return out


def write_markdown(res: dict[str, Any], path: Path) -> None:
    runs = sorted({m.get("when", res["meta"]["when"]) for m in res["models"].values()})
    lines = ["# End-to-end benchmark", "",
             *([f"Each model's phases ran together in one run; runs started {', '.join(runs)}.",
                ""] if len(runs) > 1 else []),
             f"{res['meta']['when']} · {res['meta']['machine']} · {res['meta']['cpus']} CPUs · "
             f"{res['meta']['workers']} worker processes · bridge max_wait_ms "
             f"{res['meta']['max_wait_ms']}{_extra_meta(res['meta'])}", "",
             "| model | jobs (agentq / naive / celery-batches) | ceiling jobs/s | naive jobs/s | "
             "celery-batches jobs/s | agentq jobs/s | agentq ÷ naive | agentq ÷ celery-batches | "
             "agentq ÷ ceiling | avg batch | padding (ceiling → agentq) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for model, m in res["models"].items():
        r, c, n = m["ratios"], m.get("ceiling", {}), m.get("naive", {})
        b = m.get("celery_batches", {})
        d = m.get("agentq", {}).get("drain", {})
        pad = (f"{c['padding_ratio']} → {d.get('padding_ratio', '–')}"
               if "padding_ratio" in c else "–")
        lines.append(f"| {model} | {d.get('jobs', '–')} / {n.get('jobs', '–')} / "
                     f"{b.get('jobs', '–')} | {c.get('jobs_per_s', '–')} | "
                     f"{n.get('jobs_per_s', '–')} | {b.get('jobs_per_s', '–')} | "
                     f"{d.get('jobs_per_s', '–')} | {r.get('agentq_vs_naive') or '–'} | "
                     f"{r.get('agentq_vs_celery_batches') or '–'} | "
                     f"{r.get('agentq_vs_ceiling') or '–'} | {d.get('avg_batch', '–')} | {pad} |")
    lines += ["", "Latency, produced → finished, at offered loads (fraction of the measured "
              "agentq drain rate):", "",
              "| model | load | offered jobs/s | p50 ms | p95 ms | p99 ms | kafka ms | "
              "batching ms | in queue ms | run ms | avg batch |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for model, m in res["models"].items():
        for lat in m.get("agentq", {}).get("latency", []):
            lines.append(f"| {model} | {lat['load']:.0%} | {lat['offered_jobs_per_s']} | "
                         f"{lat['p50_ms']} | {lat['p95_ms']} | {lat['p99_ms']} | "
                         f"{lat['kafka_ms']} | {lat['batching_ms']} | {lat['in_queue_ms']} | "
                         f"{lat['run_ms']} | "
                         f"{lat['avg_batch']} |")
    gated = [(model, m["gate"]) for model, m in res["models"].items() if m.get("gate")]
    if gated:
        lines += ["", "What each model's answers cost: the active variant's gate numbers from "
                  "the registry (text models: cosine to PyTorch fp32 on the paraphrase set and "
                  "the hard texts, retrieval top-1; classifiers: held-out accuracy). A faster "
                  "tier's baselines are its exact model's (`baseline_of`).", "",
                  "| model | variant | accuracy | mean / min cosine | hard mean / min | "
                  "top-1 (fp32) | speed vs ORT fp32 |", "|---|---|---|---|---|---|---|"]
        for model, g in gated:
            hard = g.get("hard") or {}
            cos = (f"{g['mean_cosine']} / {g['min_cosine']}" if "mean_cosine" in g else "–")
            hcos = (f"{hard['mean_cosine']} / {hard['min_cosine']}" if hard else "–")
            top = (f"{g['retrieval_top1']} ({g.get('retrieval_top1_ref')})"
                   if g.get("retrieval_top1") is not None else "–")
            lines.append(f"| {model} | {g['variant']} | {g.get('accuracy', '–')} | {cos} | "
                         f"{hcos} | {top} | {g.get('speedup_vs_fp32', '–')} |")
    lines += ["", "Ceiling: raw ONNX Runtime, pre-tokenised batches in arrival order padded to "
              "each batch's longest, threads = worker processes. Naive: one Celery task per job, "
              "PyTorch fp32, one INSERT per result. celery-batches: one task message per job to a "
              "`celery_batches.Batches` task (flush every 256 or 50 ms), ONNX Runtime fp32, one "
              "COPY per flush. agentq: Kafka → bridge → Celery → engine → "
              "Postgres. Throughput from database timestamps (first received → last finished).",
              ""]
    path.write_text("\n".join(lines))


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(res["models"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    kinds = ["ceiling", "naive", "celery_batches", "agentq"]
    width = 0.8 / len(kinds)
    for k, kind in enumerate(kinds):
        vals = []
        for m in models:
            d = res["models"][m].get(kind, {})
            vals.append((d.get("drain", d)).get("jobs_per_s") or 0)
        axes[0].bar(np.arange(len(models)) + (k - (len(kinds) - 1) / 2) * width, vals, width,
                    label=kind.replace("_", "-"))
    axes[0].set_xticks(range(len(models)), models)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("jobs/s (drain, log scale)")
    axes[0].legend()
    axes[0].set_title("throughput")
    for m in models:
        lat = res["models"][m].get("agentq", {}).get("latency", [])
        if lat:
            x = [v["load"] * 100 for v in lat]
            for q, style in (("p50_ms", "-o"), ("p99_ms", "--o")):
                axes[1].plot(x, [v[q] for v in lat], style, label=f"{m} {q[:3]}")
    axes[1].set_xlabel("offered load, % of measured capacity")
    axes[1].set_ylabel("latency ms (produced → finished)")
    axes[1].set_yscale("log")
    axes[1].legend()
    axes[1].set_title("agentq latency")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_all(res: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "e2e.json").write_text(json.dumps(res, indent=2, default=str))
    measured = {**res, "models": {k: v for k, v in res["models"].items() if "skipped" not in v}}
    write_markdown(measured, out / "e2e.md")
    plot(measured, out / "e2e.png")
    console.print((out / "e2e.md").read_text(), markup=False)


def merge(paths: list[Path], out: Path) -> int:
    res: dict[str, Any] = {"meta": {}, "models": {}}
    for path in paths:
        doc = json.loads(path.read_text())
        res["meta"] = {**doc["meta"], "merged_from": [str(p) for p in paths]}
        for model, m in doc["models"].items():
            if "skipped" not in m or model not in res["models"]:
                res["models"][model] = {"when": doc["meta"]["when"], **m}
    write_all(res, out)
    return 0
