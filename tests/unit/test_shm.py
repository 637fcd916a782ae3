"""Shared-memory slab: slots, reclaim after a killed owner, stale slabs, small /dev/shm."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from engine.slab import (
    PREFIX,
    NoFreeSlot,
    ShmTooSmall,
    Slab,
    check_space,
    cleanup_stale,
    pid_alive,
    read_header,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def shm_dir(tmp_path: Path) -> Path:
    """A private directory standing in for /dev/shm (same mmap semantics, isolated names)."""
    return tmp_path


def test_slots_are_claimed_once_and_freed_for_reuse(shm_dir: Path) -> None:
    with Slab.create(n_slots=3, slot_bytes=4096, shm_dir=shm_dir) as slab:
        got = [slab.try_alloc() for _ in range(3)]
        assert sorted(got) == [0, 1, 2]
        assert slab.try_alloc() is None
        assert slab.owner_of(got[1])[0] == os.getpid()
        slab.free(got[1])
        assert slab.used() == 2
        assert slab.try_alloc() == got[1]
        with pytest.raises(NoFreeSlot):
            slab.alloc(wait_s=0.05)


def test_tensors_cross_as_views_without_copies(shm_dir: Path) -> None:
    with Slab.create(n_slots=2, slot_bytes=1 << 16, shm_dir=shm_dir) as slab:
        other = Slab.attach(slab.name, shm_dir)
        slot = slab.alloc()
        x = np.arange(64 * 8, dtype=np.float32).reshape(64, 8)
        ids = np.arange(10, dtype=np.int64)
        descs, end = slab.put(slot, [x, ids])
        assert end % 64 == 0 and descs[1]["offset"] % 64 == 0
        seen = [other.view(slot, d["offset"], d["shape"], d["dtype"]) for d in descs]
        np.testing.assert_array_equal(seen[0], x)
        np.testing.assert_array_equal(seen[1], ids)
        # a write through one mapping is visible through the other: same memory, no copy
        slab.view(slot, descs[0]["offset"], descs[0]["shape"], descs[0]["dtype"])[0, 0] = -1
        assert seen[0][0, 0] == -1
        assert not seen[0].flags.owndata
        with pytest.raises(ValueError):
            other.view(slot, 0, (1 << 20,), "float32")
        del seen
        other.close()
        assert (shm_dir / slab.name).exists()  # attaching never removes the creator's slab
    assert not (shm_dir / slab.name).exists()  # the creator removes it on clean exit


def _hold_slot(name: str, shm_dir: str, ready: mp.synchronize.Event) -> None:
    slab = Slab.attach(name, Path(shm_dir))
    slab.alloc()
    ready.set()
    signal.pause()


def test_slot_of_a_killed_process_is_reclaimed_and_nothing_leaks(shm_dir: Path) -> None:
    # Given a real child process that holds a slot of the slab,
    ctx = mp.get_context("spawn")
    with Slab.create(n_slots=2, slot_bytes=4096, shm_dir=shm_dir) as slab:
        ready = ctx.Event()
        child = ctx.Process(target=_hold_slot, args=(slab.name, str(shm_dir), ready))
        child.start()
        try:
            assert ready.wait(30)
            held = [s for s in range(2) if slab.owner_of(s)[0] == child.pid]
            assert len(held) == 1
            # a live owner keeps its slot through a sweep
            assert slab.sweep() == []
            # when it is killed with SIGKILL mid-request (still a zombie: not reaped yet),
            os.kill(child.pid, signal.SIGKILL)
            assert not _wait(lambda: pid_alive(child.pid), 10)
            # then the sweep frees its slot, except a slot the engine still has in flight,
            assert slab.sweep(keep={held[0]}) == []
            assert slab.sweep() == held
            # and every slot can be claimed again.
            assert slab.used() == 0
            assert sorted([slab.try_alloc(), slab.try_alloc()]) == [0, 1]
        finally:
            child.join(10)


def _wait(pred, timeout_s: float) -> bool:
    import time

    end = time.monotonic() + timeout_s
    while pred() and time.monotonic() < end:
        time.sleep(0.02)
    return pred()


def _create_and_crash(shm_dir: str) -> None:
    slab = Slab.create(n_slots=1, slot_bytes=4096, shm_dir=Path(shm_dir))
    print(slab.name, flush=True)
    os._exit(0)  # no clean exit: the slab stays behind


def test_stale_slab_of_a_crashed_engine_is_removed_at_next_start(shm_dir: Path) -> None:
    # Given a slab left behind by a process that died without cleaning up, a live slab,
    # and an unrelated file,
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=_create_and_crash, args=(str(shm_dir),))
    p.start()
    p.join(30)
    stale = [f for f in shm_dir.glob(PREFIX + "*")]
    assert len(stale) == 1 and read_header(stale[0])[0] == p.pid
    live = Slab.create(n_slots=1, slot_bytes=4096, shm_dir=shm_dir)
    (shm_dir / "agentq-notaslab").write_bytes(b"hello")
    (shm_dir / "PostgreSQL.123").write_bytes(b"x")
    try:
        # the crashed engine's slab is gone, created the next time a slab is created,
        assert not stale[0].exists()
        # and a second sweep finds nothing; live and foreign files are untouched.
        assert cleanup_stale(shm_dir) == []
        assert (shm_dir / live.name).exists()
        assert (shm_dir / "agentq-notaslab").exists() and (shm_dir / "PostgreSQL.123").exists()
    finally:
        live.close()


def test_small_dev_shm_gives_a_clear_error_naming_shm_size(shm_dir: Path) -> None:
    # Given a /dev/shm with 16 MiB free (a container default is 64 MiB),
    def small(_: str) -> SimpleNamespace:
        return SimpleNamespace(f_bavail=4096, f_frsize=4096)

    # when a 64 MiB slab is created, then it fails at once with the setting to change,
    with pytest.raises(ShmTooSmall) as err:
        Slab.create(n_slots=16, slot_bytes=4 << 20, shm_dir=shm_dir, statvfs=small)
    text = str(err.value)
    assert "shm_size" in text and "16.0 MiB free" in text and "64.0 MiB" in text
    # and nothing is left behind.
    assert list(shm_dir.iterdir()) == []
    check_space(shm_dir, 1 << 20, statvfs=small)  # what fits passes


def test_real_dev_shm_free_space_is_checked() -> None:
    with pytest.raises(ShmTooSmall, match="shm_size"):
        check_space(Path("/dev/shm"), 1 << 60)


def test_engine_mode_defaults_to_the_measured_choice_per_device() -> None:
    from agentq.config import Settings, WorkerSettings
    from engine.factory import resolve_mode

    # The default is ``auto``: picked per device by bench/results/shm.json,
    assert WorkerSettings().engine_mode == "auto"
    assert Settings.from_env({"AGENTQ_WORKER_ENGINE_MODE": "shared"}).worker.engine_mode == "shared"
    # in-process sessions on CPU, explicit choices kept as they are,
    assert resolve_mode("auto", "cpu") == "inprocess"
    assert resolve_mode("shared", "cpu") == "shared"
    assert resolve_mode("inprocess", "cuda") == "inprocess"
    # and a typo is an error, not a silent fallback.
    with pytest.raises(ValueError, match="engine_mode"):
        resolve_mode("share", "cpu")
