"""Routing decision: gpu only when placed there and a gpu worker is live; overflow to cpu."""

import pytest

from bridge.routing import choose_queue

pytestmark = pytest.mark.timeout(10)

BOTH = frozenset({"cpu", "cuda"})


def test_cpu_only_model_goes_to_cpu_even_with_live_gpu_workers():
    assert choose_queue(frozenset({"cpu"}), True, {"gpu": 0, "cpu": 500}) == "cpu"


def test_cuda_model_goes_to_gpu_only_when_a_gpu_worker_is_live():
    assert choose_queue(BOTH, True, {}) == "gpu"
    assert choose_queue(BOTH, False, {}) == "cpu"
    assert choose_queue(frozenset({"cuda"}), False, {}) == "cpu"


def test_deep_gpu_queue_overflows_to_cpu_only_when_the_model_has_a_cpu_variant():
    deep = {"gpu": 150, "cpu": 3}
    assert choose_queue(BOTH, True, deep, overflow_depth=100) == "cpu"
    assert choose_queue(frozenset({"cuda"}), True, deep, overflow_depth=100) == "gpu"
    assert choose_queue(BOTH, True, {"gpu": 150, "cpu": 200}, overflow_depth=100) == "gpu"


def test_pinned_queue_wins():
    assert choose_queue(frozenset({"cpu"}), False, {}, pinned="gpu") == "gpu"
    assert choose_queue(BOTH, True, {}, pinned="cpu") == "cpu"


class _CountingRedis:
    """In-memory LLEN for the Router's depth cache: counts round trips."""

    def __init__(self) -> None:
        self.lengths: dict[str, int] = {}
        self.round_trips = 0

    def pipeline(self):
        outer = self

        class _Pipe:
            def __init__(self) -> None:
                self.keys: list[str] = []

            def llen(self, key: str) -> None:
                self.keys.append(key)

            def execute(self) -> list[int]:
                outer.round_trips += 1
                return [outer.lengths.get(k, 0) for k in self.keys]

        return _Pipe()


def _router(fake: _CountingRedis):
    from agentq.config import Settings
    from bridge.routing import Router

    return Router(Settings(), celery_app=None, redis_client=fake)


def test_the_busy_window_ends_within_its_depth_age_once_the_queue_empties(monkeypatch):
    # Given a bridge whose Celery queue holds batches (so its window is the busy one),
    import types

    import bridge.routing as routing
    from agentq.config import BridgeSettings, Settings
    from bridge.consumer import Bridge

    clock = [100.0]
    monkeypatch.setattr(routing.time, "monotonic", lambda: clock[0])
    fake = _CountingRedis()
    fake.lengths["cpu"] = 3
    s = Settings(bridge=BridgeSettings(max_wait_ms=20, busy_wait_ms=1000,
                                       busy_depth_max_age_ms=20))
    b = types.SimpleNamespace(s=s, router=_router(fake))
    assert Bridge.window_ms(b) == 1000
    # when the queue empties, a depth read within the age is the cached one,
    fake.lengths["cpu"] = 0
    clock[0] += 0.010
    assert Bridge.window_ms(b) == 1000 and fake.round_trips == 1
    # and once the age has passed, the window is the plain one again.
    clock[0] += 0.011
    assert Bridge.window_ms(b) == 20 and fake.round_trips == 2


def test_without_a_busy_window_no_depth_is_read():
    import types

    from agentq.config import BridgeSettings, Settings
    from bridge.consumer import Bridge

    fake = _CountingRedis()
    s = Settings(bridge=BridgeSettings(busy_wait_ms=0))
    assert Bridge.window_ms(types.SimpleNamespace(s=s, router=_router(fake))) == 20
    assert fake.round_trips == 0
