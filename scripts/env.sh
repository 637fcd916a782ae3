# shellcheck shell=bash
# agentq local defaults. Source this file; every value is only set when unset,
# so anything exported beforehand (CI, a user's shell) wins. Idempotent.

if [ -z "${AGENTQ_REPO:-}" ]; then
  AGENTQ_REPO="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
fi
export AGENTQ_REPO

# State outside the clone: Kafka jars, service data, virtualenvs.
export AGENTQ_HOME="${AGENTQ_HOME:-/var/tmp/agentq}"

# Kafka (KRaft single node; controller listener on 19093).
export AGENTQ_KAFKA_BOOTSTRAP="${AGENTQ_KAFKA_BOOTSTRAP:-127.0.0.1:19092}"
export AGENTQ_KAFKA_CONTROLLER="${AGENTQ_KAFKA_CONTROLLER:-127.0.0.1:19093}"
export AGENTQ_KAFKA_VERSION="${AGENTQ_KAFKA_VERSION:-4.1.1}"

# Redis (Celery broker). Password optional: AGENTQ_REDIS_PASSWORD stays out of the URL here;
# agentq (Settings.from_env) puts it in URL-escaped, so any character works.
export AGENTQ_REDIS_PORT="${AGENTQ_REDIS_PORT:-16379}"
export AGENTQ_REDIS_URL="${AGENTQ_REDIS_URL:-redis://127.0.0.1:${AGENTQ_REDIS_PORT}/0}"

# PostgreSQL. Owner role runs migrations and model registration; the worker
# role (least privilege, rights granted by the migrations) is used by the
# bridge and the workers.
export AGENTQ_PG_PORT="${AGENTQ_PG_PORT:-55432}"
export AGENTQ_OWNER_PASSWORD="${AGENTQ_OWNER_PASSWORD:-agentq_owner}"
export AGENTQ_WORKER_PASSWORD="${AGENTQ_WORKER_PASSWORD:-agentq_worker}"
# Read-only role for analysts (the SQL cookbook); rights granted by migration 0006.
export AGENTQ_ANALYST_PASSWORD="${AGENTQ_ANALYST_PASSWORD:-agentq_analyst}"
export AGENTQ_DATABASE_URL="${AGENTQ_DATABASE_URL:-postgresql+psycopg://agentq_owner:${AGENTQ_OWNER_PASSWORD}@127.0.0.1:${AGENTQ_PG_PORT}/agentq}"
export AGENTQ_WORKER_DATABASE_URL="${AGENTQ_WORKER_DATABASE_URL:-postgresql+psycopg://agentq_worker:${AGENTQ_WORKER_PASSWORD}@127.0.0.1:${AGENTQ_PG_PORT}/agentq}"

# Extras the local venv gets on top of the runtime: everything, so the demo and the tests run
# on a fresh machine. AGENTQ_EXTRAS="" builds a runtime-only venv (bridge, workers, producers).
export AGENTQ_EXTRAS="${AGENTQ_EXTRAS-build,bench,dev}"

# Virtualenv keyed by a hash of what it installs: uv.lock (the one lock, scripts/locked.py),
# the extras and the Python version. Shared by CI and repeated runs; other edits keep the venv.
if [ -z "${AGENTQ_VENV:-}" ]; then
  _agentq_hash="$(python3 - "$AGENTQ_REPO/uv.lock" "$AGENTQ_EXTRAS" <<'PY'
import hashlib, sys
h = hashlib.sha256(open(sys.argv[1], "rb").read())
extras = sorted(x for x in sys.argv[2].replace(" ", ",").split(",") if x)
h.update(repr((extras, sys.version_info[:2])).encode())
print(h.hexdigest()[:12])
PY
)"
  AGENTQ_VENV="$AGENTQ_HOME/venv-$_agentq_hash"
  unset _agentq_hash
fi
export AGENTQ_VENV
