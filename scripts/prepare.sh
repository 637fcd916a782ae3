# Sourced by demo.sh and test.sh: venv (built once, reused), services up, schema migrated, models
# built if missing. Leaves the venv's bin first on PATH.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/env.sh
venv="$(bash scripts/bootstrap.sh | tail -n 1)"
export PATH="$venv/bin:$PATH"

bash scripts/services.sh up
agentq db upgrade
agentq models build
