"""docs/api.md's table of error examples is generated from `service/api/error_examples.json`.

That file holds real responses of the server, recorded by `python -m service.api.examples` and
checked against the app by `tests/service/api/test_examples.py`; the table shows one of them per
status code (the first route, in the file's order, that answers it). After re-recording, print the
new table and paste it in:

    .venv/bin/python -m tests.test_docs_api_errors
"""

from __future__ import annotations

import json
from pathlib import Path

from tests import doc_tables

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "service" / "api" / "error_examples.json"
API_PAGE = REPO / "docs" / "api.md"
HEADER = "| status | route | request | answer (`error`) |\n| --- | --- | --- | --- |"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def errors_table() -> str:
    """The Markdown table: one recorded example per status code, by status."""
    recorded: dict[str, dict[str, dict[str, object]]] = json.loads(
        EXAMPLES.read_text(encoding="utf-8")
    )
    first: dict[int, tuple[str, dict[str, object]]] = {}
    for route, by_status in recorded.items():
        for code, example in by_status.items():
            first.setdefault(int(code), (route, example))
    rows = [HEADER]
    for status in sorted(first):
        route, example = first[status]
        response = example["response"]
        assert isinstance(response, dict)
        answer = str(response.get("error", json.dumps(response)))
        rows.append(
            f"| {status} | `{route}` | {_cell(str(example['request']))} | {_cell(answer)} |"
        )
    return "\n".join(rows)


def documented_table() -> str:
    return doc_tables.table(API_PAGE, HEADER)


def test_api_page_error_table_matches_the_recorded_examples() -> None:
    expected = errors_table()
    assert expected.count("\n") >= 5, "fewer status codes recorded than expected"
    assert documented_table() == expected, (
        "docs/api.md's error table is out of date; replace it with the output of "
        f"`.venv/bin/python -m tests.test_docs_api_errors --write`:\n{expected}"
    )


if __name__ == "__main__":
    doc_tables.main(API_PAGE, HEADER, errors_table)
