"""The repository documents itself: nothing cites a document that is not in it, every relative link of the
README and of docs/ leads somewhere, every "docs/<name>.md section N" or `docs/<name>.md ("Heading")`
citation names a heading that exists, and the scale-out plan names the schema's objects as they are
deployed."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
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
    for name in ("architecture.md", "http-api.md", "operations.md", "scale-out.md"):
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


# The scale-out plan (docs/scale-out.md) names tables, functions, keys and policies of this schema in its code
# spans; a name that drifted from the deployed schema would make the plan wrong where it matters most.
SCALE_OUT = DOCS / "scale-out.md"
NEW_OBJECTS_HEADING = "New objects"
QUALIFIED_NAME = re.compile(r"\b(?:core|api|auth|billing|ops|audit)\.[a-z_][a-z0-9_]*\b")
BARE_NAME = re.compile(r"[a-z][a-z0-9_]*")


@dataclass
class CodeSpans:
    """The code of a markdown document: every inline span and fenced block, and the names in the first
    column of the table under the "New objects" heading (what the plan adds, so not deployed yet)."""

    inline: list[str] = field(default_factory=list)
    blocks: list[str] = field(default_factory=list)
    new_objects: set[str] = field(default_factory=set)


def code_spans(path: Path) -> CodeSpans:
    found = CodeSpans()
    heading = ""
    column = 0
    stream = tokens(path)
    for index, token in enumerate(stream):
        if token.type == "heading_open":
            heading = stream[index + 1].content
        elif token.type in ("fence", "code_block"):
            found.blocks.append(token.content)
        elif token.type == "tr_open":
            column = 0
        elif token.type in ("th_open", "td_open"):
            column += 1
        elif token.type == "inline":
            spans = [child.content for child in token.children or () if child.type == "code_inline"]
            found.inline.extend(spans)
            if heading == NEW_OBJECTS_HEADING and column == 1 and stream[index - 1].type == "td_open":
                found.new_objects.update(name for span in spans for name in QUALIFIED_NAME.findall(span))
    return found


@dataclass(frozen=True)
class DeployedNames:
    qualified: frozenset[str]  # schema.relation and schema.function
    tables: frozenset[str]  # unqualified table names, the prefix of their constraints' names
    objects: frozenset[str]  # constraints, indexes, policies, triggers (unqualified)


PROJECT_SCHEMAS = ["core", "api", "auth", "billing", "ops", "audit"]


def deployed_names(url: str) -> DeployedNames:
    with psycopg.connect(url) as conn:
        relations = conn.execute(
            "select n.nspname || '.' || c.relname, c.relname, c.relkind::text from pg_class as c"
            " join pg_namespace as n on n.oid = c.relnamespace where n.nspname = any(%s)",
            [PROJECT_SCHEMAS],
        ).fetchall()
        functions = conn.execute(
            "select n.nspname || '.' || p.proname from pg_proc as p"
            " join pg_namespace as n on n.oid = p.pronamespace where n.nspname = any(%s)",
            [PROJECT_SCHEMAS],
        ).fetchall()
        objects = conn.execute(
            "select c.conname from pg_constraint as c join pg_namespace as n on n.oid = c.connamespace"
            " where n.nspname = any(%s)"
            " union all select p.polname from pg_policy as p"
            " union all select t.tgname from pg_trigger as t where not t.tgisinternal",
            [PROJECT_SCHEMAS],
        ).fetchall()
    return DeployedNames(
        qualified=frozenset([row[0] for row in relations] + [row[0] for row in functions]),
        tables=frozenset(row[1] for row in relations if row[2] in ("r", "p")),
        objects=frozenset([row[1] for row in relations if row[2] == "i"] + [row[0] for row in objects]),
    )


def test_the_scale_out_plan_names_deployed_objects(test_db: str) -> None:
    spans = code_spans(SCALE_OUT)
    deployed = deployed_names(test_db)
    mentioned = {name for text in spans.inline + spans.blocks for name in QUALIFIED_NAME.findall(text)}
    assert len(mentioned) > 50, "too few names found: the check would prove nothing"
    assert spans.new_objects, f"no table under the {NEW_OBJECTS_HEADING!r} heading"
    assert sorted(mentioned - deployed.qualified - spans.new_objects) == []
    # what the plan adds must not exist yet: once it does, the plan is out of date
    assert sorted(spans.new_objects & deployed.qualified) == []
    # a span that is one bare name starting with a table's name is a key, index, policy or trigger
    bare = {span for span in spans.inline if BARE_NAME.fullmatch(span)}
    named = {span for span in bare if any(span.startswith(table + "_") for table in deployed.tables)}
    assert len(named) > 20, "too few keys and indexes found: the check would prove nothing"
    assert sorted(named - deployed.objects) == []
