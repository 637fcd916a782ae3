"""Loaded into a Celery worker with ``-I tests.slow_batches``: each batch first sleeps
``AGENTQ_TEST_BATCH_DELAY_MS``. A worker process then has a small capacity that costs no CPU, so
adding processes adds throughput even on a 2-core CI machine (burst test, ``bench/burst.py``)."""

from __future__ import annotations

import os
import time
from typing import Any

from celery import signals

DELAY_S = float(os.environ.get("AGENTQ_TEST_BATCH_DELAY_MS", "0")) / 1000


@signals.task_prerun.connect
def _delay(**_: Any) -> None:
    if DELAY_S > 0:
        time.sleep(DELAY_S)
