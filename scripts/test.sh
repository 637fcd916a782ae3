#!/usr/bin/env bash
# The full test suite, from a fresh machine: venv, services, schema, models, pytest.
#
#   bash scripts/test.sh                            # unit + integration, not the slow ones
#   AGENTQ_TEST_MARKS="not soak" bash scripts/test.sh   # also the slow fault rows (what CI runs)
#   AGENTQ_TEST_MARKS="soak" bash scripts/test.sh       # the few-minute soak with random faults
#   bash scripts/test.sh tests/unit -x                  # extra arguments go to pytest
#
# Under CI=true a missing service fails the run instead of skipping.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/prepare.sh"
t0=$SECONDS
ruff check .
mypy agentq cli producers bridge workers engine ops storage models
python -m pytest -p no:cacheprovider -m "${AGENTQ_TEST_MARKS:-not slow}" "$@"
echo "tests took $((SECONDS - t0)) s"
