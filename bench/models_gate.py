"""Gate numbers and speed ratios of the built models, plus minilm-l6's speed/quality frontier.

`python -m bench.models_gate [--models-dir DIR] [--out DIR]`

Reads the manifests ``agentq models build`` wrote for the catalogue's current versions (nothing
is rebuilt or re-timed here: the numbers are the build's own side-by-side measurements) and the
int8 experiments of ``bench/results/minilm-int8.json``; writes ``models-gate.json`` and
``models-frontier.png`` (x: speed vs ORT fp32, y: mean cosine on the hard texts, bars down to
the minimum; the dashed lines are the exact gate, the dash-dot line the fast tier's; triangles
are the minilm-l6-fast candidates: pruned, distilled, int8, filled when they pass).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from agentq.config import Settings
from models.artifacts import artifact_dir, read_manifest
from models.catalog import CATALOG

RESULTS = Path(__file__).parent / "results"


def collect(models_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, entry in CATALOG.items():
        try:
            version = entry.version()
        except ImportError as e:  # its build inputs are not installed here
            out[name] = {"missing": str(e)}
            continue
        manifest = read_manifest(artifact_dir(models_dir, name, version))
        if manifest is None:
            out[name] = {"missing": f"no build of version {version} in {models_dir}"}
            continue
        out[name] = {"version": version, "build_s": manifest.get("build_s"),
                     "variants": [{k: v[k] for k in ("variant", "device", "active", "metrics")}
                                  for v in manifest["variants"]]}
    return out


def plot(gate: dict[str, Any], experiments: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for r in experiments["recipes"]:
        speed = r.get("speed_in_build") or (
            sum(r["speed"].values()) / len(r["speed"]) if r.get("speed") else None)
        if speed is None:
            continue
        active = r["recipe"].startswith("ACTIVE")
        ax.errorbar([speed], [r["mean_cosine"]], yerr=[[r["mean_cosine"] - r["min_cosine"]],
                                                       [0]],
                    fmt="o", color="C3" if active else "C0", capsize=3)
        ax.annotate(r["recipe"].replace("ACTIVE: ", "active: ")[:48], (speed, r["mean_cosine"]),
                    fontsize=6, xytext=(4, 2), textcoords="offset points")
    ax.errorbar([1.0], [1.0], fmt="s", color="k")
    ax.annotate("ORT fp32 (exact)", (1.0, 1.0), fontsize=7, xytext=(4, -8),
                textcoords="offset points")
    fused = experiments.get("fusion", {}).get("offline_fused_vs_plain_fp32_in_builds", [])
    if fused:
        ax.errorbar([sum(fused) / len(fused)], [1.0], fmt="x", color="C1")
        ax.annotate("fused fp32 (dropped)", (sum(fused) / len(fused), 1.0), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
    # The faster tier's candidates (minilm-l6-fast): each with the build's own side-by-side
    # speed vs the exact tier's ORT fp32 graph; filled when it passed the tier gate.
    lowest = 0.9
    for v in gate.get("minilm-l6-fast", {}).get("variants", []):
        m = v["metrics"]
        hard, speed = m.get("hard") or {}, m.get("speedup_vs_fp32")
        if not hard or speed is None:
            continue
        passed = bool((m.get("tier_gate") or {}).get("passed"))
        mean, low = hard["mean_cosine"], hard["min_cosine"]
        lowest = min(lowest, mean - 0.01)
        ax.errorbar([speed], [mean], yerr=[[mean - max(low, 0.8)], [0]], fmt="^",
                    color="C3" if v.get("active") else ("C2" if passed else "0.55"),
                    mfc=None if passed else "none", capsize=3)
        label = f"fast tier {v['variant']}" + (" (active)" if v.get("active") else
                                               "" if passed else " (fails tier gate)")
        ax.annotate(label, (speed, mean), fontsize=6, xytext=(4, -8), textcoords="offset points")
    ax.axhline(0.995, ls="--", lw=0.8, color="C2")
    ax.axhline(0.98, ls=":", lw=0.8, color="C2")
    ax.axhline(0.97, ls="-.", lw=0.8, color="C4")
    ax.axvline(1.3, ls="--", lw=0.8, color="C2")
    ax.set_xlabel("speed vs ORT fp32 (1 thread, bucket shapes)")
    ax.set_ylabel("cosine vs PyTorch fp32 on hard texts (dot: mean, bar: down to min)")
    ax.set_ylim(max(0.8, lowest), 1.002)
    ax.set_title("minilm-l6 variants: speed / quality\n(exact gate: mean >= 0.995, min >= 0.98, "
                 "1.3x; fast tier gate: mean >= 0.97, dash-dot)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.models_gate", description=__doc__)
    p.add_argument("--models-dir", type=Path)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    models_dir = args.models_dir or Settings.from_env().worker.models_dir
    gate = collect(models_dir)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "models-gate.json").write_text(json.dumps(gate, indent=2, sort_keys=True))
    experiments = json.loads((RESULTS / "minilm-int8.json").read_text())
    plot(gate, experiments, args.out / "models-frontier.png")
    print(f"wrote {args.out / 'models-gate.json'} and {args.out / 'models-frontier.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
