"""JobClient's refusals and timeouts, and `agentq submit --wait` / `agentq result`, live."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from sklearn.datasets import load_digits

from producers.admission import Admission
from producers.client import JobClient
from producers.errors import Backpressure, ClientFull, ReplyTimeout
from storage.registry import registered_names
from tests.faults.harness import digits_jobs
from tests.support import REPO

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


class _Backlog:
    """A backlog source over any limit (the admission's pluggable reader)."""

    def read(self):
        return 10_000, 1.0


def test_client_refusals_leave_nothing_outstanding(stack):
    s = stack.settings
    with JobClient(s, max_outstanding=2) as client:
        client.submit_many(digits_jobs(2))
        with pytest.raises(ClientFull):
            client.submit(digits_jobs(1)[0])
        assert client.outstanding() == 2
    with JobClient(s, admission=Admission(_Backlog(), limit_s=5.0)) as client:
        with pytest.raises(Backpressure) as e:
            client.submit(digits_jobs(1)[0])
        assert e.value.backlog_s > e.value.limit_s and client.outstanding() == 0


def test_a_timeout_says_what_the_ledger_knows_and_the_handle_still_resolves(stack):
    # Given a client with the ledger's URL and, at first, no bridge and no worker,
    s = stack.settings
    with JobClient(s, db_url=s.worker_database_url) as client:
        (handle,) = client.submit_many(digits_jobs(1))
        # when its wait times out, then the error says the ledger has not seen the job;
        with pytest.raises(ReplyTimeout, match="no row") as e:
            handle.result(1.0)
        assert e.value.ledger_status == "unknown"
        # with a bridge but no worker, that it is queued;
        stack.bridge()
        with pytest.raises(ReplyTimeout, match="queued") as e:
            handle.result(8.0)
        assert e.value.ledger_status == "queued"
        # and once a worker runs, the same handle gets its result.
        stack.worker()
        assert handle.result(60).ok


def _cli(stack, *args, timeout_s=90):
    env = {**os.environ, **stack.env}
    p = subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=timeout_s)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1, (p.stdout, p.stderr[-2000:])
    return p.returncode, json.loads(lines[0])


def test_cli_submit_wait_prints_the_result_and_result_reads_the_ledger(stack, worker_db):
    # Given a bridge and a worker,
    stack.worker()
    stack.bridge()
    pixels = load_digits().data[0].tolist()  # a zero
    # when a digits job is submitted with --wait, then one JSON object with the label, exit 0;
    rc, out = _cli(stack, "submit", "--model", "digits-mlp", "--pixels", json.dumps(pixels),
                   "--wait", "--timeout", "60")
    assert rc == 0 and out["status"] == "succeeded" and out["result"]["label"] == 0, out
    # `agentq result` prints the same event from the ledger, with where its reply went;
    rc, again = _cli(stack, "result", out["job_id"])
    reply = again.pop("reply")
    assert rc == 0 and again == out
    assert reply["topic"].endswith("cli") and reply["sent_at"]
    # a job that expires exits non-zero with its reason;
    rc, late = _cli(stack, "submit", "--model", "digits-mlp", "--pixels", json.dumps(pixels),
                    "--deadline-in-ms", "1", "--wait", "--timeout", "60")
    assert (rc, late["status"], late["reason"]) == (1, "expired", "EXPIRED"), late
    # an invalid job is refused before it is sent, and an unknown job id is said to be unknown.
    rc, bad = _cli(stack, "submit", "--model", "digits-mlp", "--pixels", "[1, 2]", "--wait")
    assert rc == 4 and bad["status"] == "refused" and "pixels" in bad["error"]
    rc, unknown = _cli(stack, "result", "00000000-0000-4000-8000-000000000000")
    assert rc == 5 and unknown["status"] == "unknown"
    # And a minilm-l6 text job, where that model is built, returns its 384-d embedding.
    with worker_db.connect() as conn:
        if "minilm-l6" not in registered_names(conn):
            pytest.skip("minilm-l6 is not registered (agentq models build minilm-l6)")
    rc, emb = _cli(stack, "submit", "--model", "minilm-l6", "--text", "reset my password",
                   "--wait", "--timeout", "90", timeout_s=120)
    assert rc == 0 and len(emb["result"]["embedding"]) == 384, emb


@pytest.mark.slow
def test_ten_thousand_outstanding_handles_all_resolve(stack):
    # Given a client whose 10,000 jobs all wait at once (no bridge yet),
    import resource

    s = stack.settings
    jobs = digits_jobs(10_000)
    with JobClient(s) as client:
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        handles = client.submit_many(jobs)
        assert client.outstanding() == 10_000
        grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
        # when the pipeline starts, then every handle resolves and none is left behind.
        stack.worker(concurrency=2)
        stack.bridge()
        results = client.wait(handles, timeout=150)
        assert client.outstanding() == 0
    assert sum(r.ok for r in results) == 10_000
    assert grown_mb < 200, grown_mb  # jobs, handles and the producer's buffers together
