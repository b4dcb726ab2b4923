"""The sqitch registry (schema `sqitch`, release 1.1), read and written as sqitch's pg engine does.

Queries follow App::Sqitch::Role::DBIEngine with the Engine::pg overrides (arrays for tags and
dependencies in events, `clock_timestamp()` for every committed_at, `LOCK TABLE changes IN EXCLUSIVE
MODE` at the start of each change's transaction, advisory lock 75474063 for the whole run), so that
rows written here are indistinguishable from rows sqitch writes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any

import psycopg
from psycopg import errors, sql

from commercecore.deploy.config import Identity
from commercecore.deploy.errors import DeployError

REGISTRY_RELEASE = 1.1
UPGRADES = ((1.0, "registry-upgrade-1.0.sql"), (1.1, "registry-upgrade-1.1.sql"))
# Engine/pg.pm `try_lock`/`wait_lock`: every sqitch (and every one of us) serialises on this key
LOCK_KEY = 75474063

Connection = psycopg.Connection[tuple[Any, ...]]


@dataclass(frozen=True)
class DeployedChange:
    """A row of `changes` with its tags (sorted, as sqitch aggregates them)."""

    id: str
    name: str
    project: str
    note: str
    planned_at: datetime
    planner_name: str
    planner_email: str
    tags: tuple[str, ...]  # as stored: `@v1.0`
    script_hash: str | None
    committed_at: datetime
    committer_name: str
    committer_email: str

    @property
    def format_name_with_tags(self) -> str:
        return " ".join([self.name, *self.tags])


@dataclass(frozen=True)
class Event:
    """A row of `events`."""

    event: str
    project: str
    change_id: str
    change: str
    note: str
    requires: tuple[str, ...]
    conflicts: tuple[str, ...]
    tags: tuple[str, ...]
    committed_at: datetime
    committer_name: str
    committer_email: str
    planned_at: datetime
    planner_name: str
    planner_email: str


@dataclass(frozen=True)
class EventSubject:
    """What an event row says about its change: from the plan (deploy, fail) or the registry (revert)."""

    id: str
    name: str
    project: str
    note: str
    planned_at: datetime
    planner_name: str
    planner_email: str
    tags: Sequence[str]
    requires: Sequence[str]
    conflicts: Sequence[str]


@dataclass(frozen=True)
class DependencyRow:
    type: str  # require | conflict
    dependency: str
    dependency_id: str | None


@dataclass(frozen=True)
class TagRow:
    id: str
    name: str  # `@v1.0`
    note: str
    planned_at: datetime
    planner_name: str
    planner_email: str


@dataclass(frozen=True)
class RequiringChange:
    change_id: str
    project: str
    change: str
    asof_tag: str | None


_CHANGE_COLUMNS = sql.SQL(
    "c.change_id, c.change, c.project, c.note, c.planned_at, c.planner_name, c.planner_email,"
    " array_remove(array_agg(t.tag order by t.tag), null), c.script_hash,"
    " c.committed_at, c.committer_name, c.committer_email"
)
_CHANGE_GROUP = sql.SQL(
    "group by c.change_id, c.change, c.project, c.note, c.planned_at, c.planner_name, c.planner_email,"
    " c.script_hash, c.committed_at, c.committer_name, c.committer_email"
)


def _deployed(row: tuple[Any, ...]) -> DeployedChange:
    return DeployedChange(
        id=row[0],
        name=row[1],
        project=row[2],
        note=row[3],
        planned_at=row[4],
        planner_name=row[5],
        planner_email=row[6],
        tags=tuple(row[7] or ()),
        script_hash=row[8],
        committed_at=row[9],
        committer_name=row[10],
        committer_email=row[11],
    )


class Registry:
    """One connection (autocommit) to the database, speaking to the registry schema."""

    def __init__(self, conn: Connection, schema: str, identity: Callable[[], Identity]) -> None:
        self.conn = conn
        self.schema = schema
        self._identity = identity

    @property
    def identity(self) -> Identity:
        """Who the rows are written by; looked up only when something is written."""
        return self._identity()

    def _t(self, table: str) -> sql.Identifier:
        return sql.Identifier(self.schema, table)

    def _q(self, template: str, **tables: str) -> sql.Composed:
        return sql.SQL(template).format(**{key: self._t(name) for key, name in tables.items()})

    # -- locks and transactions --------------------------------------------------------------------

    def try_lock(self) -> bool:
        """Engine/pg.pm `try_lock`: the run-wide advisory lock, without waiting."""
        row = self.conn.execute("select pg_try_advisory_lock(%s)", (LOCK_KEY,)).fetchone()
        return bool(row and row[0])

    def wait_lock(self, timeout: float) -> bool:
        """Engine/pg.pm `wait_lock`: wait up to `timeout` seconds for the lock; False when timed out."""
        try:
            with self.conn.transaction():
                # a local statement_timeout bounds the wait, as sqitch's --lock-timeout does
                self.conn.execute(
                    "select set_config('statement_timeout', %s, true)", (f"{max(int(timeout * 1000), 1)}ms",)
                )
                self.conn.execute("select pg_advisory_lock(%s)", (LOCK_KEY,))
        except errors.QueryCanceled:
            return False
        return True

    def begin_work(self) -> None:
        """Engine/pg.pm `begin_work`: a transaction holding changes exclusively, one change at a time."""
        self.conn.execute("begin")
        self.conn.execute(self._q("lock table {changes} in exclusive mode", changes="changes"))

    def finish_work(self) -> None:
        self.conn.execute("commit")

    def rollback_work(self) -> None:
        self.conn.execute("rollback")

    # -- the registry itself -----------------------------------------------------------------------

    def initialized(self) -> bool:
        row = self.conn.execute(
            "select exists(select true from pg_catalog.pg_tables where schemaname = %s and tablename = %s)",
            (self.schema, "changes"),
        ).fetchone()
        return bool(row and row[0])

    def version(self) -> float:
        """The registry release; 0 when there is no `releases` table (before 1.0, or no registry)."""
        try:
            with self.conn.transaction():
                row = self.conn.execute(
                    self._q("select max(version)::text from {releases}", releases="releases")
                ).fetchone()
        except errors.UndefinedTable:
            return 0.0
        return float(row[0]) if row and row[0] is not None else 0.0

    def _run_file(self, name: str) -> None:
        text = resources.files("commercecore.deploy").joinpath(name).read_text(encoding="utf-8")
        # one simple-protocol query: the file carries its own begin/commit
        self.conn.execute(sql.SQL(text).format(registry=sql.Identifier(self.schema)))

    def initialize(self) -> None:
        if self.initialized():
            raise DeployError(f'Sqitch schema "{self.schema}" already exists')
        self._run_file("registry.sql")
        self.register_release(REGISTRY_RELEASE)

    def upgrade(self) -> list[float]:
        """Run the upgrade scripts newer than the registry's release; the releases applied."""
        current = self.version()
        if current > REGISTRY_RELEASE:
            raise DeployError(
                f"Registry version is {current} but {REGISTRY_RELEASE} is the latest known. Please upgrade"
            )
        applied: list[float] = []
        for release, name in UPGRADES:
            if release > current:
                self._run_file(name)
                self.register_release(release)
                applied.append(release)
        return applied

    def register_release(self, release: float) -> None:
        self.begin_work()
        self.conn.execute(
            self._q(
                "insert into {releases} (version, installed_at, installer_name, installer_email)"
                " values (%s, clock_timestamp(), %s, %s)",
                releases="releases",
            ),
            (str(release), self.identity.name, self.identity.email),
        )
        self.finish_work()

    def register_project(self, project: str, uri: str | None) -> None:
        """DBIEngine `register_project`: add the project, or check that its URI did not change."""
        row = self.conn.execute(
            self._q("select uri from {projects} where project = %s", projects="projects"), (project,)
        ).fetchone()
        if row is not None:
            registered = row[0]
            if uri is not None and registered is None:
                raise DeployError(f'Cannot register "{project}" with URI {uri}: already exists with NULL URI')
            if uri is None and registered is not None:
                raise DeployError(
                    f'Cannot register "{project}" without URI: already exists with URI {registered}'
                )
            if uri is not None and uri != registered:
                raise DeployError(
                    f'Cannot register "{project}" with URI {uri}: already exists with URI {registered}'
                )
            return
        if uri is not None:
            other = self.conn.execute(
                self._q("select project from {projects} where uri = %s", projects="projects"), (uri,)
            ).fetchone()
            if other is not None:
                raise DeployError(
                    f'Cannot register "{project}" with URI {uri}: project "{other[0]}" already using that URI'
                )
        self.conn.execute(
            self._q(
                "insert into {projects} (project, uri, creator_name, creator_email, created_at)"
                " values (%s, %s, %s, %s, clock_timestamp())",
                projects="projects",
            ),
            (project, uri, self.identity.name, self.identity.email),
        )

    # -- reading -----------------------------------------------------------------------------------

    def current_state(self, project: str) -> DeployedChange | None:
        """The last deployed change of the project (sqitch's `current_state`), None when none."""
        if not self.initialized():
            return None
        row = self.conn.execute(
            sql.SQL(
                "select {cols} from {changes} c left join {tags} t on c.change_id = t.change_id"
                " where c.project = %s {group} order by c.committed_at desc limit 1"
            ).format(
                cols=_CHANGE_COLUMNS, changes=self._t("changes"), tags=self._t("tags"), group=_CHANGE_GROUP
            ),
            (project,),
        ).fetchone()
        return None if row is None else _deployed(row)

    def deployed_changes(self, project: str, since_id: str | None = None) -> list[DeployedChange]:
        """Deployed changes oldest first; only those committed after `since_id` when given."""
        if not self.initialized():
            return []
        since: sql.Composable = sql.SQL("")
        params: tuple[str, ...] = (project,)
        if since_id is not None:
            since = sql.SQL(
                "and c.committed_at > (select committed_at from {changes} where change_id = %s)"
            ).format(changes=self._t("changes"))
            params = (project, since_id)
        rows = self.conn.execute(
            sql.SQL(
                "select {cols} from {changes} c left join {tags} t on c.change_id = t.change_id"
                " where c.project = %s {since} {group} order by c.committed_at asc"
            ).format(
                cols=_CHANGE_COLUMNS,
                changes=self._t("changes"),
                tags=self._t("tags"),
                since=since,
                group=_CHANGE_GROUP,
            ),
            params,
        ).fetchall()
        return [_deployed(row) for row in rows]

    def load_change(
        self, change_id: str, offset: int = 0, project: str | None = None
    ) -> DeployedChange | None:
        """DBIEngine `change_offset_from_id`: the change `offset` steps from `change_id` in deploy order."""
        if offset == 0:
            row = self.conn.execute(
                sql.SQL(
                    "select {cols} from {changes} c left join {tags} t on c.change_id = t.change_id"
                    " where c.change_id = %s {group}"
                ).format(
                    cols=_CHANGE_COLUMNS,
                    changes=self._t("changes"),
                    tags=self._t("tags"),
                    group=_CHANGE_GROUP,
                ),
                (change_id,),
            ).fetchone()
            return None if row is None else _deployed(row)
        direction, op = (sql.SQL("asc"), sql.SQL(">")) if offset > 0 else (sql.SQL("desc"), sql.SQL("<"))
        row = self.conn.execute(
            sql.SQL(
                "select {cols} from {changes} c left join {tags} t on c.change_id = t.change_id"
                " where c.project = %s and c.committed_at {op}"
                " (select committed_at from {changes} where change_id = %s)"
                " {group} order by c.committed_at {dir} limit 1 offset %s"
            ).format(
                cols=_CHANGE_COLUMNS,
                changes=self._t("changes"),
                tags=self._t("tags"),
                op=op,
                group=_CHANGE_GROUP,
                dir=direction,
            ),
            (project, change_id, abs(offset) - 1),
        ).fetchone()
        return None if row is None else _deployed(row)

    def _latest_or_earliest(self, project: str, latest: bool) -> str | None:
        order = sql.SQL("desc" if latest else "asc")
        row = self.conn.execute(
            sql.SQL(
                "select change_id from {changes} where project = %s order by committed_at {order} limit 1"
            ).format(changes=self._t("changes"), order=order),
            (project,),
        ).fetchone()
        return None if row is None else str(row[0])

    def change_ids_for(
        self, project: str, change_id: str | None = None, change: str | None = None, tag: str | None = None
    ) -> list[str]:
        """DBIEngine `change_id_for`: every deployed id a reference can mean (more than one: ambiguous)."""
        if not self.initialized():
            return []
        if change_id:
            row = self.conn.execute(
                self._q("select change_id from {changes} where change_id = %s", changes="changes"),
                (change_id,),
            ).fetchone()
            return [] if row is None else [row[0]]
        if change:
            if tag:
                if tag == "ROOT":
                    return []  # there is nothing before the first tag
                if tag == "HEAD":
                    query = self._q(
                        "select change_id from {changes} where project = %s and change = %s"
                        " order by committed_at desc limit 1",
                        changes="changes",
                    )
                    return [row[0] for row in self.conn.execute(query, (project, change))]
                query = self._q(
                    "select c.change_id from {changes} c join {tags} t"
                    " on c.committed_at <= t.committed_at and c.project = t.project"
                    " where c.project = %s and c.change = %s and t.tag = %s"
                    " order by c.committed_at desc limit 1",
                    changes="changes",
                    tags="tags",
                )
                return [row[0] for row in self.conn.execute(query, (project, change, f"@{tag}"))]
            query = self._q(
                "select change_id from {changes} where project = %s and change = %s"
                " order by committed_at asc",
                changes="changes",
            )
            return [row[0] for row in self.conn.execute(query, (project, change))]
        if tag:
            if tag in ("HEAD", "ROOT"):
                found = self._latest_or_earliest(project, latest=tag == "HEAD")
                return [] if found is None else [found]
            query = self._q("select change_id from {tags} where project = %s and tag = %s", tags="tags")
            return [row[0] for row in self.conn.execute(query, (project, f"@{tag}"))]
        return []

    def are_deployed(self, ids: Sequence[str]) -> list[str]:
        if not ids or not self.initialized():
            return []
        rows = self.conn.execute(
            self._q("select change_id from {changes} where change_id = any(%s)", changes="changes"),
            (list(ids),),
        ).fetchall()
        return [row[0] for row in rows]

    def changes_requiring(self, change_id: str) -> list[RequiringChange]:
        """Deployed changes whose dependencies resolve to `change_id`, with the tag deployed after them."""
        rows = self.conn.execute(
            self._q(
                "select c.change_id, c.project, c.change, ("
                " select tag from {changes} c2 join {tags} on c2.change_id = {tags}.change_id"
                " where c2.project = c.project and c2.committed_at >= c.committed_at"
                " order by c2.committed_at limit 1) as asof_tag"
                " from {dependencies} d join {changes} c on c.change_id = d.change_id"
                " where d.dependency_id = %s",
                changes="changes",
                tags="tags",
                dependencies="dependencies",
            ),
            (change_id,),
        ).fetchall()
        return [RequiringChange(row[0], row[1], row[2], row[3]) for row in rows]

    def dependencies_of(self, change_id: str) -> list[DependencyRow]:
        rows = self.conn.execute(
            self._q(
                "select type, dependency, dependency_id from {dependencies} where change_id = %s",
                dependencies="dependencies",
            ),
            (change_id,),
        ).fetchall()
        return [DependencyRow(row[0], row[1], row[2]) for row in rows]

    def events(self, project: str | None = None, limit: int | None = None) -> list[Event]:
        """The event log, newest first (all projects, as `sqitch log`, unless `project` is given)."""
        if not self.initialized():
            return []
        where = sql.SQL("where e.project = %s") if project is not None else sql.SQL("")
        params: list[Any] = [project] if project is not None else []
        limit_sql = sql.SQL("")
        if limit is not None:
            limit_sql = sql.SQL("limit %s")
            params.append(limit)
        rows = self.conn.execute(
            sql.SQL(
                "select e.event, e.project, e.change_id, e.change, e.note, e.requires, e.conflicts, e.tags,"
                " e.committed_at, e.committer_name, e.committer_email, e.planned_at, e.planner_name,"
                " e.planner_email from {events} e {where} order by e.committed_at desc {limit}"
            ).format(events=self._t("events"), where=where, limit=limit_sql),
            params,
        ).fetchall()
        return [
            Event(
                event=row[0],
                project=row[1],
                change_id=row[2],
                change=row[3],
                note=row[4],
                requires=tuple(row[5]),
                conflicts=tuple(row[6]),
                tags=tuple(row[7]),
                committed_at=row[8],
                committer_name=row[9],
                committer_email=row[10],
                planned_at=row[11],
                planner_name=row[12],
                planner_email=row[13],
            )
            for row in rows
        ]

    # -- writing -----------------------------------------------------------------------------------

    def log_deploy_change(
        self,
        subject: EventSubject,
        script_hash: str | None,
        dependencies: Sequence[DependencyRow],
        tags: Sequence[TagRow],
    ) -> None:
        """DBIEngine `log_deploy_change`: the change, its dependencies, its tags, a deploy event."""
        self.conn.execute(
            self._q(
                "insert into {changes} (change_id, script_hash, change, project, note, committer_name,"
                " committer_email, planned_at, planner_name, planner_email, committed_at)"
                " values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, clock_timestamp())",
                changes="changes",
            ),
            (
                subject.id,
                script_hash,
                subject.name,
                subject.project,
                subject.note,
                self.identity.name,
                self.identity.email,
                subject.planned_at,
                subject.planner_name,
                subject.planner_email,
            ),
        )
        if dependencies:
            values = sql.SQL(", ").join(sql.SQL("(%s, %s, %s, %s)") for _ in dependencies)
            self.conn.execute(
                sql.SQL(
                    "insert into {deps} (change_id, type, dependency, dependency_id) values {values}"
                ).format(deps=self._t("dependencies"), values=values),
                [
                    value
                    for dep in dependencies
                    for value in (subject.id, dep.type, dep.dependency, dep.dependency_id)
                ],
            )
        if tags:
            self._insert_tags(subject, tags)
        self.log_event("deploy", subject)

    def _insert_tags(self, subject: EventSubject, tags: Sequence[TagRow]) -> None:
        """DBIEngine `log_deploy_change`, tags part: one VALUES row per tag, committed_at now."""
        values = sql.SQL(", ").join(
            sql.SQL("(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, clock_timestamp())") for _ in tags
        )
        self.conn.execute(
            sql.SQL(
                "insert into {tags} (tag_id, tag, project, change_id, note, committer_name, committer_email,"
                " planned_at, planner_name, planner_email, committed_at) values {values}"
            ).format(tags=self._t("tags"), values=values),
            self._tag_params(subject, tags),
        )

    def _tag_params(self, subject: EventSubject, tags: Sequence[TagRow]) -> list[Any]:
        return [
            value
            for tag in tags
            for value in (
                tag.id,
                tag.name,
                subject.project,
                subject.id,
                tag.note,
                self.identity.name,
                self.identity.email,
                tag.planned_at,
                tag.planner_name,
                tag.planner_email,
            )
        ]

    def log_new_tags(self, subject: EventSubject, tags: Sequence[TagRow]) -> None:
        """Engine/pg.pm `log_new_tags`: tags planned after their change was deployed, unless present."""
        if not tags:
            return
        row_sql = sql.SQL(
            "(%s::text, %s::text, %s::text, %s::text, %s::text, %s::text, %s::text, %s::timestamptz,"
            " %s::text, %s::text)"
        )
        self.conn.execute(
            sql.SQL(
                "insert into {tags} (tag_id, tag, project, change_id, note, committer_name, committer_email,"
                " planned_at, planner_name, planner_email)"
                " select tid, tg, proj, chid, n, name, email, at, pname, pemail from (values {values})"
                " i(tid, tg, proj, chid, n, name, email, at, pname, pemail)"
                " left join {tags} on i.tid = {tags}.tag_id where {tags}.tag_id is null"
            ).format(tags=self._t("tags"), values=sql.SQL(", ").join(row_sql for _ in tags)),
            self._tag_params(subject, tags),
        )

    def log_fail_change(self, subject: EventSubject) -> None:
        self.log_event("fail", subject)

    def log_revert_change(self, subject: EventSubject) -> None:
        """Engine/pg.pm `log_revert_change`: drop tags and the change (dependencies cascade), log it."""
        deleted = self.conn.execute(
            self._q("delete from {tags} where change_id = %s returning tag", tags="tags"), (subject.id,)
        ).fetchall()
        row = self.conn.execute(
            self._q(
                "select array(select dependency from {deps} where change_id = %s and type = 'require'),"
                " array(select dependency from {deps} where change_id = %s and type = 'conflict')",
                deps="dependencies",
            ),
            (subject.id, subject.id),
        ).fetchone()
        assert row is not None
        self.conn.execute(
            self._q("delete from {changes} where change_id = %s", changes="changes"), (subject.id,)
        )
        reverted = EventSubject(
            id=subject.id,
            name=subject.name,
            project=subject.project,
            note=subject.note,
            planned_at=subject.planned_at,
            planner_name=subject.planner_name,
            planner_email=subject.planner_email,
            tags=[tag_row[0] for tag_row in deleted],
            requires=list(row[0]),
            conflicts=list(row[1]),
        )
        self.log_event("revert", reverted)

    def log_event(self, event: str, subject: EventSubject) -> None:
        self.conn.execute(
            self._q(
                "insert into {events} (event, change_id, change, project, note, tags, requires, conflicts,"
                " committer_name, committer_email, planned_at, planner_name, planner_email, committed_at)"
                " values (%s, %s, %s, %s, %s, %s::text[], %s::text[], %s::text[], %s, %s, %s, %s, %s,"
                " clock_timestamp())",
                events="events",
            ),
            (
                event,
                subject.id,
                subject.name,
                subject.project,
                subject.note,
                list(subject.tags),
                list(subject.requires),
                list(subject.conflicts),
                self.identity.name,
                self.identity.email,
                subject.planned_at,
                subject.planner_name,
                subject.planner_email,
            ),
        )

    def update_script_hashes(self, project: str, hashes: Sequence[tuple[str, str | None]]) -> None:
        """DBIEngine `_update_script_hashes`: registries upgraded from before 1.0 hold the change id."""
        self.begin_work()
        for change_id, digest in hashes:
            self.conn.execute(
                self._q(
                    "update {changes} set script_hash = %s where change_id = %s and script_hash = %s",
                    changes="changes",
                ),
                (digest, change_id, change_id),
            )
        self.conn.execute(
            self._q(
                "update {changes} set script_hash = null where project = %s and script_hash = change_id",
                changes="changes",
            ),
            (project,),
        )
        self.finish_work()
