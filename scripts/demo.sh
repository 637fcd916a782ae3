#!/usr/bin/env bash
# The main job, from a fresh machine: venv, services, schema, models, then a job stream through
# Kafka → bridge → Celery → ONNX Runtime → PostgreSQL, with a summary and a sample SQL result.
#
#   bash scripts/demo.sh                 # 10,000 digits jobs + 1,000 minilm jobs
#   bash scripts/demo.sh --digits 100000 --minilm 0
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/prepare.sh"
exec agentq demo "$@"
