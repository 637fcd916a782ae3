"""The reply relay: publishes the outbox (``replies``) to the reply topics, after commit.

A job's outbox row is written by a trigger on ``jobs`` in the transaction that makes it
terminal (migration 0005), whoever decided it: a bridge (rejects, expiries), a worker (results,
failures), the reaper. So the reply exists exactly when the outcome is durable, and a process
killed right after its commit loses nothing: its row waits in the outbox.

One pass is one transaction: take up to ``relay_batch`` due rows (``FOR UPDATE SKIP LOCKED``,
so any number of relays share the outbox), publish each event keyed by job_id with acks=all,
mark the acknowledged rows sent and delay the rest with an exponential backoff (a topic that
cannot be written never holds up the others), commit. A relay that dies between its publish
and its commit leaves the rows unsent, so they are published again: at least once, and every
copy has the same content (``producers.replies``).

The trigger NOTIFYs ``agentq_replies`` (delivered on commit), so an idle relay wakes at once;
it also polls every ``relay_poll_ms`` in case a notification is missed.

Runs beside every bridge (``AGENTQ_REPLY_RELAY``: a child process by default, or a thread)
and as ``agentq relay`` on its own.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from kafka import KafkaProducer
from sqlalchemy import Engine

from agentq.config import Settings
from agentq.failpoints import failpoint
from agentq.log import get_logger
from producers.replies import encode_event, reply_event
from storage.db import transaction
from storage.errors import StorageUnavailable
from storage.replies import delay_replies, mark_sent, take_replies

log = get_logger("agentq.relay")
REPO = Path(__file__).resolve().parent.parent
CHANNEL = "agentq_replies"


@dataclass
class RelayStats:
    taken: int = 0
    sent: int = 0
    delayed: int = 0


def reply_producer(settings: Settings) -> KafkaProducer:
    """acks=all and a short metadata wait, so one unknown topic costs seconds, not minutes."""
    return KafkaProducer(acks="all", linger_ms=1, retries=5, max_block_ms=5000,
                         max_request_size=2 * 1024 * 1024, client_id="agentq-relay",
                         **settings.kafka.client_options())


class Relay:
    def __init__(self, settings: Settings, db: Engine, producer: Any = None) -> None:
        self.s = settings
        self.db = db
        self.producer = producer or reply_producer(settings)
        self._listener: psycopg.Connection[Any] | None = None

    def relay_once(self) -> RelayStats:
        """One transaction: take due rows, publish them, mark them sent or delayed."""
        r = self.s.replies
        st = RelayStats()
        with transaction(self.db) as conn:
            rows = take_replies(conn, r.relay_batch)
            if not rows:
                return st
            sent, failed = self._publish(rows)
            failpoint("relay.before_mark")
            mark_sent(conn, sent)
            for error, ids in failed.items():
                delay_replies(conn, ids, error, r.relay_backoff_cap_s)
        st.taken, st.sent = len(rows), len(sent)
        st.delayed = sum(len(ids) for ids in failed.values())
        if st.delayed:
            log.warning("replies_delayed", count=st.delayed, errors=sorted(failed)[:3])
        log.debug("replies_relayed", count=st.sent)
        return st

    def _publish(self, rows: list[dict[str, Any]]) -> tuple[list[int], dict[str, list[int]]]:
        """Send every row's event; returns (acknowledged ids, ids by error)."""
        failed: dict[str, list[int]] = {}
        bad_topics: dict[str, str] = {}  # a topic whose metadata timed out: skip it this pass
        pending: list[tuple[int, Any]] = []
        for row in rows:
            topic = row["topic"]
            if topic in bad_topics:
                failed.setdefault(bad_topics[topic], []).append(row["reply_id"])
                continue
            try:
                pending.append((row["reply_id"], self.producer.send(
                    topic, key=row["job_id"].encode(), value=encode_event(reply_event(row)))))
            except Exception as e:  # kafka-python raises KafkaError subclasses and ValueError
                bad_topics[topic] = f"{topic}: {type(e).__name__}: {e}"[:300]
                failed.setdefault(bad_topics[topic], []).append(row["reply_id"])
        self.producer.flush(timeout=self.s.replies.relay_publish_timeout_s)
        deadline = time.monotonic() + self.s.replies.relay_publish_timeout_s
        sent: list[int] = []
        for reply_id, future in pending:
            try:
                future.get(timeout=max(0.1, deadline - time.monotonic()))
                sent.append(reply_id)
            except Exception as e:  # not acknowledged: keep the row for a later pass
                failed.setdefault(f"{type(e).__name__}: {e}"[:300], []).append(reply_id)
        return sent, failed

    # -- waiting ---------------------------------------------------------------------------
    def _listen(self) -> psycopg.Connection[Any] | None:
        if self._listener is None:
            try:
                url = self.db.url.set(drivername="postgresql").render_as_string(
                    hide_password=False)
                conn = psycopg.connect(url, autocommit=True, connect_timeout=5,
                                       application_name="agentq-relay-listen")
                conn.execute(f"LISTEN {CHANNEL}")
                self._listener = conn
            except psycopg.Error as e:  # polling still works; try again next time
                log.warning("relay_listen_failed", error=str(e)[:200])
        return self._listener

    def wait(self, timeout_s: float) -> None:
        """Until a NOTIFY from a commit with new outbox rows, or ``timeout_s``."""
        conn = self._listen()
        if conn is None:
            time.sleep(timeout_s)
            return
        try:
            for _ in conn.notifies(timeout=timeout_s, stop_after=1):
                pass
        except psycopg.Error as e:
            log.warning("relay_listen_lost", error=str(e)[:200])
            self._close_listener()
            time.sleep(min(timeout_s, 1.0))

    def run(self, stop: threading.Event) -> None:
        r = self.s.replies
        log.info("relay_started", batch=r.relay_batch, poll_ms=r.relay_poll_ms)
        self._listen()  # before the first pass, so no commit after it goes unnoticed
        delay = 0.1
        while not stop.is_set():
            try:
                st = self.relay_once()
                delay = 0.1
                if st.taken < r.relay_batch:
                    self.wait(r.relay_poll_ms / 1000)
            except StorageUnavailable as e:
                log.warning("relay_db_unavailable", error=str(e)[:200], delay_s=delay)
                stop.wait(delay)
                delay = min(delay * 2, 5.0)
            except Exception as e:  # the relay must outlive any one bad pass
                log.warning("relay_pass_failed", error=str(e)[:300], delay_s=delay)
                stop.wait(delay)
                delay = min(delay * 2, 5.0)
        self.close()

    def _close_listener(self) -> None:
        if self._listener is not None:
            try:
                self._listener.close()
            except psycopg.Error as e:  # closing a broken connection: nothing left to do
                log.debug("relay_listen_close_failed", error=str(e)[:200])
            self._listener = None

    def close(self) -> None:
        self._close_listener()
        self.producer.close(timeout=5)
        log.info("relay_stopped")


def start_relay(settings: Settings, db: Engine, stop: threading.Event) -> threading.Thread | None:
    """The bridge's relay, as ``AGENTQ_REPLY_RELAY`` says: a supervised child process (the
    default), a thread in the bridge, or none."""
    mode = settings.replies.relay
    if mode == "off":
        return None
    if mode == "thread":
        target: Any = Relay(settings, db).run
    else:
        target = RelayChild().supervise
    t = threading.Thread(target=target, args=(stop,), name="agentq-relay", daemon=True)
    t.start()
    return t


class RelayChild:
    """``agentq relay --parent-pid <bridge>`` as a child of the bridge. A relay thread shares
    the bridge's GIL: while the bridge's loop is busy, each of the relay's many short waits
    (a query, a send, an ack) ends with a wait for the GIL, and replies queue behind them
    (measured: ``bench/results/roundtrip.json``). The child has its own interpreter; it exits
    when the bridge is gone (SIGKILL included: it checks its parent every pass), and the bridge
    restarts it when it exits, with a backoff, and stops it on shutdown (SIGTERM, then SIGKILL)."""

    def __init__(self, argv: list[str] | None = None) -> None:
        # ``-m ops.relay``, not ``-m cli.main relay``: the child imports only what it runs
        # (measured: 2.8 → 1.5 s of CPU to start on the 2-core machine)
        self.argv = argv or [sys.executable, "-m", "ops.relay",
                             "--parent-pid", str(os.getpid())]
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def supervise(self, stop: threading.Event) -> None:
        backoff = 1.0
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.proc = subprocess.Popen(self.argv, cwd=REPO)  # env and log stream inherited
            except OSError as e:
                log.error("relay_start_failed", error=str(e)[:200])
                stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
                continue
            self.starts += 1
            log.info("relay_child_started", pid=self.proc.pid)
            while not stop.is_set() and self.proc.poll() is None:
                stop.wait(0.5)
            if stop.is_set():
                break
            log.warning("relay_child_exited", rc=self.proc.returncode, restart_in_s=backoff)
            backoff = 1.0 if time.monotonic() - started > 60 else min(backoff * 2, 30.0)
            stop.wait(backoff)
        self.stop()

    def stop(self, timeout_s: float = 10.0) -> None:
        p = self.proc
        if p is None or p.poll() is not None:
            return
        p.terminate()
        try:
            p.wait(timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def watch_parent(parent_pid: int, stop: threading.Event, every_s: float = 0.5) -> None:
    """Set ``stop`` once ``parent_pid`` is no longer this process's parent (it died)."""
    def watch() -> None:
        while not stop.wait(every_s):
            if os.getppid() != parent_pid:
                log.warning("relay_parent_gone", parent_pid=parent_pid)
                stop.set()
    threading.Thread(target=watch, name="agentq-relay-parent", daemon=True).start()


def register(sub: Any) -> None:
    p = sub.add_parser("relay", help="publish result events from the reply outbox",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--once", action="store_true", help="one pass, then exit")
    p.add_argument("--parent-pid", type=int, help="exit when this process is gone (a bridge "
                   "that runs its relay as a child)")
    p.set_defaults(run=command)


def command(args: argparse.Namespace, settings: Settings) -> int:
    from agentq.shutdown import stop_on_signals
    from storage.db import make_engine

    db = make_engine(settings.worker_database_url, pool_size=1, app_name="agentq-relay")
    relay = Relay(settings, db)
    try:
        if args.once:
            st = relay.relay_once()
            print(f"taken={st.taken} sent={st.sent} delayed={st.delayed}")
            relay.close()
        else:
            stop = stop_on_signals()
            if args.parent_pid:
                watch_parent(args.parent_pid, stop)
            relay.run(stop)
    finally:
        db.dispose()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m ops.relay``: ``agentq relay`` without the rest of the CLI's imports (the
    bridge's relay child)."""
    from agentq.log import configure_logging

    p = argparse.ArgumentParser(prog="agentq relay", description=__doc__.split("\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_json)
    return command(args, settings)


if __name__ == "__main__":
    sys.exit(main())
