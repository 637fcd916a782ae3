"""bench.stage_budget's pure parts: py-spy samples filed under stages, shares applied to the
unsampled totals, and CPU time read from /proc."""

from __future__ import annotations

import os
import subprocess
import sys

from bench.stage_budget import STAGES, children, classify, cpu_s, split


def test_samples_go_to_the_most_specific_stage_first(tmp_path):
    raw = tmp_path / "bridge.spy"
    raw.write_text(
        "step (bridge/consumer.py:120);poll (kafka/consumer/group.py:700);"
        "_fetch (kafka/x.py:1) 30\n"
        "step (bridge/consumer.py:120);_accept (bridge/consumer.py:150);"
        "parse_record (producers/contract.py:140);loads (json/__init__.py:1) 20\n"
        "durable (bridge/consumer.py:200);write_isolating (bridge/isolate.py:20);"
        "queue_jobs (storage/ledger.py:160);execute (psycopg/cursor.py:1) 40\n"
        "durable (bridge/consumer.py:200);publish (workers/queues.py:30);"
        "send (kombu/messaging.py:1) 10\n"
        "main (cli/main.py:1) 5\n"
        "not a sample line\n")
    got = classify(raw, STAGES["bridge"])
    assert got == {"kafka fetch": 30, "decode + validate": 20, "ledger write": 40,
                   "celery publish": 10, "other": 5}


def test_missing_sample_file_is_no_samples(tmp_path):
    assert classify(tmp_path / "absent.spy", STAGES["worker"]) == {}


def test_split_applies_sample_shares_to_the_unsampled_totals():
    totals = {"bridge": 100.0, "worker": 50.0}
    samples = {"bridge": {"ledger write": 3, "kafka fetch": 1}, "worker": {"inference": 5}}
    assert split(totals, samples) == {"bridge": {"ledger write": 75.0, "kafka fetch": 25.0},
                                      "worker": {"inference": 50.0}}


def test_cpu_time_and_children_come_from_proc():
    busy = subprocess.Popen([sys.executable, "-c", "import time\nt = time.process_time()\n"
                             "while time.process_time() - t < 0.3: pass\ntime.sleep(30)"])
    try:
        while cpu_s(busy.pid) < 0.25:
            pass
        assert busy.pid in children(os.getpid())
    finally:
        busy.kill()
        busy.wait()
    assert cpu_s(busy.pid) == 0.0  # gone: nothing to count


def test_spent_counts_a_process_that_appeared_between_snapshots_from_zero():
    from bench.stage_budget import spent

    c0 = {"postgres": {10: 1.0, 11: 2.0}, "bridge": {20: 5.0}}
    c1 = {"postgres": {10: 1.5, 11: 2.0, 12: 0.25}, "bridge": {20: 6.0}}
    assert spent(c0, c1) == {"postgres": 0.75, "bridge": 1.0}


def test_progress_polls_back_off_while_far_from_done_and_tighten_near_the_end():
    from bench.workload import next_poll_s

    assert next_poll_s(50_000, 5_000, 0.2) == 2.0  # 10 s left: poll at the cap
    assert next_poll_s(2_000, 5_000, 0.2) == 0.2  # 0.4 s left: the floor
    assert 0.2 < next_poll_s(10_000, 5_000, 0.2) <= 1.0
    assert next_poll_s(10_000, 0, 0.5) == 0.5  # no rate yet
