"""compose.yaml runs end to end (checked against the code, since Docker cannot run here): every
command exists, the image installs what each service imports, health checks probe the process
itself, Prometheus scrapes every agentq process, and the dashboard asks for metrics that exist."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.lockfile import ROOT, install, missing_from, third_party_imports

COMPOSE = ROOT / "compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DEPLOY = ROOT / "deploy"
RUNTIME_ROOMS = ("agentq", "cli", "producers", "bridge", "workers", "engine", "ops", "storage",
                 "models", "migrations")
BUILD_ONLY = ("models/digits.py", "models/minilm.py", "models/digits_build.py",
              "models/minilm_build.py", "models/minilm_eval.py", "models/minilm_prune.py")


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def _agentq_services(services: dict[str, Any]) -> dict[str, Any]:
    return {n: s for n, s in services.items() if str(s.get("image", "")).startswith("agentq:")}


def _env(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in (service.get("environment") or {}).items()}


def _image_extras(service: dict[str, Any]) -> list[str]:
    """The extras the Dockerfile installs for this service's build args (AGENTQ_GPU 0 or 1)."""
    gpu = str((service.get("build") or {}).get("args", {}).get("AGENTQ_GPU", "0"))
    docker = DOCKERFILE.read_text()
    branch = re.search(rf'"\$AGENTQ_GPU" = "{gpu}" \]; then(.*?)(?:elif|else)', docker, re.S)
    assert branch, f"Dockerfile has no AGENTQ_GPU={gpu} branch"
    m = re.search(r"locked\.py export --extras ([\w,]+)", branch.group(1))
    assert m, f"the AGENTQ_GPU={gpu} branch does not install from the lock"
    return m.group(1).split(",")


def _modules_of(command: list[str]) -> list[Path]:
    """The source files a service's command may import: the runtime rooms, plus the model
    builders for `agentq models build`."""
    files = [p for room in RUNTIME_ROOMS for p in (ROOT / room).rglob("*.py")]
    if command[:3] != ["agentq", "models", "build"]:
        files = [p for p in files if str(p.relative_to(ROOT)) not in BUILD_ONLY]
    return files


def test_every_command_exists(services):
    from cli.main import build_parser
    from workers.queues import QUEUES

    for name, svc in _agentq_services(services).items():
        cmd = svc["command"]
        if cmd[0] == "agentq":
            build_parser().parse_args(cmd[1:])  # exits (fails the test) on an unknown command
        else:  # Celery's own command on our app, consuming one of our queues
            assert cmd[:3] == ["celery", "-A", "workers.app"], (name, cmd)
            assert [c for c in cmd[3:] if not c.startswith("-")][0] == "worker", (name, cmd)
            assert cmd[cmd.index("-Q") + 1] in QUEUES, (name, cmd)
        hc = (svc.get("healthcheck") or {}).get("test", [])
        if hc[:2] == ["CMD", "agentq"]:
            build_parser().parse_args(hc[2:])


def test_the_image_installs_what_each_service_imports(services):
    from models.tokenizer import WEIGHTS_PACKAGE

    for name, svc in _agentq_services(services).items():
        dists = install(_image_extras(svc))
        imports = set(third_party_imports(_modules_of(svc["command"])))
        if svc["command"][:3] == ["agentq", "models", "build"]:
            imports.add(WEIGHTS_PACKAGE)  # found with importlib.util.find_spec, not imported
        else:
            imports -= {"torch", "onnx", "sklearn", "matplotlib", WEIGHTS_PACKAGE}
        # bench/ is not run by any service; matplotlib is only imported there
        assert not missing_from(dists, imports), (name, missing_from(dists, imports))


def test_models_service_gets_the_build_extra_and_workers_share_its_volume(services):
    models = services["models"]
    assert models["command"][:3] == ["agentq", "models", "build"]
    assert "build" in _image_extras(models)
    vol = next(v for v in models["volumes"] if v.endswith(":/models"))
    for worker in ("worker-cpu", "worker-gpu"):
        assert f"{vol.split(':')[0]}:/models:ro" in services[worker]["volumes"]
        assert services[worker]["depends_on"]["models"]["condition"] == \
            "service_completed_successfully"


def test_health_checks_probe_the_process_itself(services):
    bridge = services["bridge"]["healthcheck"]["test"]
    assert bridge[:4] == ["CMD", "agentq", "check", "--bridge"], bridge
    assert _env(services["bridge"]).get("AGENTQ_BRIDGE_HEARTBEAT_FILE"), \
        "the bridge must touch the heartbeat file its health check reads"
    for name in ("worker-cpu", "worker-gpu"):
        svc = services[name]
        cmd = svc["command"]
        node = cmd[cmd.index("--hostname") + 1]  # e.g. cpu@%h
        test = " ".join(svc["healthcheck"]["test"])
        assert "inspect ping" in test, (name, test)
        assert f"--destination {node.replace('%h', '$$HOSTNAME')}" in test, (name, test)
    for name in ("prometheus", "grafana"):
        assert services[name]["healthcheck"]["test"], name


def test_redis_wants_a_password_that_every_client_gets(services):
    redis = services["redis"]
    assert "--requirepass" in " ".join(redis["command"])
    assert _env(redis)["REDISCLI_AUTH"].startswith("${AGENTQ_REDIS_PASSWORD")
    for name, svc in _agentq_services(services).items():
        assert _env(svc)["AGENTQ_REDIS_PASSWORD"].startswith("${AGENTQ_REDIS_PASSWORD"), name


def test_topics_come_from_agentq_and_the_broker_creates_none(services):
    assert services["kafka"]["environment"]["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    topics = services["kafka-topics"]
    assert topics["command"] == ["agentq", "topics", "create"]
    assert services["bridge"]["depends_on"]["kafka-topics"]["condition"] == \
        "service_completed_successfully"


def _prometheus_config() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())


def test_prometheus_scrapes_every_agentq_process_on_its_metrics_port(services):
    scraped: dict[str, int] = {}
    for job in _prometheus_config()["scrape_configs"]:
        for sd in job.get("dns_sd_configs", []):
            scraped.update({n: sd["port"] for n in sd["names"]})
    for name, svc in _agentq_services(services).items():
        if svc.get("restart") == "no":
            continue  # one-shot jobs (migrate, models, topics) serve no metrics
        assert name in scraped, f"{name} is not scraped"
        assert int(_env(svc)["AGENTQ_METRICS_PORT"]) == scraped[name], name
    mount = services["prometheus"]["volumes"][0]
    assert mount.startswith("./deploy/prometheus:/etc/prometheus")
    assert "/etc/prometheus/rules.yml" in _prometheus_config()["rule_files"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian prometheus)")
def test_promtool_accepts_the_rules_and_the_config(tmp_path):
    rules = DEPLOY / "prometheus" / "rules.yml"
    out = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    cfg = _prometheus_config()
    cfg["rule_files"] = [str(rules)]  # the container path, here
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    out = subprocess.run(["promtool", "check", "config", str(tmp_path / "prometheus.yml")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def _defined_metrics() -> set[str]:
    from agentq import metrics

    names = set()
    for m in metrics._m().values():
        base = m._name
        if m._type == "counter":
            names.add(base + "_total")
        elif m._type == "histogram":
            names |= {base + s for s in ("_bucket", "_sum", "_count")}
        else:
            names.add(base)
    return names


def _exprs(text: str) -> list[str]:
    return re.findall(r"\bagentq_[a-z_]+\b", text)


def test_dashboard_and_rules_ask_only_for_metrics_that_exist():
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "agentq.json").read_text())
    defined = _defined_metrics()
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = {n for e in exprs for n in _exprs(e)}
    used |= {n for n in _exprs((DEPLOY / "prometheus" / "rules.yml").read_text())}
    assert used and not used - defined, sorted(used - defined)
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for topic in ("throughput", "latency", "lag", "queue depth", "workers", "rejects",
                  "dead letters"):
        assert topic in titles, f"the dashboard has no {topic} panel"
    assert any(p["type"] == "heatmap" for p in dash["panels"]), "no latency histogram"
    uids = {t["datasource"]["uid"] for p in dash["panels"] for t in p["targets"]}
    ds = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" /
                         "prometheus.yml").read_text())["datasources"]
    assert uids == {d["uid"] for d in ds}


def test_grafana_mounts_its_provisioning_and_dashboard(services):
    vols = services["grafana"]["volumes"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in vols
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" /
                               "agentq.yml").read_text())["providers"][0]
    path = provider["options"]["path"]
    assert f"./deploy/grafana/dashboards:{path}:ro" in vols
