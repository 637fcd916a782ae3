"""Rejected records: ledger rows and DLQ copies that cannot wedge the bridge — a failed send is
sent again, an oversized copy is truncated with a header, a DLQ that stays down stops the
bridge instead of being skipped."""

from dataclasses import replace

import pytest

from agentq.config import Settings
from bridge.offsets import Ticket
from bridge.records import Reject
from bridge.rejects import DeadLetterUnavailable, RejectWriter
from producers.contract import Rejection, RejectReason

pytestmark = pytest.mark.timeout(30)


class _Future:
    def __init__(self, ok: bool) -> None:
        self.ok = ok

    def get(self, timeout):
        if not self.ok:
            raise TimeoutError("broker unreachable")


class _DLQ:
    def __init__(self, failures: int) -> None:
        self.failures, self.sent = failures, []

    def send(self, value, reason, detail, **kw):
        self.sent.append((value, reason, kw.get("extra_headers")))
        ok = len(self.sent) > self.failures
        return _Future(ok)


def _reject(value: bytes = b"{}") -> Reject:
    return Reject(Ticket("p", 1, 0), Rejection(RejectReason.SCHEMA, "bad \x00 detail"), value,
                  None, "jobs", 0, 1, None, 1e12)


def _writer(dlq, rows, timeout_s=5.0, max_bytes=1024) -> RejectWriter:
    s = Settings()
    s = replace(s, bridge=replace(s.bridge, dlq_timeout_s=timeout_s,
                                  dlq_max_value_bytes=max_bytes))
    return RejectWriter(s, dlq, lambda batch: rows.extend(batch) or set())


def test_a_failed_dlq_send_is_sent_again_and_the_row_is_written_once():
    dlq, rows = _DLQ(failures=2), []
    _writer(dlq, rows).write([_reject()])
    assert len(dlq.sent) == 3 and len(rows) == 1
    assert rows[0]["status"] == "rejected" and "\x00" not in rows[0]["error"]


def test_an_oversized_copy_is_truncated_with_a_header_saying_so():
    dlq, rows = _DLQ(failures=0), []
    _writer(dlq, rows, max_bytes=100).write([_reject(b"x" * 5000)])
    value, _reason, extra = dlq.sent[0]
    assert len(value) == 100 and extra == [("truncated", b"5000")]


def test_a_dlq_that_stays_down_stops_the_bridge_instead_of_skipping_the_copy():
    with pytest.raises(DeadLetterUnavailable):
        _writer(_DLQ(failures=10**6), [], timeout_s=0.5).write([_reject()])
