"""The `agentq` command wires every subcommand to a module that exists and has ``main``."""

import importlib

import pytest

from cli import main as cli


@pytest.mark.parametrize("module", sorted(set(cli.BENCHMARKS.values()) | set(cli.GENERIC.values())
                                          | {"models.cli", "producers.cli"}))
def test_subcommand_modules_import_and_have_main(module):
    assert callable(importlib.import_module(module).main)


def test_passthrough_arguments_reach_the_subcommand():
    parser = cli.build_parser()
    args = parser.parse_args(["bridge", "--max-batch", "8"])
    assert args.max_batch == 8 and args.fn is cli.cmd_bridge
    args = parser.parse_args(["produce", "--model", "minilm-l6", "--count", "5"])
    assert (args.model, args.count) == ("minilm-l6", 5)
