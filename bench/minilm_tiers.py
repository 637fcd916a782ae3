"""The experiments behind minilm-l6-fast: how much speed pruning, layer dropping and int8 buy on
this CPU, and what each costs on the exact model's gate sets.

`python -m bench.minilm_tiers [--prune 12x1152,8x1152,12x768] [--prune-texts 3000]
[--distil-steps 150,300] [--out bench/results]`

* **speed** of each shape (heads x FFN neurons x layers; weights do not matter for timing) in
  ORT fp32 and dynamic int8, against the full model's ORT fp32, at the bucket shapes of the
  build (1 thread, best of interleaved rounds);
* **pruning** with the least-squares repair (``models.minilm_prune.prune``) at each ``--prune``
  setting, in PyTorch fp32 and as dynamic int8;
* **distillation** of the 4-layer student (``models.minilm_prune.distil``) evaluated after each
  number of ``--distil-steps``;
* **int8** of the whole exact graph: plain, and smoothed with the FFN down-projections of the
  first k layers in fp32 (``models.minilm_quant``).

Writes ``minilm-tiers.json``. Every quality number is the gate's: mean/min cosine against the
PyTorch fp32 model on the paraphrase set and on the hard texts, and retrieval top-1.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _shape(model: Any, heads: int, inner: int, layers: int) -> Any:
    import torch
    from torch import nn

    from models import minilm_prune as mp

    m = copy.deepcopy(model)
    with torch.no_grad():
        for layer in m.encoder.layer:
            sa = layer.attention.self
            cols = torch.arange(heads * mp.HEAD_SIZE)
            sa.query, sa.key, sa.value = (mp._shrink_rows(sa.query, cols),
                                          mp._shrink_rows(sa.key, cols),
                                          mp._shrink_rows(sa.value, cols))
            sa.heads = heads
            layer.attention.output.dense = nn.Linear(heads * mp.HEAD_SIZE, 384)
            layer.intermediate.dense = mp._shrink_rows(layer.intermediate.dense,
                                                       torch.arange(inner))
            layer.output.dense = nn.Linear(inner, 384)
    mp.drop_layers(m, list(range(layers)))
    return m


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.minilm_tiers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prune", default="12x1152,8x1152,12x768")
    p.add_argument("--prune-texts", type=int, default=3000)
    p.add_argument("--distil-steps", default="150,300")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)

    import torch

    from models import minilm
    from models import minilm_build as mb
    from models import minilm_prune as mp
    from models import minilm_quant as mq
    from models.minilm_fast_build import PARAMS
    from models.tokenizer import TextTokenizer, package_model_dir

    torch.set_num_threads(2)
    src = package_model_dir()
    tok = TextTokenizer(src / "tokenizer.json", max_length=256)
    teacher = minilm.load_model(src)
    evals = mb._Evals(tok, lambda i, m: minilm.embed(teacher, i, m))
    work = Path(tempfile.mkdtemp(prefix="agentq-tiers-"))
    out: dict[str, Any] = {"when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                           "timing": f"sum over {PARAMS['timing_shapes']} of the best of "
                                     f"{PARAMS['timing_rounds']} interleaved rounds, 1 thread"}

    def quality(run: Any) -> dict[str, Any]:
        para, hard = evals.gate(run)
        return {"para_mean": round(para.mean_cosine, 4), "para_min": round(para.min_cosine, 4),
                "top1": para.top1_cand, "top1_fp32": para.top1_ref,
                "hard_mean": round(hard.mean_cosine, 4), "hard_min": round(hard.min_cosine, 4)}

    def torch_run(m: Any) -> Any:
        return lambda i, mm: minilm.embed(m, i, mm)

    def onnx_pair(m: Any, name: str) -> tuple[Path, Path]:
        f, q = work / f"{name}.onnx", work / f"{name}-int8.onnx"
        mb.export_fp32(m, f)
        mq.quantize_int8(f, q)
        return f, q

    # speed of each shape
    shapes = {"full": (12, 1536, 6), "12x1152": (12, 1152, 6), "8x1152": (8, 1152, 6),
              "12x768": (12, 768, 6), "8x768": (8, 768, 6), "4 layers": (12, 1536, 4),
              "3 layers": (12, 1536, 3)}
    files: dict[str, Path] = {}
    for name, (h, i, n) in shapes.items():
        print(f"speed: exporting {name}", flush=True)
        files[name], files[f"{name} int8"] = onnx_pair(_shape(teacher, h, i, n),
                                                       name.replace(" ", "_"))
    t = mb.time_variants(files, list(files), 1, PARAMS["timing_rounds"])
    out["speed_vs_fp32"] = {k: round(t["full"] / v, 3) for k, v in t.items()}

    texts = mp.corpus(PARAMS["corpus_sentences"], PARAMS["corpus_tweets"],
                      PARAMS["corpus_hard_seeds"])
    pdata = mp.batches(tok, texts[:args.prune_texts], PARAMS["batch"])
    out["pruning"] = {"calibration_texts": len(texts[:args.prune_texts]), "results": []}
    for spec in filter(None, args.prune.split(",")):
        heads, inner = (int(x) for x in spec.split("x"))
        print(f"pruning {spec}", flush=True)
        m = copy.deepcopy(teacher)
        t0 = time.perf_counter()
        mp.prune(m, pdata, heads, inner)
        row = {"kept": spec, "prune_s": round(time.perf_counter() - t0, 1),
               "fp32": quality(torch_run(m))}
        _, q = onnx_pair(m, f"pruned_{spec}")
        row["int8"] = quality(mb.ort_runner(mb.session(q, 2)))
        out["pruning"]["results"].append(row)
        print(row, flush=True)

    data = mp.batches(tok, texts, PARAMS["batch"])
    keep = PARAMS["student_layers"]
    later = [k - 1 for k in keep[1:] + [len(teacher.encoder.layer)]]
    student = copy.deepcopy(teacher)
    mp.drop_layers(student, keep)
    out["distillation"] = {"layers": keep, "corpus_texts": len(texts),
                           "results": [{"steps": 0, **quality(torch_run(student))}]}
    done = 0
    for target in (int(x) for x in args.distil_steps.split(",") if x):
        info = mp.distil(student, teacher, data, later, steps=target - done, lr=PARAMS["lr"],
                         seed=done)
        done = target
        row = {"steps": done, "train_s": info["train_s"], **quality(torch_run(student))}
        out["distillation"]["results"].append(row)
        print(row, flush=True)

    print("int8 of the whole graph", flush=True)
    fp32, fused = work / "exact.onnx", work / "exact.fused.onnx"
    mb.export_fp32(teacher, fp32)
    mb.fuse(fp32, fused)
    amax = mq.smoothing_stats(fused, tok)
    int8_files = {"fp32": fp32}
    out["int8"] = {}
    for k in (0, 2, 4):
        keep_fp32 = mq.ffn_down(range(k))
        mq.smooth(fused, work / "smoothed.onnx", amax, skip=set(keep_fp32))
        int8_files[f"smoothed, {k} fp32 layers"] = work / f"int8_{k}.onnx"
        mq.quantize_int8(work / "smoothed.onnx", int8_files[f"smoothed, {k} fp32 layers"],
                         exclude=keep_fp32)
    int8_files["plain"] = work / "int8_plain.onnx"
    mq.quantize_int8(fp32, int8_files["plain"])
    t = mb.time_variants(int8_files, list(int8_files), 1, PARAMS["timing_rounds"])
    for name, f in int8_files.items():
        if name != "fp32":
            out["int8"][name] = {"speed_vs_fp32": round(t["fp32"] / t[name], 3),
                                 **quality(mb.ort_runner(mb.session(f, 2)))}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "minilm-tiers.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
