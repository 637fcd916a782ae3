"""Failpoints: parsing, counted and keyed points, the once-dir, and the no-op default."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from agentq import failpoints as fp


@pytest.fixture(autouse=True)
def _reset():
    yield
    fp.configure(None)


def test_specs_parse_name_arg_and_action():
    specs = fp.parse("bridge.after_publish:3, worker.item:POISON-1:raise,x:a:b")
    assert (specs["bridge.after_publish"].arg, specs["bridge.after_publish"].action) == \
        ("3", "crash")
    assert (specs["worker.item"].arg, specs["worker.item"].action) == ("POISON-1", "raise")
    assert specs["x"].arg == "a:b"  # an unknown action is part of the marker


def test_unset_failpoints_do_nothing():
    fp.configure(None)
    for _ in range(5):
        fp.failpoint("bridge.after_publish")
    fp.failpoint_keys("worker.item", ["anything"])
    assert not fp.active("worker.item")


def test_counted_point_fires_on_the_nth_hit_only():
    fp.configure("p:3:raise")
    fp.failpoint("p")
    fp.failpoint("p")
    with pytest.raises(fp.FailpointError):
        fp.failpoint("p")
    fp.failpoint("p")  # the 4th hit passes


def test_keyed_point_fires_only_on_a_matching_key():
    fp.configure("worker.item:POISON-abc:raise")
    fp.failpoint_keys("worker.item", ['{"pixels": [1]}', "POISON-ab"])
    with pytest.raises(fp.FailpointError):
        fp.failpoint_keys("worker.item", ['{"tag": "POISON-abc"}'])


def test_once_dir_lets_a_point_fire_once_across_processes(tmp_path, monkeypatch):
    monkeypatch.setenv(fp.ONCE_DIR_ENV, str(tmp_path))
    fp.configure("p:1:raise")
    with pytest.raises(fp.FailpointError):
        fp.failpoint("p")
    fp.configure("p:1:raise")  # a new process: counts from zero, but the point has fired
    fp.failpoint("p")
    assert (tmp_path / "p.fired").exists()


@pytest.mark.parametrize(("action", "rc"), [("crash", -9), ("exit", 70)])
def test_crash_and_exit_end_the_process_at_the_point(action, rc):
    code = "from agentq.failpoints import failpoint\nfailpoint('p')\nfailpoint('p')\nprint('x')"
    env = {**os.environ, fp.ENV: f"p:2:{action}"}
    env.pop(fp.ONCE_DIR_ENV, None)
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, timeout=60)
    assert res.returncode == rc and b"x" not in res.stdout
