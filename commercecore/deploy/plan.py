"""sqitch.plan, parsed exactly as sqitch 1.3 (App::Sqitch::Plan) parses it, with byte-identical ids.

A change id is the SHA-1 of `change <length>\\0<info>`, where info lists project, uri, name, parent id,
planner, date, dependencies and note (Plan/Change.pm `info`); a tag id likewise (Plan/Tag.pm). The
regular expressions are sqitch's (see `syntax`), and so are the error messages, with file and line.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from commercecore.deploy.errors import PlanError
from commercecore.deploy.model import (
    Change,
    ChangeLookupError,
    Dependency,
    Plan,
    Tag,
    format_timestamp,
    parse_offset,
)
from commercecore.deploy.syntax import BLANK, BLANKS, NAME_PATTERN, PUNCT
from commercecore.deploy.uri import canonical_uri

SYNTAX_VERSION = "1.0.0"
RESERVED_NAMES = frozenset({"HEAD", "ROOT"})
__all__ = [
    "Change",
    "ChangeLookupError",
    "Dependency",
    "Plan",
    "Tag",
    "canonical_uri",
    "load_plan",
    "parse_dependency",
    "parse_offset",
    "parse_plan",
]

_NAME_RE = re.compile(rf"\A{NAME_PATTERN}\Z")
_TS_PATTERN = r"(?P<yr>\d{4})-(?P<mo>\d{2})-(?P<dy>\d{2})T(?P<hr>\d{2}):(?P<mi>\d{2}):(?P<sc>\d{2})Z"
_TS_SEARCH_RE = re.compile(_TS_PATTERN)
_BLANK_LINE_RE = re.compile(rf"\A(?P<lspace>{BLANK}*)(?:#{BLANK}*(?P<note>.+)|$)")
_NOTE_RE = re.compile(rf"(?P<rspace>{BLANK}*)(?:#{BLANK}*(?P<note>.*))?$")
_PRAGMA_RE = re.compile(
    rf"\A(?P<lspace>{BLANK}*)?%(?P<hspace>{BLANK}*)?"
    rf"(?P<name>[^{PUNCT}](?:[^{BLANKS}=]*?[^{PUNCT}{BLANKS}])?)"
    rf"(?:(?P<lopspace>{BLANK}*)(?P<operator>=)(?P<ropspace>{BLANK}*)(?P<value>.+))?\Z"
)
_LINE_RE = re.compile(
    rf"^(?P<lspace>{BLANK}*)?"
    rf"(?:@|(?P<lopspace>{BLANK}*)(?P<operator>[+-])(?P<ropspace>{BLANK}*))?"
    rf"(?P<name>{NAME_PATTERN})"
    rf"(?P<pspace>{BLANK}+)?"
    rf"(?:\[(?P<dependencies>[^\]]+)\]{BLANK}*)?"
    rf"(?:{_TS_PATTERN}{BLANK}*)?"
    rf"(?:(?P<planner_name>[^<]+){BLANK}+<(?P<planner_email>[^>]+)>)?"
    r"$"
)
_DEP_RE = re.compile(
    rf"\A(?P<conflicts>!?)(?:(?P<project>{NAME_PATTERN}):)?"
    rf"(?:(?P<id>[0-9a-f]{{40}})|(?P<change>{NAME_PATTERN})(?:@(?P<tag>{NAME_PATTERN}))?"
    rf"|(?:@(?P<tag_only>{NAME_PATTERN}))?)\Z"
)
_SHA1_PREFIX_RE = re.compile(r"^[0-9a-f]{40}")
_UNESCAPE_RE = re.compile(r"\\([\\nr])")
_UNESCAPES = {"\\": "\\", "n": "\n", "r": "\r"}


def _truthy(value: str | None) -> bool:
    """Perl truthiness of a string: sqitch tests notes and names with `if ($x)`, so "0" is false."""
    return value is not None and value not in ("", "0")


def _sha1_object(kind: str, info: str) -> str:
    content = info.encode("utf-8")
    return hashlib.sha1(f"{kind} {len(content)}\0".encode() + content, usedforsecurity=False).hexdigest()


def _clean_note(note: str | None) -> str:
    """Line.pm BUILDARGS: trim, then turn the escapes `\\n`, `\\r` and `\\\\` back into characters."""
    if not _truthy(note):
        return note or ""
    assert note is not None
    trimmed = note.strip()
    return _UNESCAPE_RE.sub(lambda m: _UNESCAPES[m.group(1)], trimmed)


# -- parsing ---------------------------------------------------------------------------------------


@dataclass
class _RawDep:
    text: str
    conflicts: bool
    project: str | None
    change: str | None
    tag: str | None
    id: str | None

    @property
    def key_name(self) -> str:
        parts = [
            part for part in (self.change, None if self.tag is None else f"@{self.tag}") if part is not None
        ]
        return "".join(parts) if parts else self.id or ""


@dataclass
class _RawChange:
    name: str
    operator: str
    note: str
    timestamp: datetime
    planner_name: str
    planner_email: str
    requires: list[_RawDep]
    conflicts: list[_RawDep]
    line: int
    tags: list[_RawTag] = field(default_factory=list)
    rework_tags: list[_RawTag] = field(default_factory=list)


@dataclass
class _RawTag:
    name: str
    note: str
    timestamp: datetime
    planner_name: str
    planner_email: str
    line: int


def parse_dependency(text: str) -> _RawDep | None:
    """Depend.pm `parse`: `[!][project:](change[@tag] | @tag | sha1)`; None if malformed."""
    match = _DEP_RE.match(text)
    if match is None:
        return None
    return _RawDep(
        text=text,
        conflicts=bool(match.group("conflicts")),
        project=match.group("project"),
        change=match.group("change"),
        tag=match.group("tag") or match.group("tag_only"),
        id=match.group("id"),
    )


@dataclass(frozen=True)
class _Entry:
    """A change or tag line of the plan, its common fields checked."""

    name: str
    timestamp: datetime
    planner_name: str
    planner_email: str
    params: dict[str, str | None]


@dataclass
class _Body:
    """What parsing the changes and tags keeps from line to line."""

    changes: list[_RawChange] = field(default_factory=list)  # sections already closed by a tag
    current: list[_RawChange] = field(default_factory=list)  # changes since the last tag
    line_no_for: dict[str, int] = field(default_factory=dict)  # names and @tags of closed sections -> line
    tag_changes: dict[str, int] = field(default_factory=dict)  # names in the current section -> line
    change_named: dict[str, _RawChange] = field(default_factory=dict)
    prev_change: _RawChange | None = None


class _Parser:
    def __init__(self, text: str, file: Path, root: Path | None) -> None:
        self.file = file
        self.root = root
        self.lines = text.split("\n")
        if self.lines and self.lines[-1] == "":
            self.lines.pop()
        self.lineno = 0

    def error(self, reason: str, line: int | None = None) -> PlanError:
        return PlanError(self.file, reason, self.lineno if line is None else line, self.root)

    def parse(self) -> Plan:
        pragmas = self._header()
        project = pragmas.get("project")
        if project is None:
            raise PlanError(self.file, "Missing %project pragma", root=self.root)
        changes = self._body(project)
        return _build(self.file, project, pragmas, changes)

    def _next_line(self) -> str | None:
        if self.lineno >= len(self.lines):
            return None
        line = self.lines[self.lineno]
        self.lineno += 1
        return line[:-1] if line.endswith("\r") else line

    def _strip_note(self, line: str) -> tuple[str, str | None]:
        match = _NOTE_RE.search(line)
        assert match is not None  # the pattern matches at the end of any line
        return line[: match.start()], match.group("note")

    def _header(self) -> dict[str, str]:
        pragmas: dict[str, str] = {}
        while (line := self._next_line()) is not None:
            blank = _BLANK_LINE_RE.match(line)
            if blank is not None:
                if not _truthy(_clean_note(blank.group("note"))):
                    break  # the first blank line ends the pragmas
                continue
            line, _note = self._strip_note(line)
            match = _PRAGMA_RE.match(line)
            if match is None:
                raise self.error("Invalid pragma; a blank line must come between pragmas and changes")
            name, value = match.group("name"), match.group("value")
            if name == "syntax-version":
                pragmas["syntax_version"] = SYNTAX_VERSION
            elif name == "project":
                if value is None or not _NAME_RE.match(value):
                    raise self.error(
                        f'invalid project name "{value}": project names must not begin with punctuation, '
                        'contain "@", ":", "#", "\\", or blanks, or end in punctuation or digits '
                        "following punctuation"
                    )
                pragmas["project"] = value
            else:
                pragmas[name] = "1" if value is None else value
        pragmas.setdefault("syntax_version", SYNTAX_VERSION)
        return pragmas

    def _body(self, project: str) -> list[_RawChange]:
        body = _Body()
        while (line := self._next_line()) is not None:
            if _BLANK_LINE_RE.match(line):
                continue
            line, note = self._strip_note(line)
            is_tag = re.match(rf"^{BLANK}*@", line) is not None
            entry = self._entry(line, is_tag)
            if is_tag:
                self._add_tag(project, body, entry, _clean_note(note))
            else:
                self._add_change(body, entry, _clean_note(note))
        if body.current:
            self._check_changes(project, body.line_no_for, body.current)
            body.changes.extend(body.current)
        return body.changes

    def _entry(self, line: str, is_tag: bool) -> _Entry:
        """The fields of a change or tag line, with the checks every entry must pass."""
        match = _LINE_RE.match(line)
        params = match.groupdict() if match else {}
        name = params.get("name")
        if not _truthy(name) or (params.get("yr") is None and _TS_SEARCH_RE.search(line)):
            raise self.error(
                'Invalid name; names must not begin with punctuation, contain "@", ":", "#", "\\", '
                "or blanks, or end in punctuation or digits following punctuation"
            )
        assert name is not None
        has_ts = params.get("yr") is not None
        has_planner = _truthy(params.get("planner_name"))
        if not has_ts and not has_planner:
            raise self.error("Missing timestamp and planner name and email")
        if not has_ts:
            raise self.error("Missing timestamp")
        if not has_planner:
            raise self.error("Missing planner name and email")
        if name in RESERVED_NAMES:
            raise self.error(f'"{"@" if is_tag else ""}{name}" is a reserved name')
        if _SHA1_PREFIX_RE.match(name):
            raise self.error(f'"{name}" is invalid because it could be confused with a SHA1 ID')
        timestamp = self._timestamp(params)
        return _Entry(name, timestamp, str(params["planner_name"]), str(params["planner_email"]), params)

    def _add_tag(self, project: str, body: _Body, entry: _Entry, note: str) -> None:
        """A tag closes the section of changes since the previous one: their dependencies are checked."""
        name = entry.name
        if "/" in name:
            raise self.error(f'Tag "{name}" contains illegal character /')
        if body.prev_change is None:
            raise self.error(f'Tag "{name}" declared without a preceding change')
        key = f"@{name}"
        if key in body.line_no_for:
            raise self.error(f'Tag "{name}" duplicates earlier declaration on line {body.line_no_for[key]}')
        if entry.params.get("dependencies"):
            raise self.error("Tags may not specify dependencies")
        if body.current:
            self._check_changes(project, body.line_no_for, body.current)
            body.changes.extend(body.current)
            body.current = []
        tag = _RawTag(name, note, entry.timestamp, entry.planner_name, entry.planner_email, self.lineno)
        body.prev_change.tags.append(tag)
        body.line_no_for.update(body.tag_changes)
        body.line_no_for[key] = self.lineno
        body.tag_changes = {}

    def _add_change(self, body: _Body, entry: _Entry, note: str) -> None:
        name = entry.name
        if name in body.tag_changes:
            raise self.error(
                f'Change "{name}" duplicates earlier declaration on line {body.tag_changes[name]}'
            )
        requires, conflicts = self._dependencies(entry.params.get("dependencies"))
        body.tag_changes[name] = self.lineno
        change = _RawChange(
            name=name,
            operator=entry.params.get("operator") or "",
            note=note,
            timestamp=entry.timestamp,
            planner_name=entry.planner_name,
            planner_email=entry.planner_email,
            requires=requires,
            conflicts=conflicts,
            line=self.lineno,
        )
        body.current.append(change)
        duped = body.change_named.get(name)
        if duped is not None:
            # Plan.pm: tags of every later change, newest first, then the old instance's own tags
            rework: list[_RawTag] = []
            for earlier in reversed(body.changes):
                if earlier is duped:
                    break
                rework.extend(earlier.tags)
            duped.rework_tags.extend([*rework, *duped.tags])
        body.change_named[name] = change
        body.prev_change = change

    def _timestamp(self, params: dict[str, str | None]) -> datetime:
        try:
            return datetime(
                int(params["yr"] or 0),
                int(params["mo"] or 0),
                int(params["dy"] or 0),
                int(params["hr"] or 0),
                int(params["mi"] or 0),
                int(params["sc"] or 0),
                tzinfo=UTC,
            )
        except ValueError as exc:
            raise self.error(f"Invalid timestamp: {exc}") from exc

    def _dependencies(self, text: str | None) -> tuple[list[_RawDep], list[_RawDep]]:
        requires: list[_RawDep] = []
        conflicts: list[_RawDep] = []
        if not _truthy(text):
            return requires, conflicts
        assert text is not None
        parts = re.split(f"{BLANK}+", text)
        while parts and parts[-1] == "":
            parts.pop()  # Perl's split drops trailing empty fields but keeps a leading one
        seen: set[str] = set()
        for part in parts:
            dep = parse_dependency(part)
            if dep is None:
                raise self.error(f'"{part}" is not a valid dependency specification')
            if dep.change is None and dep.tag is None and dep.id is None:
                raise self.error(f'"{part}" is not a valid dependency specification: it names no change')
            if part in seen:
                raise self.error(f'Duplicate dependency "{part}"')
            seen.add(part)
            (conflicts if dep.conflicts else requires).append(dep)
        return requires, conflicts

    def _check_changes(self, project: str, seen: dict[str, int], section: list[_RawChange]) -> None:
        """Plan.pm `check_changes`: every required change of this project is planned earlier."""
        position: dict[str, int] = {}
        invalid: list[tuple[_RawChange, list[str]]] = []
        for number, change in enumerate(section, start=1):
            bad: list[str] = []
            for dep in change.requires:
                if dep.project is not None:
                    if dep.project != project:
                        continue
                elif dep.id is not None:
                    continue
                key = dep.key_name
                if re.search(r".@", key):
                    dep_change, _, dep_tag = key.partition("@")
                    tag_at = seen.get(f"@{dep_tag}")
                    change_at = seen.get(dep_change)
                    if tag_at and change_at and change_at < tag_at:
                        continue
                elif key in seen or position.get(key):
                    continue
                bad.append(key)
            position[change.name] = number
            if bad:
                invalid.append((change, bad))
        if not invalid:
            return
        errors: list[str] = []
        for change, bad in invalid:
            max_delta = 0
            for dep_key in bad:
                if dep_key == change.name:
                    errors.append(f'Change "{change.name}" cannot require itself')
                elif dep_key in position:
                    delta = position[dep_key] - position[change.name]
                    max_delta = max(max_delta, delta)
                    noun = "change" if delta == 1 else "changes"
                    errors.append(
                        f'Change "{change.name}" planned {delta} {noun} before required change "{dep_key}"'
                    )
                else:
                    errors.append(f'Unknown change "{dep_key}" required by change "{change.name}"')
            if max_delta:
                lines = "line" if max_delta == 1 else "lines"
                errors[-1] += f' (HINT: move "{change.name}" down {max_delta} {lines})'
        label = "Dependency error detected" if len(errors) == 1 else "Dependency errors detected"
        raise self.error(f"{label}: {'; '.join(errors)}", line=invalid[0][0].line)


def _build(file: Path, project: str, pragmas: dict[str, str], raw: list[_RawChange]) -> Plan:
    """Second pass: ids need the parent's id and each dependency's project, so build in plan order."""
    uri = pragmas.get("uri")
    head = [f"project {project}"]
    if _truthy(uri) and uri is not None:
        head.append(f"uri {canonical_uri(uri)}")
    known_ids: set[str] = set()
    built: list[Change] = []
    tags_of: dict[int, Tag] = {}  # id(_RawTag) -> Tag
    parent: Change | None = None
    for item in raw:
        change = _change(head, item, parent, project, known_ids)
        for raw_tag in item.tags:
            tag = _tag(head, raw_tag, change)
            change.tags.append(tag)
            tags_of[id(raw_tag)] = tag
        known_ids.add(change.id)
        built.append(change)
        parent = change
    for item, change in zip(raw, built, strict=True):
        change.rework_tags = [tags_of[id(tag)] for tag in item.rework_tags]
    return Plan(file, project, uri, pragmas, built)


def _change(
    head: list[str], item: _RawChange, parent: Change | None, project: str, known_ids: set[str]
) -> Change:
    """A change with its id: the SHA-1 of its info (Change.pm `info`), which `head` (project, uri) starts."""
    requires = tuple(_dependency(dep, project, known_ids) for dep in item.requires)
    conflicts = tuple(_dependency(dep, project, known_ids) for dep in item.conflicts)
    info_lines = [*head, f"change {item.name}"]
    if parent is not None:
        info_lines.append(f"parent {parent.id}")
    info_lines.append(f"planner {item.planner_name} <{item.planner_email}>")
    info_lines.append(f"date {format_timestamp(item.timestamp)}")
    if requires:
        info_lines.append("requires\n  + " + "\n  + ".join(dep.as_string for dep in requires))
    if conflicts:
        info_lines.append("conflicts\n  - " + "\n  - ".join(dep.as_string for dep in conflicts))
    if _truthy(item.note):
        info_lines.extend(["", item.note])
    info = "\n".join(info_lines)
    return Change(
        name=item.name,
        id=_sha1_object("change", info),
        info=info,
        project=project,
        note=item.note,
        timestamp=item.timestamp,
        planner_name=item.planner_name,
        planner_email=item.planner_email,
        requires=requires,
        conflicts=conflicts,
        parent=parent,
        line=item.line,
        operator=item.operator,
    )


def _tag(head: list[str], raw_tag: _RawTag, change: Change) -> Tag:
    """A tag with its id: the SHA-1 of its info (Tag.pm `info`)."""
    tag_lines = [
        *head,
        f"tag @{raw_tag.name}",
        f"change {change.id}",
        f"planner {raw_tag.planner_name} <{raw_tag.planner_email}>",
        f"date {format_timestamp(raw_tag.timestamp)}",
    ]
    if _truthy(raw_tag.note):
        tag_lines.extend(["", raw_tag.note])
    tag_info = "\n".join(tag_lines)
    return Tag(
        name=raw_tag.name,
        id=_sha1_object("tag", tag_info),
        info=tag_info,
        note=raw_tag.note,
        timestamp=raw_tag.timestamp,
        planner_name=raw_tag.planner_name,
        planner_email=raw_tag.planner_email,
        change=change,
        line=raw_tag.line,
    )


def _dependency(dep: _RawDep, project: str, known_ids: set[str]) -> Dependency:
    if dep.project is not None:
        resolved: str | None = dep.project
    elif dep.id is None:
        resolved = project
    else:
        # Depend.pm looks the id up in the whole plan; a change can only depend on an earlier one
        resolved = project if dep.id in known_ids else None
    return Dependency(
        conflicts=dep.conflicts,
        change=dep.change,
        tag=dep.tag,
        id=dep.id,
        project=resolved,
        got_project=dep.project is not None,
        plan_project=project,
    )


def parse_plan(text: str, file: Path | str = "sqitch.plan", root: Path | None = None) -> Plan:
    """Parse plan text; errors name `file` (relative to `root` when below it) and the line."""
    return _Parser(text, Path(file), root).parse()


def load_plan(file: Path, root: Path | None = None) -> Plan:
    """Read and parse a plan file (UTF-8, as sqitch reads it)."""
    if not file.exists():
        raise PlanError(file, "Plan file does not exist", root=root)
    if not file.is_file():
        raise PlanError(file, "Plan file is not a regular file", root=root)
    data = file.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise PlanError(file, f"not valid UTF-8: {exc.reason}", line, root) from exc
    return parse_plan(text, file, root)
