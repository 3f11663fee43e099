"""Every relative link and `#anchor` in every tracked Markdown file resolves.

Links are Markdown inline links and images (`[text](target)`, `![alt](target)`) and reference
definitions (`[label]: target`), outside fenced code blocks and code spans. A target with a
scheme (`https:`, `mailto:`) is not checked; a relative path must exist in the repository, and an
anchor into a Markdown file must be the slug of one of its headings, made the way GitHub makes
them (lower case, punctuation other than `-` and `_` dropped, each space a `-`, a repeated slug
suffixed `-1`, `-2`, ...), or an explicit `<a name="...">` / `id="..."`.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[1]

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
_INLINE_LINK = re.compile(
    r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^()\s<>]*(?:\([^()\s]*\))?[^()\s<>]*)>?(?:\s+\"[^\"]*\")?\s*\)"
)
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
_HTML_ANCHOR = re.compile(r"<a\s+(?:[^>]*\s)?(?:name|id)=\"([^\"]+)\"", re.IGNORECASE)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def tracked_markdown(root: Path = REPO) -> list[Path]:
    """The Markdown files git tracks (a clean clone's view: nothing ignored, nothing untracked)."""
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--", "*.md"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [root / name for name in listing.split("\0") if name and (root / name).is_file()]


def _prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    lines: list[tuple[int, str]] = []
    fence: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        match = _FENCE.match(line)
        if fence is None and match:
            fence = match.group(1)
        elif fence is not None and line.strip().startswith(fence[0] * len(fence)):
            fence = None
        elif fence is None:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor of a heading's text (github-slugger, on the rendered text)."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = re.sub(r"<[^>]+>", "", text)  # HTML tags
    text = text.replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a Markdown file defines: its headings' slugs and its explicit anchors."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in _prose_lines(path.read_text(encoding="utf-8")):
        found.update(_HTML_ANCHOR.findall(line))
        match = _HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every link in a Markdown file, outside code."""
    result: list[tuple[int, str]] = []
    for number, line in _prose_lines(path.read_text(encoding="utf-8")):
        prose = _CODE_SPAN.sub("", line)
        result.extend((number, target) for target in _INLINE_LINK.findall(prose))
        reference = _REFERENCE.match(prose)
        if reference:
            result.append((number, reference.group(1)))
    return result


def broken_links(paths: list[Path], root: Path) -> list[str]:
    """`file:line: target: why` for every link in `paths` that does not resolve under `root`."""
    problems: list[str] = []
    cache: dict[Path, set[str]] = {}
    for path in paths:
        for number, target in links(path):
            if not target or _SCHEME.match(target) or target.startswith("//"):
                continue
            where = f"{path.relative_to(root)}:{number}: {target}"
            file_part, _, anchor = target.partition("#")
            resolved = (path.parent / unquote(file_part)).resolve() if file_part else path
            if file_part.startswith("/"):
                resolved = (root / unquote(file_part).lstrip("/")).resolve()
            if not resolved.is_relative_to(root.resolve()):
                problems.append(f"{where}: points outside the repository")
                continue
            if not resolved.exists():
                problems.append(f"{where}: no such file")
                continue
            if not anchor or resolved.suffix.lower() != ".md":
                continue
            if resolved not in cache:
                cache[resolved] = anchors(resolved)
            if unquote(anchor) not in cache[resolved]:
                problems.append(f"{where}: no heading or anchor #{anchor} there")
    return problems


def test_every_link_in_the_tracked_markdown_resolves() -> None:
    paths = tracked_markdown()
    assert any(path.name == "README.md" for path in paths), "git ls-files found no README.md"
    problems = broken_links(paths, REPO)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_broken_links_are_reported(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text(
        "# A page\n\n## Two words, and `code`\n\n## Two words, and `code`\n", encoding="utf-8"
    )
    (tmp_path / "README.md").write_text(
        "# Top\n\n"
        "[fine](docs/page.md) [fine](docs/page.md#two-words-and-code)\n"
        "[fine](docs/page.md#two-words-and-code-1) [fine](#top) ![fine](docs/)\n"
        "[external](https://example.org/missing) `[in code](nowhere.md)`\n"
        "```\n[in a fence](nowhere.md)\n```\n"
        "[gone](docs/missing.md)\n"
        "[bad anchor](docs/page.md#two-words)\n"
        "[bad local anchor](#nope)\n"
        "[ref]: docs/also-missing.md\n",
        encoding="utf-8",
    )
    problems = broken_links([tmp_path / "README.md", tmp_path / "docs" / "page.md"], tmp_path)
    assert problems == [
        "README.md:9: docs/missing.md: no such file",
        "README.md:10: docs/page.md#two-words: no heading or anchor #two-words there",
        "README.md:11: #nope: no heading or anchor #nope there",
        "README.md:12: docs/also-missing.md: no such file",
    ]


@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("Quick start", "quick-start"),
        (
            "Modes and the domain flag on the task routes",
            "modes-and-the-domain-flag-on-the-task-routes",
        ),
        ("`MLDM_API_KEY` and limits", "mldm_api_key-and-limits"),
        ("Digits in the wild (digit_classifier v2)", "digits-in-the-wild-digit_classifier-v2"),
        ("Against a naive server: 31-91x", "against-a-naive-server-31-91x"),
        ("[Linked](x.md) heading", "linked-heading"),
    ],
)
def test_slug_follows_github(heading: str, expected: str) -> None:
    assert slug(heading) == expected


def user_facing_markdown() -> list[Path]:
    """The README, the pages of docs/ and the model cards."""
    return [
        path
        for path in tracked_markdown()
        if path.relative_to(REPO).parts[0] in {"README.md", "docs"} or path.name == "MODEL_CARD.md"
    ]


def test_readme_stays_short() -> None:
    lines = (REPO / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= 200, f"README.md has {lines} lines; move detail into docs/ (at most 200)"


def test_user_facing_text_names_no_issue_numbers() -> None:
    pattern = re.compile(r"\bissues?[- ]#?\d+", re.IGNORECASE)
    found = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in user_facing_markdown()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if pattern.search(line)
    ]
    assert not found, "say what the target is, not which issue asked for it:\n" + "\n".join(found)
