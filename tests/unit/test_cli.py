"""The `agentq` command: every subcommand is registered by its own module and reaches its run."""

import pytest

from cli import main as cli
from cli import serve

SUBCOMMANDS = {"produce", "submit", "result", "bridge", "topics", "db", "models", "check",
               "status", "autoscale", "reaper", "relay", "dlq", "demo", "bench"}
BENCHMARKS = {"models", "e2e", "roundtrip", "shm", "burst"}


def _choices(parser) -> dict:
    (action,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return action.choices


def test_every_subcommand_is_registered_with_a_run_function():
    parser = cli.build_parser()
    choices = _choices(parser)
    assert set(choices) == SUBCOMMANDS
    assert set(_choices(choices["bench"])) == BENCHMARKS
    for name, sub in choices.items():
        if name in ("models", "bench", "dlq"):
            continue  # one more level: checked below
        assert callable(sub.get_default("run")), name
    assert callable(parser.parse_args(["models", "build"]).run)
    assert callable(parser.parse_args(["dlq", "replay", "--reason", "X"]).run)
    for which in BENCHMARKS:
        assert callable(parser.parse_args(["bench", which]).run), which


def test_flags_reach_the_subcommand_and_beat_the_environment(monkeypatch):
    parser = cli.build_parser()
    args = parser.parse_args(["bridge", "--max-batch", "8"])
    assert args.max_batch == 8 and args.run is serve.run
    monkeypatch.setenv("AGENTQ_BRIDGE_MAX_BATCH", "32")
    monkeypatch.setenv("AGENTQ_BRIDGE_MAX_WAIT_MS", "7")
    settings = serve.with_flags(cli.Settings.from_env(), args)
    assert (settings.bridge.max_batch, settings.bridge.max_wait_ms) == (8, 7)
    args = parser.parse_args(["produce", "--model", "minilm-l6", "--count", "5"])
    assert (args.model, args.count) == ("minilm-l6", 5)
    args = parser.parse_args(["autoscale", "--max-workers", "3", "--ticks", "1"])
    assert (args.max_workers, args.ticks) == (3, 1)


def test_unknown_subcommand_exits_with_usage():
    with pytest.raises(SystemExit) as e:
        cli.build_parser().parse_args(["nope"])
    assert e.value.code == 2
