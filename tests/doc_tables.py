"""Generated Markdown tables in docs/ pages: find one by its header row, or rewrite it in place.

The settings table (tests/test_docs_settings.py) and the error table (tests/test_docs_api_errors.py)
are generated from code; their tests compare the page with the generated table, and
`python -m tests.<module> --write` rewrites the page's copy.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path


def table(page: Path, header: str) -> str:
    """The table of `page` that starts with `header`, up to its last `|` line."""
    text = page.read_text(encoding="utf-8")
    rows = []
    for line in text[text.index(header) :].splitlines():
        if not line.startswith("|"):
            break
        rows.append(line)
    return "\n".join(rows)


def main(page: Path, header: str, generate: Callable[[], str]) -> None:
    """`--write`: replace the page's table with the generated one; otherwise print it."""
    if "--write" in sys.argv:
        text = page.read_text(encoding="utf-8")
        page.write_text(text.replace(table(page, header), generate(), 1), encoding="utf-8")
    else:
        print(generate())
