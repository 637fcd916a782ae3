"""Inference in a batch: a bad item fails alone; an unavailable engine is not the jobs' fault."""

from types import SimpleNamespace

import numpy as np
import pytest

from engine.errors import EngineUnavailable
from models.catalog import Prepared
from workers.execute import _infer


class _Engine:
    def __init__(self, fail: BaseException | None = None, bad_row: float | None = None) -> None:
        self.fail = fail
        self.bad_row = bad_row

    def run(self, model, feeds):
        x = feeds["x"]
        if self.fail is not None:
            raise self.fail
        if self.bad_row is not None and (x == self.bad_row).any():
            raise RuntimeError("bad input")
        return [x * 2]


def _prepared():
    return Prepared({"x": np.array([[1.0], [2.0], [3.0]], np.float32)}, ok=[0, 1, 2],
                    extras=[{}, {}, {}])


def test_a_failing_item_fails_alone_and_the_rest_keep_their_outputs():
    ctx = SimpleNamespace(engine=_Engine(bad_row=2.0))
    prepared = _prepared()
    outputs, errors = _infer(ctx, "m", prepared)
    assert list(errors) == [1] and "bad input" in errors[1]
    assert prepared.ok == [0, 2]
    np.testing.assert_array_equal(outputs[0], [[2.0], [6.0]])


def test_engine_unavailable_is_raised_not_charged_to_the_jobs():
    ctx = SimpleNamespace(engine=_Engine(fail=EngineUnavailable("engine down")))
    with pytest.raises(EngineUnavailable):
        _infer(ctx, "m", _prepared())
