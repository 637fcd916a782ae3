"""The model catalogue is the one list of models: the contract, the bridge, the worker and the
builder all read it, so a model is one entry."""

import random

import pytest

from agentq.config import Limits, Settings
from bridge.consumer import make_batcher
from models.catalog import CATALOG, ModelSpec
from producers.contract import Rejection, RejectReason, validate_message
from producers.synthetic import synthetic_jobs

UUID = "7f9c2b1e-2d4a-4c7e-9a55-0d2f5f1e9b10"


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_every_entry_is_complete_and_its_samples_pass_its_own_check(name):
    entry = CATALOG[name]
    assert isinstance(entry, ModelSpec) and entry.name == name
    assert entry.result_columns and set(entry.result_columns) <= {"label", "probs", "embedding",
                                                                  "extra"}
    assert entry.input_schema["type"] == "object" and entry.input_schema["required"]
    samples = entry.sample_inputs(random.Random(0))
    for _ in range(20):
        assert entry.check_input(next(samples), Limits()) is None
    assert entry.check_input({}, Limits())[0] in {r.value for r in RejectReason}


def test_the_contract_accepts_only_catalogued_models_with_their_own_input():
    ok = validate_message({"v": 1, "job_id": UUID, "model": "digits-mlp",
                           "input": {"pixels": [0] * 64}}, Limits())
    assert not isinstance(ok, Rejection)
    wrong_input = validate_message({"v": 1, "job_id": UUID, "model": "digits-mlp",
                                    "input": {"text": "hi"}}, Limits())
    assert isinstance(wrong_input, Rejection) and wrong_input.reason == RejectReason.SCHEMA
    unknown = validate_message({"v": 1, "job_id": UUID, "model": "gpt-17", "input": {}}, Limits())
    assert isinstance(unknown, Rejection) and unknown.reason == RejectReason.UNKNOWN_MODEL


def test_batch_scale_comes_from_the_catalogue_unless_a_setting_overrides_it():
    s = Settings.from_env({"AGENTQ_BRIDGE_MAX_BATCH": "10"})
    assert make_batcher(s).limit("digits-mlp") == 10 * CATALOG["digits-mlp"].batch_scale
    s = Settings.from_env({"AGENTQ_BRIDGE_MAX_BATCH": "10",
                           "AGENTQ_BRIDGE_BATCH_SCALE_DIGITS_MLP": "2"})
    assert make_batcher(s).limit("digits-mlp") == 20
    assert make_batcher(s).limit("minilm-l6") == 10 * CATALOG["minilm-l6"].batch_scale


def test_synthetic_jobs_for_every_model_are_valid_v1_messages():
    for name in CATALOG:
        for job in synthetic_jobs(name, 5, seed=1):
            assert not isinstance(validate_message(job.to_dict(), Limits()), Rejection)
