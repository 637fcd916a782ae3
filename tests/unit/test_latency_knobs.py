"""The latency-knobs report: medians per configuration over interleaved rounds, and its files."""

import json

import pytest

from bench.latency_knobs import CONFIGS, summarise, write

pytestmark = pytest.mark.timeout(30)


def _run(config: str, p99: float, rnd: int) -> dict:
    stages = {f"{st}_{k}_ms": p99 / 4 for st in ("kafka", "batching", "in_queue", "run")
              for k in ("avg", "p99")}
    return {"config": config, "env": CONFIGS[config][0], "workers": CONFIGS[config][1],
            "jobs": 100, "offered_jobs_per_s": 4000.0, "avg_batch": 50.0, "p50_ms": p99 / 3,
            "p95_ms": p99 / 1.2, "p99_ms": p99, **stages, "machine_busy": 0.8,
            "producer_us_per_job": 100.0, "load_window_s": 12.0, "round": rnd}


def test_each_configuration_gets_the_median_of_its_rounds_in_the_order_run():
    runs = [_run("default", v, i) for i, v in enumerate((300.0, 900.0, 310.0))]
    runs += [_run("no-busy", v, i) for i, v in enumerate((280.0, 250.0, 260.0))]
    s = summarise(runs)
    assert list(s) == ["default", "no-busy"]
    assert s["default"]["p99_ms"] == 310.0 and s["no-busy"]["p99_ms"] == 260.0
    assert s["default"]["workers"] == 2


def test_the_report_writes_json_and_a_table_row_per_configuration(tmp_path):
    runs = [_run("default", 300.0, 0), _run("one-worker", 400.0, 0)]
    meta = {"when": "now", "cpu_model": "cpu", "cpus": 2, "rate": 4000.0, "load_s": 12.0,
            "rounds": 1, "load_start": 0.1, "load_end": 0.2}
    write({"meta": meta, "runs": runs, "summary": summarise(runs)}, tmp_path)
    doc = json.loads((tmp_path / "latency-knobs.json").read_text())
    assert [r["config"] for r in doc["runs"]] == ["default", "one-worker"]
    rows = [ln for ln in (tmp_path / "latency-knobs.md").read_text().splitlines()
            if ln.startswith("| default") or ln.startswith("| one-worker")]
    assert len(rows) == 2 and "| 300.0 |" in rows[0] and "| 1 |" in rows[1]
