"""The repository documents itself: nothing cites a document that is not in it, every relative link of the
README and of docs/ leads somewhere, and every "docs/<name>.md section N" or `docs/<name>.md ("Heading")`
citation names a heading that exists."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from markdown_it.token import Token

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
MARKDOWN = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]

# Written in pieces so that this file, which must name them to find them, does not contain them itself:
# the repository carries none of these strings anywhere.
_OUTSIDE_DOCUMENT = "SP" + "EC"
_OUTSIDE_FOLDER = "../" + "shared"
_SECTION_SIGN = "\u00a7"
FORBIDDEN = re.compile(
    "|".join(
        (
            rf"\b{_OUTSIDE_DOCUMENT}\b",  # the document by name, "... error shape" or "... 7"
            rf"\b{_OUTSIDE_DOCUMENT}_\w",  # names derived from its sections
            "DES" + r"IGN\.md",
            re.escape(_OUTSIDE_FOLDER),
            _SECTION_SIGN,
        )
    )
)
NUMBERED_CITATION = re.compile(r"docs/([\w-]+\.md),? section (\d+)\b")
NAMED_CITATION = re.compile(r"docs/([\w-]+\.md),? \(?((?:\"[^\"\n]+\",?\s*)+)")


def tracked_files() -> list[Path]:
    """The files of the repository: tracked, or new and not ignored (they are on their way in)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [ROOT / name for name in listed.split("\0") if name and (ROOT / name).is_file()]


def text_of(path: Path) -> str | None:
    data = path.read_bytes()
    if b"\0" in data:
        return None  # binary
    return data.decode("utf-8", errors="replace")


def test_nothing_cites_a_document_outside_the_repository() -> None:
    files = tracked_files()
    assert ROOT / "README.md" in files
    found = []
    for path in files:
        text = text_of(path)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if FORBIDDEN.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    assert found == []


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def tokens(path: Path) -> list[Token]:
    return MarkdownIt("commonmark", {"html": False}).enable("table").parse(path.read_text())


def headings(path: Path) -> list[str]:
    found = []
    stream = tokens(path)
    for index, token in enumerate(stream):
        if token.type == "heading_open":
            found.append(stream[index + 1].content)
    return found


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for heading in headings(path):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def links(path: Path) -> Iterator[str]:
    for token in tokens(path):
        for child in token.children or ():
            if child.type == "link_open":
                yield str(child.attrs["href"])


@pytest.mark.parametrize("document", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_to_files_and_headings(document: Path) -> None:
    found = list(links(document))
    assert found, f"{document.name} links nowhere: the check would prove nothing"
    broken = []
    for href in found:
        if re.match(r"^[a-z][a-z0-9+.-]*:", href):
            continue  # http:, https:, mailto:
        target_name, _, fragment = href.partition("#")
        target = (document.parent / target_name).resolve() if target_name else document
        if not target.exists():
            broken.append(f"{href}: no such file")
        elif fragment and target.suffix == ".md" and fragment not in anchors(target):
            broken.append(f"{href}: no heading #{fragment} in {target.name}")
    assert broken == []


def test_the_docs_exist_and_the_readme_links_each() -> None:
    readme_links = set(links(ROOT / "README.md"))
    for name in ("architecture.md", "http-api.md", "operations.md"):
        assert (DOCS / name).is_file()
        assert f"docs/{name}" in readme_links
    assert "The request" in headings(DOCS / "architecture.md")


def test_citations_name_existing_sections() -> None:
    citations = 0
    wrong = []
    for path in tracked_files():
        text = text_of(path)
        if text is None:
            continue
        where = path.relative_to(ROOT)
        for match in NUMBERED_CITATION.finditer(text):
            citations += 1
            document = DOCS / match.group(1)
            numbers = {h.split(".", 1)[0] for h in headings(document)} if document.is_file() else set()
            if match.group(2) not in numbers:
                wrong.append(f"{where}: {match.group(0)}")
        for match in NAMED_CITATION.finditer(text):
            document = DOCS / match.group(1)
            known = set(headings(document)) if document.is_file() else set()
            for name in re.findall(r"\"([^\"]+)\"", match.group(2)):
                citations += 1
                if name not in known:
                    wrong.append(f"{where}: {match.group(1)} {name!r}")
    assert citations > 0
    assert wrong == []
