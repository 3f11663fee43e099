"""docker-compose.yml and the configs it mounts, checked against the repository (no engine here)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from service.settings import Settings
from tests.deploy.conftest import (
    ROOT,
    contract_model_names,
    declared_route_paths,
    tfserving_model_configs,
    url_paths,
)

API_SERVICES = ("api", "api-replica")


def healthcheck_command(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    assert test[0] in {"CMD", "CMD-SHELL"}, test
    # `$$` is compose's escape for a literal `$` in the container's command.
    return " ".join(test[1:]).replace("$$", "$")


def container_ports(service: dict[str, Any]) -> list[int]:
    return [int(str(mapping).rsplit(":", 1)[1]) for mapping in service.get("ports", [])]


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(host path, container path, mode) of each short-syntax bind mount."""
    mounts = []
    for volume in service.get("volumes", []):
        host, target, *mode = str(volume).split(":")
        mounts.append((host, target, mode[0] if mode else "rw"))
    return mounts


def test_compose_declares_the_api_tfserving_and_scaled_services(compose: dict) -> None:
    services = compose["services"]
    assert set(services) == {"api", "tfserving", "api-replica", "lb"}
    # The default `docker compose up` starts the API and TF Serving; the pool only on request.
    assert "profiles" not in services["api"] and "profiles" not in services["tfserving"]
    assert services["api-replica"]["profiles"] == ["scaled"] == services["lb"]["profiles"]
    assert services["api-replica"]["deploy"]["replicas"] >= 2
    assert services["tfserving"]["image"].startswith("tensorflow/serving:")


def test_compose_builds_the_api_from_this_repository(compose: dict) -> None:
    for name in API_SERVICES:
        build = compose["services"][name]["build"]
        context = ROOT / build["context"]
        assert context.resolve() == ROOT
        assert (context / build["dockerfile"]).is_file()


def test_compose_publishes_the_port_the_api_listens_on(compose: dict) -> None:
    services = compose["services"]
    assert container_ports(services["api"]) == [8000, 8081]  # REST, gRPC
    assert str(services["api"]["ports"][0]).startswith("${MLDM_PUBLISH_PORT:-8000}:")
    assert str(services["api"]["ports"][1]).startswith("${MLDM_GRPC_PUBLISH_PORT:-8081}:")
    assert services["api"]["environment"]["MLDM_GRPC_PORT"] == "8081"
    assert container_ports(services["tfserving"]) == [8501]
    # Replicas publish nothing (N containers cannot share one host port); nginx fronts them.
    assert "ports" not in services["api-replica"]


def test_compose_bind_mounts_exist_in_the_repo_read_only(compose: dict) -> None:
    mounts = [m for service in compose["services"].values() for m in bind_mounts(service)]
    assert mounts, "no bind mounts found"
    for host, _target, mode in mounts:
        assert host.startswith("./"), f"{host}: bind mounts must be repository paths"
        assert (ROOT / host).exists(), f"{host} does not exist in the repository"
        assert mode == "ro", f"{host} is mounted writable"


def test_compose_api_healthchecks_probe_declared_readiness_route(
    compose: dict, service_routes: set[str]
) -> None:
    for name in API_SERVICES:
        command = healthcheck_command(compose["services"][name])
        assert command.startswith("python "), "the slim image has no curl or wget"
        assert url_paths(command) == ["/v2/health/ready"]
        assert "/v2/health/ready" in service_routes
        assert re.search(r"127\.0\.0\.1:8000/", command), "probes a port the API does not use"


def test_declared_route_paths_finds_prefixed_routes_and_misses_others(tmp_path: Path) -> None:
    (tmp_path / "routes.py").write_text(
        'router = APIRouter(prefix="/v2")\n@router.get("/health/ready")\ndef ready(): ...\n'
    )
    paths = declared_route_paths(tmp_path)
    assert "/v2/health/ready" in paths
    assert "/v2/health/live" not in paths


def test_compose_tfserving_serves_every_contract_model(compose: dict) -> None:
    service = compose["services"]["tfserving"]
    config_path = ROOT / "deploy" / "tfserving" / "models.config"
    configs = tfserving_model_configs(config_path.read_text())
    assert sorted(configs) == sorted(contract_model_names())
    mounts = {target: host for host, target, _ in bind_mounts(service)}
    assert mounts["/models"] == "./models"
    flag = next(arg for arg in service["command"] if arg.startswith("--model_config_file="))
    assert mounts[flag.split("=", 1)[1]] == "./deploy/tfserving/models.config"
    for name, base_path in configs.items():
        assert base_path == f"/models/{name}"
        versions = [p for p in (ROOT / "models" / name).glob("*") if p.name.isdigit()]
        assert versions, f"models/{name} has no numbered version folder"
        assert all((v / "saved_model.pb").is_file() for v in versions), versions


def test_compose_tfserving_healthcheck_asks_about_every_configured_model(compose: dict) -> None:
    command = healthcheck_command(compose["services"]["tfserving"])
    loop = re.search(r"for m in ([\w ]+); do", command)
    assert loop, command
    configured = tfserving_model_configs(
        (ROOT / "deploy" / "tfserving" / "models.config").read_text()
    )
    assert sorted(loop.group(1).split()) == sorted(configured)
    assert "/dev/tcp/127.0.0.1/8501" in command and "/v1/models/%s" in command


def test_compose_load_balancer_fronts_the_replica_pool(compose: dict) -> None:
    lb = compose["services"]["lb"]
    conf = lb_config(lb)
    upstreams = re.findall(r"^\s*server\s+([\w.-]+):(\d+)", conf, flags=re.MULTILINE)
    assert set(upstreams) == {("api-replica", "8000")}  # the pool, and again as its backup
    assert re.findall(r"^\s*listen\s+(\d+);", conf, flags=re.MULTILINE) == [
        str(port) for port in container_ports(lb)
    ]
    assert lb["depends_on"]["api-replica"]["condition"] == "service_healthy"
    assert "http_503" in conf, "a request to a replica still loading its models must be retried"


def test_compose_load_balancer_closes_idle_upstream_connections_before_the_service(
    compose: dict,
) -> None:
    lb = compose["services"]["lb"]
    conf = lb_config(lb)
    upstream = re.search(r"upstream\s+\w+\s*\{([^}]*)\}", conf)
    assert upstream, "no upstream block"
    timeout = re.search(r"keepalive_timeout\s+(\d+)s;", upstream.group(1))
    assert timeout, "upstream keepalive without keepalive_timeout: nginx's default is 60 s"
    assert int(timeout.group(1)) < Settings().keep_alive_s


def test_compose_load_balancer_never_runs_out_of_replicas(compose: dict) -> None:
    lb = compose["services"]["lb"]
    conf = lb_config(lb)
    servers = re.findall(r"^\s*server\s+(api-replica:8000)\s+([^;]*);", conf, flags=re.MULTILINE)
    # Loading replicas answer 503, which nginx counts as failures: without a pool that is never
    # marked down, all of them can be, and nginx answers 502 "no live upstreams" meanwhile.
    assert ("api-replica:8000", "backup max_fails=0") in servers, servers


def lb_config(lb: dict) -> str:
    """The nginx.conf the `lb` service mounts, as text."""
    mounts = {target: host for host, target, _ in bind_mounts(lb)}
    return (ROOT / mounts["/etc/nginx/nginx.conf"]).read_text()


def test_compose_variables_are_prefixed_and_defaulted() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    variables = re.findall(r"(?<!\$)\$\{([^}]*)\}", text)
    assert variables
    for variable in variables:
        assert re.fullmatch(r"MLDM_\w+:-[^}]+", variable), f"${{{variable}}} has no default"


@pytest.mark.parametrize("name", API_SERVICES)
def test_compose_environment_defaults_are_valid_settings(compose: dict, name: str) -> None:
    from service.settings import Settings

    defaults = {
        key: re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", str(value))
        for key, value in compose["services"][name]["environment"].items()
    }
    fields = {f"MLDM_{field.upper()}" for field in Settings.model_fields}
    assert set(defaults) <= fields, f"unknown settings: {sorted(set(defaults) - fields)}"
    # What a careless .env could pass in through env_file; `environment` must win over it.
    env_file = {"MLDM_PORT": "9999", "HOST": "127.0.0.1", "MLDM_MODEL_DIR": "/elsewhere"}
    with mock.patch.dict(os.environ, {**env_file, **defaults}):
        settings = Settings()
    assert settings.workers == int(defaults["MLDM_WORKERS"])
    assert settings.log_level == defaults["MLDM_LOG_LEVEL"]
    assert (settings.host, settings.port) == ("0.0.0.0", 8000)
    assert settings.port in container_ports(compose["services"]["api"])
    assert settings.model_dir == Path("/app/models")


@pytest.mark.parametrize("name", API_SERVICES)
def test_compose_stop_grace_period_outlasts_the_service_drain(compose: dict, name: str) -> None:
    from service.settings import Settings

    service = compose["services"][name]
    grace = re.fullmatch(r"(\d+)s", service["stop_grace_period"])
    assert grace, service["stop_grace_period"]
    drain = service["environment"].get("MLDM_SHUTDOWN_GRACE_S")
    drain_s = float(drain) if drain else Settings.model_fields["shutdown_grace_s"].default
    # Otherwise docker's SIGKILL would cut off the requests the service is still finishing.
    assert int(grace.group(1)) > drain_s
