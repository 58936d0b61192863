"""The README stays a first page and every link in the documentation leads somewhere.

The README says what the service is, what it needs, how to start it and where everything else is;
the depth lives in ``docs/``. These checks keep it that way: a README that grows past a first
page, a table cell that turns into an essay, a link to a file or heading that moved, or a shell
example that only bash understands fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    in_code = False
    found = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            found.add(_anchor(line.lstrip("#")))
    return found


def test_the_readme_is_a_first_page() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; move depth into docs/"
    long_cells = [
        cell.strip()[:60]
        for line in lines
        if line.startswith("|")
        for cell in line.strip("|").split("|")
        if len(cell) > 240
    ]
    assert not long_cells, f"table cells longer than a sentence or two: {long_cells}"


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: p.name)
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(path: Path) -> None:
    broken = []
    for target in LINK.findall(path.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked offline
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in _anchors(linked)):
            broken.append(target)
    assert not broken, f"{path.name}: links to nothing: {broken}"


def test_shell_examples_quote_brackets_for_zsh() -> None:
    """zsh expands ``image[]=@cat.png`` and an unquoted ``$B/path?x=1`` as globs: "no matches found"."""
    unquoted = re.compile(r"-F\s+[A-Za-z_]+\[\]=|\s\$\w+/[^\s\"']*\?")
    offenders = [
        f"{path.name}: {line.strip()[:80]}"
        for path in [README, *DOCS]
        for line in path.read_text(encoding="utf-8").splitlines()
        if unquoted.search(line)
    ]
    assert not offenders, offenders
