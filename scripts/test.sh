#!/usr/bin/env bash
# The full test suite, from a fresh machine: venv, services, schema, models, pytest.
#
#   bash scripts/test.sh                # default run: unit + integration (not slow)
#   AGENTQ_TEST_ARGS="-m slow" bash scripts/test.sh   # the long fault/soak tests
#
# Under CI=true a missing service fails the run instead of skipping.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/env.sh
venv="$(bash scripts/bootstrap.sh | tail -n 1)"
export PATH="$venv/bin:$PATH"

bash scripts/services.sh up
agentq db upgrade
agentq models build
t0=$SECONDS
# shellcheck disable=SC2086
python -m pytest -p no:cacheprovider ${AGENTQ_TEST_ARGS:--m "not slow"} "$@"
echo "tests took $((SECONDS - t0)) s"
