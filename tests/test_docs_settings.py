"""The settings table in docs/settings.md is generated from `service.settings.Settings`.

The table lists every field (env var, default, meaning); the meaning is the field's docstring in
`service/settings.py`. After changing a setting, print the new table and paste it in:

    .venv/bin/python -m tests.test_docs_settings
"""

from __future__ import annotations

import ast
import inspect
import itertools
import json
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, SecretStr

from service import settings as settings_module
from service.settings import REPO_ROOT, Settings
from tests import doc_tables

SETTINGS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "settings.md"
HEADER = "| variable | default | meaning |\n| --- | --- | --- |"


def field_docstrings() -> dict[str, str]:
    """`{field: its docstring on one line}`, read from the class body of `Settings`."""
    tree = ast.parse(inspect.getsource(settings_module))
    [body] = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings"]
    docs: dict[str, str] = {}
    statements = body.body
    for statement, following in itertools.pairwise(statements):
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[statement.target.id] = " ".join(following.value.value.split())
    return docs


def _default(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, Path):
        try:
            return f"`<repo>/{value.relative_to(REPO_ROOT)}`"
        except ValueError:
            return f"`{value}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple | list | dict):
        return f"`{json.dumps(list(value) if isinstance(value, tuple) else value)}`"
    if isinstance(value, float) and value.is_integer():
        return f"`{int(value)}`"
    return f"`{value}`"


def _variables(name: str, alias: Any) -> str:
    if isinstance(alias, AliasChoices):
        return " / ".join(f"`{choice}`" for choice in alias.choices if isinstance(choice, str))
    return f"`MLDM_{name.upper()}`"


def settings_table() -> str:
    """The Markdown table of every setting, in the order of the class."""
    docs = field_docstrings()
    rows = [HEADER]
    for name, field in Settings.model_fields.items():
        meaning = docs.get(name, "").replace("|", "\\|")
        rows.append(
            f"| {_variables(name, field.validation_alias)} | {_default(field.default)} | "
            f"{meaning} |"
        )
    return "\n".join(rows)


def documented_table() -> str:
    """The first table with `HEADER` in docs/settings.md."""
    return doc_tables.table(SETTINGS_PAGE, HEADER)


def test_every_setting_has_a_docstring() -> None:
    missing = set(Settings.model_fields) - set(field_docstrings())
    assert not missing, f"settings without a docstring: {sorted(missing)}"


def test_settings_page_table_matches_the_settings_class() -> None:
    expected = settings_table()
    assert documented_table() == expected, (
        "docs/settings.md's table is out of date; rewrite it with "
        f"`.venv/bin/python -m tests.test_docs_settings --write`:\n{expected}"
    )


if __name__ == "__main__":
    doc_tables.main(SETTINGS_PAGE, HEADER, settings_table)
