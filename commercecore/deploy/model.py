"""The plan as data: changes, tags and dependencies, with sqitch's lookups (App::Sqitch::Plan,
Plan/ChangeList.pm). Built by `commercecore.deploy.plan`, which parses sqitch.plan."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from commercecore.deploy.errors import DeployError
from commercecore.deploy.syntax import OFFSET_RE


def format_timestamp(ts: datetime) -> str:
    """App::Sqitch::DateTime `as_string` (raw): ISO 8601 in UTC with a `Z`."""
    ts = ts.astimezone(UTC)
    return f"{ts.year:04d}-{ts.month:02d}-{ts.day:02d}T{ts.hour:02d}:{ts.minute:02d}:{ts.second:02d}Z"


@dataclass(frozen=True)
class Dependency:
    """One `[...]` entry of a change (Plan/Depend.pm), with its project resolved."""

    conflicts: bool
    change: str | None
    tag: str | None
    id: str | None  # a SHA-1 written in the plan instead of a name
    project: str | None  # None: an id not found in this plan, so some unknown other project
    got_project: bool
    plan_project: str

    @property
    def got_id(self) -> bool:
        return self.id is not None

    @property
    def type(self) -> str:
        return "conflict" if self.conflicts else "require"

    @property
    def key_name(self) -> str:
        parts = [
            part for part in (self.change, None if self.tag is None else f"@{self.tag}") if part is not None
        ]
        if not parts and self.id is not None:
            parts.append(self.id)
        return "".join(parts)

    @property
    def is_external(self) -> bool:
        return self.project is None or self.project != self.plan_project

    @property
    def as_string(self) -> str:
        # a `proj:` prefix naming this very project is dropped: it changes the change id
        if self.project is None or self.project == self.plan_project:
            return self.key_name
        return f"{self.project}:{self.key_name}"

    @property
    def as_plan_string(self) -> str:
        return ("!" if self.conflicts else "") + self.as_string


@dataclass(eq=False)
class Tag:
    """`@name` in the plan: applies to the change before it."""

    name: str
    id: str
    info: str
    note: str
    timestamp: datetime
    planner_name: str
    planner_email: str
    change: Change
    line: int

    @property
    def format_name(self) -> str:
        return f"@{self.name}"


@dataclass(eq=False)
class Change:
    """One change line of the plan."""

    name: str
    id: str
    info: str
    project: str
    note: str
    timestamp: datetime
    planner_name: str
    planner_email: str
    requires: tuple[Dependency, ...]
    conflicts: tuple[Dependency, ...]
    parent: Change | None
    line: int
    operator: str = ""
    tags: list[Tag] = field(default_factory=list)
    # tags whose name suffixes this instance's scripts (`name@tag.sql`) once the change is reworked
    rework_tags: list[Tag] = field(default_factory=list)

    @property
    def is_reworked(self) -> bool:
        return bool(self.rework_tags)

    @property
    def dependencies(self) -> tuple[Dependency, ...]:
        return self.requires + self.conflicts

    @property
    def format_name_with_tags(self) -> str:
        return " ".join([self.name, *(tag.format_name for tag in self.tags)])

    @property
    def format_tag_qualified_name(self) -> str:
        tags = self.tags or self.rework_tags
        return self.name + (tags[0].format_name if tags else "@HEAD")


class ChangeLookupError(DeployError):
    """A name matches several instances of a reworked change, or names an unknown tag."""


def parse_offset(key: str) -> tuple[str, int]:
    """ChangeList `_offset`: `HEAD^` is one change back, `foo~2` two forward; returns (key, offset)."""
    match = OFFSET_RE.search(key)
    if match is None:
        return key, 0
    digits, doubled = match.group(3), match.group(2)
    offset = int(digits) if digits is not None else (2 if doubled else 1)
    return key[: match.start()], -offset if match.group(1) == "^" else offset


class Plan:
    """The parsed plan: changes in order, with sqitch's lookups by name, `name@tag`, `@tag` and id."""

    def __init__(
        self, file: Path, project: str, uri: str | None, pragmas: dict[str, str], changes: list[Change]
    ) -> None:
        self.file = file
        self.project = project
        self.uri = uri
        self.pragmas = pragmas
        self.changes = changes
        self._lookup: dict[str, list[int]] = {}
        for index, change in enumerate(changes):
            self._lookup.setdefault(change.name, []).append(index)
            self._lookup[change.id] = [index]
            for tag in change.tags:
                self._lookup[tag.format_name] = [index]
                self._lookup[tag.id] = [index]
        if changes:
            self._lookup["HEAD"] = self._lookup["@HEAD"] = [len(changes) - 1]
            self._lookup["ROOT"] = self._lookup["@ROOT"] = [0]

    @property
    def tags(self) -> list[Tag]:
        return [tag for change in self.changes for tag in change.tags]

    def __len__(self) -> int:
        return len(self.changes)

    def change_at(self, index: int) -> Change:
        return self.changes[index]

    def _apply_offset(self, index: int | None, offset: int) -> int | None:
        if index is None:
            return None
        index += offset
        return index if 0 <= index < len(self.changes) else None

    def index_of(self, key: str) -> int | None:
        """Index of `name`, `name@tag`, `@tag`, an id, `HEAD`/`ROOT`, each with an optional `^`/`~` offset."""
        key, offset = parse_offset(key)
        return self._apply_offset(self._index_of(key), offset)

    def _index_of(self, key: str) -> int | None:
        change, at, tag = key.partition("@")
        if at and not change:
            found = self._lookup.get(f"@{tag}")
            return found[0] if found else None
        indexes = self._lookup.get(change)
        if not indexes:
            return None
        if at:
            tag_index = self._lookup.get(f"@{tag}")
            if not tag_index:
                raise ChangeLookupError(f'Unknown tag "@{tag}"')
            return next((i for i in reversed(indexes) if i <= tag_index[0]), None)
        if len(indexes) < 2:
            return indexes[0]
        choices = ", ".join(self.changes[i].format_tag_qualified_name for i in reversed(indexes))
        raise ChangeLookupError(
            f'Change "{key}" is ambiguous. Please specify a tag-qualified change: {choices}'
        )

    def first_index_of(self, key: str, since: str | None = None) -> int | None:
        """The first instance of a change name (after change or tag `since` when given)."""
        key, offset = parse_offset(key)
        indexes = self._lookup.get(key)
        if not indexes:
            return None
        if since is None:
            return self._apply_offset(indexes[0], offset)
        since_index = self.index_of(since)
        if since_index is None:
            raise ChangeLookupError(f'Unknown change: "{since}"')
        return self._apply_offset(next((i for i in indexes if i > since_index), None), offset)

    def find(self, key: str) -> Change | None:
        """Plan.pm `find`: tagged keys by index_of, bare names by their first instance."""
        index = self.index_of(key) if "@" in key else self.first_index_of(key)
        return None if index is None else self.changes[index]

    def get(self, key: str) -> Change | None:
        index = self.index_of(key)
        return None if index is None else self.changes[index]

    def contains(self, key: str) -> bool:
        return (self.index_of(key) if "@" in key else self.first_index_of(key)) is not None
