"""The bridge's rebalance listener: before partitions go, everything buffered for them becomes
durable and their offsets are committed — without blocking the consumer's IO thread.

kafka-python 3 runs listener callbacks on its IO thread, where a blocking consumer call
(``commit``) fails ("Cannot block on net.run() from the IO thread itself") and a long blocking
callback stops heartbeats. So the callbacks are coroutines (``AsyncConsumerRebalanceListener``):
the ledger and Celery work runs on a helper thread while the callback awaits the IO loop's own
sleep (heartbeats go on), and the commit is sent with ``commit_async`` and awaited the same way.
The bridge's own thread is blocked in ``poll`` meanwhile, so nothing else touches its state.

A rejoin that kafka-python (3.0.12) starts itself — the subscribed topic's partitions changed,
e.g. a topic created just before the bridge subscribed, or partitions added — is driven by its
metadata snapshot, not by its ``rejoin_needed`` flag. As the leader it updates that snapshot while
the JoinGroup/SyncGroup task is still in flight; a ``poll`` whose timeout ends in that window (the
bridge polls with the time left to its next batch deadline, often 0-5 ms) then sees nothing to
rejoin, and the in-flight task's assignment is never applied: the bridge holds no partitions
until some later rebalance. ``on_partitions_revoked`` runs at the start of every rejoin, so it
sets the flag (``request_rejoin``); the flag is cleared only when the join completes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from kafka import AsyncConsumerRebalanceListener, TopicPartition
from kafka.structs import OffsetAndMetadata

from agentq.log import get_logger

log = get_logger("agentq.bridge")

COMMIT_TIMEOUT_S = 15.0


def keep_join_awaited(consumer: Any) -> None:
    """Mark the rejoin that is starting as needed until it completes (see the module's note)."""
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is not None:
        coordinator.request_rejoin()


class Listener(AsyncConsumerRebalanceListener):
    def __init__(self, bridge: Any) -> None:
        self.bridge = bridge
        self.fatal: BaseException | None = None  # raised again on the bridge's own thread

    async def on_partitions_revoked(self, revoked: Any) -> None:
        partitions: list[TopicPartition] = list(revoked)
        b = self.bridge
        keep_join_awaited(b.consumer)
        await self._off_thread(b.flush_all)
        if self.fatal is None:
            await self._commit(b.tracker.committable())
        b.tracker.revoke(partitions)
        b.forget(partitions)
        log.info("partitions_revoked", partitions=[p.partition for p in partitions])

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.bridge.on_assigned(list(assigned))

    async def _sleep(self, seconds: float) -> None:
        await self.bridge.consumer._net.sleep(seconds)  # the IO loop's sleep (kafka-python 3)

    async def _off_thread(self, fn: Callable[[], None]) -> None:
        def run() -> None:
            try:
                fn()
            except BaseException as e:  # the bridge re-raises it after poll returns
                self.fatal = e

        t = threading.Thread(target=run, name="agentq-rebalance-flush", daemon=True)
        t.start()
        while t.is_alive():
            await self._sleep(0.01)

    async def _commit(self, offsets: dict[Any, int]) -> None:
        if not offsets:
            return
        future = self.bridge.consumer.commit_async(
            {tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()})
        end = time.monotonic() + COMMIT_TIMEOUT_S
        while not future.is_done and time.monotonic() < end:
            await self._sleep(0.01)
        if future.is_done and future.succeeded():
            self.bridge.tracker.mark_committed(offsets)
            log.info("offsets_committed_on_revoke",
                     offsets={f"{tp.topic}:{tp.partition}": o for tp, o in offsets.items()})
        else:  # the new owner re-reads from the last commit; the ledger collapses redeliveries
            log.warning("commit_on_revoke_failed",
                        error=str(future.exception) if future.is_done else "timed out")
