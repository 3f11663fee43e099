"""Validate the Kubernetes and KServe manifests offline: `make validate-manifests`.

Runs in the tools virtualenv (.venv-deploy: deploy/requirements-tools.txt), needs no cluster:

1. Renders deploy/k8s/overlays/* with `kubectl kustomize` when kubectl exists, and always with
   deploy/k8s/render.py; where both ran they must agree.
2. Every rendered document and every deploy/kserve document that is a core kind: the Kubernetes
   OpenAPI schema bundled in kubernetes-validate, strict (an unknown field is an error), at
   KUBERNETES_VERSION.
3. Every InferenceService: the v1beta1 openAPIV3Schema of KServe's CRD pinned in deploy/schemas
   (README there), made strict the way the API server's strict field validation is (an unknown
   field is an error wherever the schema does not preserve unknown fields).
4. Writes the rendered overlays to OUT (default build/manifests) for checkov (`make checkov`),
   and the pod of every custom KServe predictor as a plain Pod (checkov has no policies for
   InferenceService: it scans none of them), so its securityContext and resources get linted.
"""

from __future__ import annotations

import copy
import gzip
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "deploy" / "k8s"))
import render  # noqa: E402

KUBERNETES_VERSION = "1.33.0"
OVERLAYS = sorted((ROOT / "deploy" / "k8s" / "overlays").iterdir())
KSERVE = sorted((ROOT / "deploy" / "kserve").glob("*.yaml"))
CRD = ROOT / "deploy" / "schemas" / "kserve-v0.20.0-serving.kserve.io_inferenceservices.yaml.gz"


def _key(document: dict[str, Any]) -> tuple[str, str]:
    return document["kind"], document["metadata"]["name"]


def rendered(overlay: Path) -> list[dict[str, Any]]:
    ours = render.render(overlay)
    kubectl = shutil.which("kubectl")
    if kubectl:
        output = subprocess.run(
            [kubectl, "kustomize", str(overlay)], capture_output=True, check=True, text=True
        ).stdout
        theirs = [d for d in yaml.safe_load_all(output) if d]
        if sorted(ours, key=_key) != sorted(theirs, key=_key):
            sys.exit(f"{overlay}: deploy/k8s/render.py and kubectl kustomize disagree")
        print(f"{overlay.relative_to(ROOT)}: render.py == kubectl kustomize ({len(ours)} objects)")
    else:
        print(f"{overlay.relative_to(ROOT)}: rendered by render.py only (no kubectl here)")
    return ours


def _strict(schema: Any) -> Any:
    """The schema with additionalProperties false on every object that lists its properties
    and does not say x-kubernetes-preserve-unknown-fields."""
    if isinstance(schema, dict):
        schema = {key: _strict(value) for key, value in schema.items()}
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


def kserve_schema() -> dict[str, Any]:
    crd = yaml.safe_load(gzip.decompress(CRD.read_bytes()))
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1beta1"]
    schema: dict[str, Any] = _strict(version["schema"]["openAPIV3Schema"])
    return schema


POD_FIELDS = ("containers", "securityContext", "volumes", "automountServiceAccountToken")


def predictor_pods(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pod KServe would run for each custom predictor (its container list), as a Pod."""
    pods = []
    for document in documents:
        predictor = document.get("spec", {}).get("predictor", {})
        if document["kind"] == "InferenceService" and "containers" in predictor:
            spec = {key: predictor[key] for key in POD_FIELDS if key in predictor}
            name = f"{document['metadata']['name']}-predictor"
            metadata = {
                "name": name,
                **{
                    k: v
                    for k, v in document["metadata"].items()
                    if k in ("namespace", "annotations")
                },
            }
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}
            pods.append(pod)
    return pods


def _self_test(
    isvc: jsonschema.Draft7Validator, documents: list[tuple[str, dict[str, Any]]]
) -> None:
    """Both validators must reject an unknown field, or a pass below would mean nothing."""
    service = copy.deepcopy(next(d for _, d in documents if d["kind"] == "InferenceService"))
    service["spec"]["predictor"]["replicaz"] = 3
    if not list(isvc.iter_errors(service)):
        sys.exit("self-test: the KServe schema accepted an unknown field spec.predictor.replicaz")
    deployment = copy.deepcopy(next(d for _, d in documents if d["kind"] == "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    try:
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError:
        print("self-test: both validators reject an unknown field")
        return
    sys.exit("self-test: kubernetes-validate accepted an unknown field in a Deployment")


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "build" / "manifests"
    out.mkdir(parents=True, exist_ok=True)
    documents: list[tuple[str, dict[str, Any]]] = []
    for overlay in OVERLAYS:
        objects = rendered(overlay)
        (out / f"{overlay.name}.yaml").write_text(yaml.safe_dump_all(objects, sort_keys=True))
        documents += [(f"overlays/{overlay.name}", d) for d in objects]
    for path in KSERVE:
        documents += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]

    pods = predictor_pods([d for _, d in documents])
    (out / "kserve-predictor-pods.yaml").write_text(yaml.safe_dump_all(pods, sort_keys=True))
    documents += [("kserve predictor pod", pod) for pod in pods]

    isvc = jsonschema.Draft7Validator(kserve_schema())
    _self_test(isvc, documents)
    failures = 0
    for source, document in documents:
        what = f"{source}: {document['kind']}/{document['metadata']['name']}"
        if document["apiVersion"].startswith("serving.kserve.io/"):
            errors = sorted(isvc.iter_errors(document), key=lambda e: list(e.path))
            for error in errors:
                print(f"FAIL {what}: {'/'.join(map(str, error.path))}: {error.message}")
            failures += bool(errors)
            verdict = "KServe v0.20.0 CRD schema (v1beta1, strict)"
        else:
            try:
                kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
            except kubernetes_validate.ValidationError as error:
                print(f"FAIL {what}: {'/'.join(map(str, error.path))}: {error.message}")
                failures += 1
                continue
            verdict = f"Kubernetes {KUBERNETES_VERSION} OpenAPI schema (strict)"
        if not failures:
            print(f"ok   {what}: {verdict}")
    if failures:
        sys.exit(f"{failures} manifests do not validate")
    print(f"{len(documents)} manifests valid; rendered overlays in {out}")


if __name__ == "__main__":
    main()
