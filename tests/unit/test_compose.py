"""compose.yaml agrees with the local scripts and the settings code (Docker cannot run here).

Checked against the sources, not hard-coded values: host ports against the defaults in
scripts/env.sh, env names against the names agentq/config.py and scripts/env.sh read, build
args against the Dockerfile's ARGs.
"""

from __future__ import annotations

import ast
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentq.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
ENV_SH = ROOT / "scripts" / "env.sh"
CONFIG_PY = ROOT / "agentq" / "config.py"
DOCKERFILE = ROOT / "Dockerfile"

NAME = re.compile(r"AGENTQ_[A-Z0-9_]*[A-Z0-9](?![A-Z0-9_])")  # a full name (a prefix ends with "_")
APP_SERVICES = ("bridge", "worker-cpu", "worker-gpu")
WORKERS = ("worker-cpu", "worker-gpu")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())  # resolves the `<<: *anchor` merges


@pytest.fixture(scope="module")
def services(compose) -> dict[str, Any]:
    return compose["services"]


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the `- KEY=value` form
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _env_sh_default(pattern: str) -> str:
    m = re.search(pattern, ENV_SH.read_text())
    assert m, f"scripts/env.sh has no default matching {pattern!r}"
    return m.group(1)


def _host_ports(service: dict[str, Any]) -> dict[int, str]:
    """container port -> "host_ip:host_port" of each published port ("ip:host:container")."""
    out = {}
    for spec in service.get("ports", []):
        parts = str(spec).split(":")
        assert len(parts) == 3, f"publish on an explicit address, not {spec!r}"
        out[int(parts[2])] = f"{parts[0]}:{parts[1]}"
    return out


def _known_env_names() -> set[str]:
    """Every name config.py or env.sh reads: literal names, plus PREFIX + FIELD for each
    ``_apply(base.<group>, e, "AGENTQ_<PREFIX>_", {aliases})`` in Settings.from_env."""
    config = CONFIG_PY.read_text()
    known = set(NAME.findall(config)) | set(NAME.findall(ENV_SH.read_text()))
    base = Settings()
    applied = re.findall(r'_apply\(base\.(\w+), e, "(AGENTQ_[A-Z_]+_)"(?:, (\{[^}]*\}))?\)', config)
    assert applied, "Settings.from_env no longer uses _apply(base.<group>, e, PREFIX)"
    for group, prefix, aliases in applied:
        alias = ast.literal_eval(aliases) if aliases else {}
        known |= {prefix + alias.get(f.name, f.name.upper()) for f in fields(getattr(base, group))}
    return known


def test_services_exist(services):
    for name in ("kafka", "postgres", "redis", "bridge", "worker-cpu", "worker-gpu"):
        assert name in services, f"compose.yaml has no service {name!r}"


def test_worker_gpu_is_behind_the_gpu_profile_and_reserves_an_nvidia_device(services):
    gpu = services["worker-gpu"]
    assert gpu.get("profiles") == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", [])
               and (d.get("count") or d.get("device_ids")) for d in devices), devices
    for other in ("kafka", "postgres", "redis", "bridge", "worker-cpu"):
        assert "gpu" not in services[other].get("profiles", []), other


def test_worker_gpu_runs_one_process_per_gpu_on_cuda(services):
    gpu, cpu = services["worker-gpu"], services["worker-cpu"]
    cmd = gpu["command"]
    assert cmd[cmd.index("-Q") + 1] == "gpu"
    pool = cmd[cmd.index("-P") + 1] if "-P" in cmd else cmd[cmd.index("--pool") + 1]
    assert pool in ("solo", "threads"), "CUDA must never be initialised before a fork"
    env = _env(gpu)
    assert env["AGENTQ_WORKER_DEVICE"] == "cuda"
    assert env["AGENTQ_WORKER_ENGINE_MODE"] == "auto"
    assert cpu["command"][cpu["command"].index("-Q") + 1] == "cpu"


def test_gpu_image_is_its_own_build_with_declared_args(services):
    gpu, cpu = services["worker-gpu"], services["worker-cpu"]
    assert gpu["image"] != cpu["image"], "a GPU build must not overwrite the CPU image tag"
    args = gpu["build"].get("args", {})
    assert args, "worker-gpu builds without the gpu build arg"
    declared = set(re.findall(r"^ARG\s+(\w+)", DOCKERFILE.read_text(), flags=re.M))
    assert set(args) <= declared, f"build args {set(args) - declared} not declared in Dockerfile"
    assert not cpu["build"].get("args"), "the CPU image builds with the Dockerfile's defaults"


def test_host_ports_match_the_local_defaults(services):
    kafka_port = _env_sh_default(r'AGENTQ_KAFKA_BOOTSTRAP:-[^}"]*:(\d+)\}')
    pg_port = _env_sh_default(r"AGENTQ_PG_PORT:-(\d+)\}")
    redis_port = _env_sh_default(r"AGENTQ_REDIS_PORT:-(\d+)\}")
    kafka = _host_ports(services["kafka"])
    assert f"127.0.0.1:{kafka_port}" in kafka.values()
    # the broker must advertise that same address to host clients
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert f"127.0.0.1:{kafka_port}" in advertised
    assert _host_ports(services["postgres"]) == {5432: f"127.0.0.1:{pg_port}"}
    assert _host_ports(services["redis"]) == {6379: f"127.0.0.1:{redis_port}"}
    for name in APP_SERVICES:
        assert not services[name].get("ports"), f"{name} publishes no ports"


def test_in_network_addresses_point_at_the_services(services):
    kafka_internal = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    for name in APP_SERVICES:
        env = _env(services[name])
        assert env["AGENTQ_KAFKA_BOOTSTRAP"] in kafka_internal, name
        assert env["AGENTQ_REDIS_URL"].startswith("redis://redis:6379/"), name
        for key in ("AGENTQ_DATABASE_URL", "AGENTQ_WORKER_DATABASE_URL"):
            assert "@postgres:5432/agentq" in env[key], (name, key)


def test_every_agentq_env_name_is_one_the_code_or_scripts_know(compose):
    known = _known_env_names()
    used: set[str] = set()
    for service in compose["services"].values():
        used |= {k for k in _env(service) if k.startswith("AGENTQ_")}
    # and every ${AGENTQ_...} interpolated from the host environment or .env
    used |= set(re.findall(r"\$\{(AGENTQ_[A-Z0-9_]+)", COMPOSE.read_text()))
    assert used, "compose.yaml sets no AGENTQ_* variables?"
    unknown = sorted(used - known)
    assert not unknown, f"compose.yaml uses env names nothing reads: {unknown}"


def test_bridge_and_workers_get_only_the_worker_role(services):
    for name in APP_SERVICES:
        env = _env(services[name])
        urls = {k: v for k, v in env.items() if k.endswith("DATABASE_URL")}
        assert urls, name
        for key, url in urls.items():
            user = re.search(r"://([^:@/]+)[:@]", url)
            assert user and user.group(1) == "agentq_worker", (name, key)
        assert not any("OWNER" in k for k in env), f"{name} sees owner credentials"
        assert "agentq_owner" not in " ".join(env.values()), name


def test_workers_have_shared_memory(services):
    for name in WORKERS:
        size = str(services[name].get("shm_size", ""))
        m = re.fullmatch(r"(\d+)\s*([kmg]?)b?", size.lower())
        assert m, f"{name} has no shm_size (the Docker default is 64 MB)"
        scale = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30}[m.group(2)]
        assert int(m.group(1)) * scale >= 256 * 2**20, f"{name} shm_size {size} is too small"
