"""deploy/k8s and deploy/kserve read against the image and the service (schemas: make
validate-manifests, which needs the tools virtualenv)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import ROOT, declared_route_paths

sys.path.insert(0, str(ROOT / "deploy" / "k8s"))
import render

OVERLAYS = sorted((ROOT / "deploy" / "k8s" / "overlays").iterdir())


def _key(document: dict[str, Any]) -> tuple[str, str]:
    return document["kind"], document["metadata"]["name"]


def _pod_specs() -> list[dict[str, Any]]:
    specs = [
        d["spec"]["template"]["spec"]
        for overlay in OVERLAYS
        for d in render.render(overlay)
        if d["kind"] == "Deployment"
    ]
    for document in yaml.safe_load_all(
        (ROOT / "deploy/kserve/inferenceservice-v2.yaml").read_text()
    ):
        specs.append(document["spec"]["predictor"])
    return specs


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="no kubectl to compare with")
@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_render_matches_kubectl_kustomize(overlay: Path) -> None:
    output = subprocess.run(
        ["kubectl", "kustomize", str(overlay)], capture_output=True, check=True, text=True
    ).stdout
    theirs = [d for d in yaml.safe_load_all(output) if d]
    assert sorted(render.render(overlay), key=_key) == sorted(theirs, key=_key)


def test_render_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("commonLabels: {a: b}\nresources: []\n")
    with pytest.raises(ValueError, match="commonLabels"):
        render.render(tmp_path)


def test_probes_ask_routes_the_service_declares() -> None:
    routes = declared_route_paths()
    for spec in _pod_specs():
        (container,) = spec["containers"]
        probes = {
            name: container[name]["httpGet"]["path"]
            for name in ("startupProbe", "readinessProbe", "livenessProbe")
        }
        assert probes["readinessProbe"] == "/v2/health/ready"
        assert probes["livenessProbe"] == "/v2/health/live"
        assert set(probes.values()) <= routes


def test_security_context_matches_the_image() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "USER 10001:10001" in dockerfile
    for spec in _pod_specs():
        assert spec["securityContext"]["runAsUser"] == 10001
        assert spec["automountServiceAccountToken"] is False
        (container,) = spec["containers"]
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        # The read-only root needs the writable /tmp that compose gives as a tmpfs.
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]


def test_container_port_is_the_port_the_service_is_told() -> None:
    for spec in _pod_specs():
        (container,) = spec["containers"]
        env = {e["name"]: e["value"] for e in container["env"]}
        ports = [int(env["MLDM_PORT"]), int(env["MLDM_GRPC_PORT"])]  # REST, then gRPC
        assert [p["containerPort"] for p in container["ports"]] == ports


def test_tfserving_inferenceservices_cover_every_committed_model() -> None:
    documents = list(
        yaml.safe_load_all((ROOT / "deploy/kserve/inferenceservice-tfserving.yaml").read_text())
    )
    uris = {d["spec"]["predictor"]["model"]["storageUri"] for d in documents}
    models = {p.name for p in (ROOT / "models").iterdir() if p.is_dir()}
    assert uris == {f"pvc://mldm-models/{m}" for m in models}
