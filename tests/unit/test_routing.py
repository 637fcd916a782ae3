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
