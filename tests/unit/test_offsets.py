"""Safe offsets: commit only below the lowest record that is not yet durable."""

from bridge.offsets import OffsetTracker


def test_commit_waits_for_the_lowest_pending_record():
    t = OffsetTracker()
    t.assign(["p0"])
    tickets = [t.received("p0", o) for o in range(10, 15)]
    # Given records 10..14, when 12..14 complete first (out of order),
    for tk in tickets[2:]:
        t.done(tk)
    # then nothing can be committed past 10.
    assert t.committable() == {"p0": 10}
    t.done(tickets[0])
    assert t.committable() == {"p0": 11}
    t.done(tickets[1])
    assert t.committable() == {"p0": 15}


def test_mark_committed_suppresses_repeat_commits():
    t = OffsetTracker()
    tk = t.received("p0", 0)
    t.done(tk)
    offs = t.committable()
    assert offs == {"p0": 1}
    t.mark_committed(offs)
    assert t.committable() == {}


def test_late_completion_after_revoke_is_ignored():
    t = OffsetTracker()
    t.assign(["p0"])
    tk = t.received("p0", 7)
    t.revoke(["p0"])
    t.assign(["p0"])  # reassigned later: a new generation
    assert t.done(tk) is False
    t2 = t.received("p0", 7)
    assert t.committable() == {"p0": 7}
    assert t.done(t2) is True
    assert t.committable() == {"p0": 8}


def test_partitions_are_independent():
    t = OffsetTracker()
    a = t.received("p0", 0)
    t.received("p1", 100)
    t.done(a)
    assert t.committable() == {"p0": 1, "p1": 100}
    assert t.pending_count() == 1
