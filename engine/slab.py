"""Tensors in POSIX shared memory: a slab of fixed-size slots.

A slab is one file in ``/dev/shm`` (what ``shm_open`` creates on Linux, so
``multiprocessing.shared_memory.SharedMemory(name)`` sees the same segment), named
``agentq-<uuid>``, mapped with ``mmap`` by the engine and by every pool process. Only slot ids,
offsets, shapes and dtypes cross process boundaries; tensors are numpy views on the mapping.
Mapping the file ourselves (rather than through ``SharedMemory``) keeps the directory injectable
for tests and avoids the resource tracker unlinking segments that a process only attached to.

Layout (little-endian)::

    0    magic "AGQSLAB1" | u32 version | u32 n_slots | u64 slot_bytes
    24   i64 creator pid | u64 creator start time (clock ticks since boot, /proc/<pid>/stat)
    40   u64 data offset
    64   slot table: n_slots x (i64 owner pid, u64 owner start time); pid 0 = free
    data offset (page aligned): n_slots x slot_bytes

Ownership: a slot records its owner's pid (and start time, so a reused pid is not mistaken for the
owner). Changes to the slot table happen under ``flock`` on the slab file, which the kernel drops
when a holder dies. Slots whose owner died are reclaimed by ``sweep`` (the engine runs it).
Lifecycle: ``Slab.create`` first removes stale slabs (creator dead), checks the free space of the
directory and reserves the pages (``posix_fallocate``), so a too-small ``/dev/shm`` fails now with
``ShmTooSmall`` instead of a SIGBUS later; ``close(unlink=True)`` removes the slab on clean exit.
"""

from __future__ import annotations

import fcntl
import math
import mmap
import os
import struct
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from agentq.log import get_logger
from engine.errors import FatalError, RetryableError

log = get_logger("agentq.shm")

SHM_DIR = Path("/dev/shm")
PREFIX = "agentq-"
MAGIC = b"AGQSLAB1"
VERSION = 1
_HEAD = struct.Struct("<8sIIQqQQ")  # magic, version, n_slots, slot_bytes, pid, start, data_off
_SLOT = struct.Struct("<qQ")  # owner pid, owner start time
_TABLE_AT = 64
ALIGN = 64
PAGE = mmap.PAGESIZE


class ShmTooSmall(FatalError):
    """/dev/shm has too little free space for the engine's slab."""


class NoFreeSlot(RetryableError):
    """Every slot of the slab stayed busy for the whole wait."""


def proc_start_time(pid: int) -> int:
    """The start time of a process in clock ticks since boot (0 when unknown)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[19])


def pid_alive(pid: int, start_time: int = 0) -> bool:
    """True when ``pid`` runs and, if ``start_time`` is given, is the same process (no reuse).
    A zombie counts as dead."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return True  # no procfs: trust kill(0)
    if fields[0] in ("Z", "X"):
        return False
    return not start_time or int(fields[19]) == start_time


def _round_up(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def free_bytes(path: Path, statvfs: Callable[[str], Any] = os.statvfs) -> int:
    st = statvfs(str(path))
    return int(st.f_bavail * st.f_frsize)


def check_space(path: Path, needed: int, statvfs: Callable[[str], Any] = os.statvfs) -> None:
    """Raise ShmTooSmall when ``path`` has less than ``needed`` bytes free."""
    free = free_bytes(path, statvfs)
    if free < needed:
        raise ShmTooSmall(_too_small_text(path, free, needed))


def _too_small_text(path: Path, free: int, needed: int) -> str:
    return (
        f"{path} has {free / 2**20:.1f} MiB free but the inference engine's shared-memory slab "
        f"needs {needed / 2**20:.1f} MiB. Containers default to a 64 MiB /dev/shm: raise it with "
        f"`shm_size: 1gb` on the worker service in compose.yaml (docker run --shm-size=1g), or "
        f"use fewer/smaller slots, or AGENTQ_WORKER_ENGINE_MODE=inprocess."
    )


class Slab:
    """One mapped slab. ``create`` in the engine, ``attach`` in pool processes."""

    def __init__(self, path: Path, fd: int, mm: mmap.mmap, owner: bool) -> None:
        self.path = path
        self.name = path.name
        self._fd = fd
        self._mm = mm
        self.owner = owner
        magic, version, self.n_slots, self.slot_bytes, self.creator_pid, self.creator_start, \
            self.data_offset = _HEAD.unpack_from(mm, 0)
        if magic != MAGIC or version != VERSION:
            raise ValueError(f"{path} is not an agentq slab")
        self._me = (os.getpid(), proc_start_time(os.getpid()))

    # ---- lifecycle -----------------------------------------------------------------------
    @classmethod
    def create(cls, n_slots: int, slot_bytes: int, shm_dir: Path = SHM_DIR,
               statvfs: Callable[[str], Any] = os.statvfs) -> Slab:
        slot_bytes = _round_up(slot_bytes, PAGE)
        data_offset = _round_up(_TABLE_AT + _SLOT.size * n_slots, PAGE)
        size = data_offset + n_slots * slot_bytes
        cleanup_stale(shm_dir)
        check_space(shm_dir, size, statvfs)
        path = shm_dir / f"{PREFIX}{uuid.uuid4().hex}"
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            try:
                os.posix_fallocate(fd, 0, size)  # reserve the pages now: no SIGBUS later
            except OSError as e:
                raise ShmTooSmall(_too_small_text(shm_dir, free_bytes(shm_dir, statvfs),
                                                  size)) from e
            mm = mmap.mmap(fd, size)
            pid = os.getpid()
            _HEAD.pack_into(mm, 0, MAGIC, VERSION, n_slots, slot_bytes, pid,
                            proc_start_time(pid), data_offset)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        log.info("slab_created", slab=path.name, slots=n_slots, slot_bytes=slot_bytes, bytes=size)
        return cls(path, fd, mm, owner=True)

    @classmethod
    def attach(cls, name: str, shm_dir: Path = SHM_DIR) -> Slab:
        path = shm_dir / name
        fd = os.open(path, os.O_RDWR)
        try:
            mm = mmap.mmap(fd, os.fstat(fd).st_size)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, mm, owner=False)

    def close(self, unlink: bool | None = None) -> None:
        """Unmap; the creator also removes the slab unless ``unlink=False``."""
        if self._fd < 0:
            return
        try:
            self._mm.close()
        except BufferError:  # views still alive somewhere: the mapping goes with the process
            pass
        os.close(self._fd)
        self._fd = -1
        if self.owner if unlink is None else unlink:
            self.path.unlink(missing_ok=True)
            log.info("slab_removed", slab=self.name)

    def __enter__(self) -> Slab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- slot table ----------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def owner_of(self, slot: int) -> tuple[int, int]:
        return _SLOT.unpack_from(self._mm, _TABLE_AT + _SLOT.size * slot)

    def _set_owner(self, slot: int, pid: int, start: int) -> None:
        _SLOT.pack_into(self._mm, _TABLE_AT + _SLOT.size * slot, pid, start)

    def try_alloc(self) -> int | None:
        """Claim a free slot for this process; None when all are taken."""
        with self._locked():
            for slot in range(self.n_slots):
                if self.owner_of(slot)[0] == 0:
                    self._set_owner(slot, *self._me)
                    return slot
        return None

    def alloc(self, wait_s: float = 10.0) -> int:
        """Claim a free slot, waiting up to ``wait_s`` for one (the engine reclaims dead ones)."""
        end = time.monotonic() + wait_s
        pause = 0.0005
        while True:
            slot = self.try_alloc()
            if slot is not None:
                return slot
            if time.monotonic() > end:
                raise NoFreeSlot(f"no free slot in {self.name} after {wait_s}s "
                                 f"({self.n_slots} slots)")
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def free(self, slot: int) -> None:
        with self._locked():
            if self.owner_of(slot)[0] == self._me[0]:
                self._set_owner(slot, 0, 0)

    def sweep(self, keep: set[int] | frozenset[int] = frozenset()) -> list[int]:
        """Free slots whose owner process is dead (except ``keep``); returns the slots freed."""
        freed = []
        with self._locked():
            for slot in range(self.n_slots):
                pid, start = self.owner_of(slot)
                if pid and slot not in keep and not pid_alive(pid, start):
                    self._set_owner(slot, 0, 0)
                    freed.append(slot)
        if freed:
            log.info("slots_reclaimed", slab=self.name, slots=freed)
        return freed

    def used(self) -> int:
        return sum(1 for s in range(self.n_slots) if self.owner_of(s)[0])

    # ---- tensors -------------------------------------------------------------------------
    def view(self, slot: int, offset: int, shape: tuple[int, ...] | list[int],
             dtype: str | np.dtype) -> np.ndarray:
        """A numpy view on ``slot`` at byte ``offset`` (no copy)."""
        dt = np.dtype(dtype)
        n = math.prod(shape) * dt.itemsize
        if offset < 0 or offset + n > self.slot_bytes:
            raise ValueError(f"tensor of {n} bytes at {offset} does not fit a "
                             f"{self.slot_bytes}-byte slot")
        start = self.data_offset + slot * self.slot_bytes + offset
        return np.ndarray(tuple(shape), dtype=dt, buffer=self._mm, offset=start)

    def put(self, slot: int, arrays: list[np.ndarray], offset: int = 0) -> tuple[list[dict], int]:
        """Write arrays into ``slot`` (the one copy), returning their descriptors and the end."""
        descs = []
        for arr in arrays:
            dst = self.view(slot, offset, arr.shape, arr.dtype)
            np.copyto(dst, arr, casting="no")
            descs.append({"offset": offset, "shape": list(arr.shape), "dtype": arr.dtype.str})
            offset = _round_up(offset + arr.nbytes, ALIGN)
        return descs, offset


def read_header(path: Path) -> tuple[int, int] | None:
    """(creator pid, creator start time) of a slab file, or None when it is not one."""
    try:
        with path.open("rb") as f:
            head = f.read(_HEAD.size)
    except OSError:
        return None
    if len(head) < _HEAD.size:
        return None
    magic, version, _, _, pid, start, _ = _HEAD.unpack(head)
    return (pid, start) if magic == MAGIC else None


def cleanup_stale(shm_dir: Path = SHM_DIR) -> list[str]:
    """Remove ``agentq-*`` slabs whose creator process is dead (left by a crashed engine)."""
    removed = []
    for path in sorted(shm_dir.glob(PREFIX + "*")):
        owner = read_header(path)
        if owner is None or pid_alive(*owner):
            continue
        path.unlink(missing_ok=True)
        removed.append(path.name)
    if removed:
        log.warning("stale_slabs_removed", slabs=removed, dir=str(shm_dir))
    return removed
