"""Render a kustomization of deploy/k8s without kustomize: `python deploy/k8s/render.py DIR`.

kubectl and kustomize are not Debian or PyPI packages, so a clean CI machine may have neither;
this implements exactly the subset of kustomize that deploy/k8s uses - `resources` (files and
kustomization folders), `namespace`, `labels` (metadata only, no selectors), `images`
(newName/newTag) and `patches` given as inline JSON 6902 `add`/`replace`/`remove` operations with
a kind/name `target` - and refuses anything else, so it cannot silently render something
different. tests/deploy/test_manifests.py checks that it renders what `kubectl kustomize` does
wherever kubectl exists.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "namespace", "labels", "resources", "images", "patches"}
#: Cluster-scoped kinds among ours: they get no namespace.
CLUSTER_SCOPED = {"Namespace"}


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise ValueError(f"JSON pointer must start with '/': {path!r}")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _apply_operation(document: Any, operation: dict[str, Any]) -> None:
    op, parts = operation["op"], _pointer(operation["path"])
    parent = document
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    last = parts[-1]
    if isinstance(parent, list):
        index = len(parent) if last == "-" else int(last)
        if op == "add":
            parent.insert(index, copy.deepcopy(operation["value"]))
        elif op == "replace":
            parent[index] = copy.deepcopy(operation["value"])
        elif op == "remove":
            del parent[index]
        else:
            raise ValueError(f"unsupported patch operation {op!r}")
        return
    if op in ("add", "replace"):
        if op == "replace" and last not in parent:
            raise KeyError(f"replace of a missing path {operation['path']}")
        parent[last] = copy.deepcopy(operation["value"])
    elif op == "remove":
        del parent[last]
    else:
        raise ValueError(f"unsupported patch operation {op!r}")


def _matches(document: dict[str, Any], target: dict[str, Any]) -> bool:
    unknown = set(target) - {"kind", "name"}
    if unknown:
        raise ValueError(f"unsupported patch target fields: {sorted(unknown)}")
    return all(
        (document.get("kind") if key == "kind" else document["metadata"].get("name")) == value
        for key, value in target.items()
    )


def _set_image(document: dict[str, Any], images: list[dict[str, str]]) -> None:
    spec = document.get("spec", {}).get("template", {}).get("spec", {})
    for container in [*spec.get("containers", []), *spec.get("initContainers", [])]:
        name, _, tag = container["image"].partition(":")
        for image in images:
            if image["name"] == name:
                name = image.get("newName", name)
                tag = image.get("newTag", tag)
                container["image"] = f"{name}:{tag}" if tag else name


def render(directory: Path) -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED
    if unknown:
        raise ValueError(f"{directory}: kustomize fields render.py does not implement: {unknown}")
    documents: list[dict[str, Any]] = []
    for resource in kustomization.get("resources", []):
        path = directory / resource
        if path.is_dir():
            documents += render(path)
        else:
            documents += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for label in kustomization.get("labels", []):
        if label.get("includeSelectors") or label.get("includeTemplates"):
            raise ValueError("labels with includeSelectors/includeTemplates are not implemented")
        for document in documents:
            document["metadata"].setdefault("labels", {}).update(label["pairs"])
    if "images" in kustomization:
        for document in documents:
            _set_image(document, kustomization["images"])
    for patch in kustomization.get("patches", []):
        if set(patch) != {"target", "patch"}:
            raise ValueError(f"only inline JSON 6902 patches with a target: {sorted(patch)}")
        hits = [d for d in documents if _matches(d, patch["target"])]
        if not hits:
            raise ValueError(f"patch target matches nothing: {patch['target']}")
        for document in hits:
            for operation in yaml.safe_load(patch["patch"]):
                _apply_operation(document, operation)
    if "namespace" in kustomization:
        for document in documents:
            if document["kind"] not in CLUSTER_SCOPED:
                document["metadata"]["namespace"] = kustomization["namespace"]
    return documents


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python deploy/k8s/render.py KUSTOMIZATION_DIR")
    sys.stdout.write(yaml.safe_dump_all(render(Path(sys.argv[1])), sort_keys=True))


if __name__ == "__main__":
    main()
