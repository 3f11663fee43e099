"""The training pipeline and the data package stand below the service: neither imports it (what
both need, the digit preprocessing, lives in `data.digit_ink`)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("package", ["training", "data"])
def test_package_imports_nothing_of_the_service(package: str) -> None:
    found = []
    for path in sorted((REPO / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            found += [
                f"{path.relative_to(REPO)}: {n}" for n in names if n.split(".")[0] == "service"
            ]
    assert not found, found
