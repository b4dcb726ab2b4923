"""Deploy, revert, verify, status and log with sqitch's semantics (App::Sqitch::Engine, Engine::pg).

A run holds sqitch's advisory lock. Each change is one registry transaction (changes table locked
exclusively) around its script, which runs in its own session as psql would run it; the registry rows
and events are the ones sqitch writes, so the real `sqitch` and this deployer can take turns on one
database. On a failing deploy or verify script a `fail` event is logged and, in the default mode
`all`, every change deployed by the run is reverted again.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import psycopg

from commercecore.deploy.config import Identity, identity
from commercecore.deploy.dburl import display_url, libpq_url
from commercecore.deploy.errors import DeployError, ScriptError, display_path
from commercecore.deploy.locks import LockPolicy, LockTimeout
from commercecore.deploy.model import Change, Dependency, Plan, parse_offset
from commercecore.deploy.plan import load_plan
from commercecore.deploy.project import MODES, Project, Scripts, script_hash
from commercecore.deploy.records import deployed_rework_tags, deployed_subject_of, subject_of, tag_rows_of
from commercecore.deploy.registry import (
    REGISTRY_RELEASE,
    DependencyRow,
    DeployedChange,
    Event,
    EventSubject,
    Registry,
)
from commercecore.deploy.reports import (
    LogReporter,
    Reporter,
    Status,
    VerifyFailed,
    VerifyReport,
    VerifyResult,
)
from commercecore.deploy.scripts import run_script
from commercecore.text import one_line

__all__ = ["Deployer", "Reporter", "Status", "VerifyFailed", "VerifyReport", "VerifyResult"]

_SHA1_RE = re.compile(r"\A[0-9a-f]{40}\Z")


class Deployer:
    """Deploys a sqitch project to one PostgreSQL database, interchangeably with `sqitch`.

    `db_url` is a libpq URL or a sqitch `db:pg://` target; `top_dir` is the project directory (where
    sqitch.conf is; sqitch would run from there); `plan_file` overrides the configured plan.
    """

    def __init__(
        self,
        db_url: str,
        top_dir: Path,
        plan_file: Path | None = None,
        *,
        reporter: Reporter | None = None,
        registry_lock_timeout: float = 60.0,
        lock_timeout: float | None = None,
        lock_retries: int | None = None,
        lock_retry_delay: float | None = None,
        verify: bool | None = None,
        mode: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.conninfo = libpq_url(db_url)
        self.destination = display_url(db_url)
        self.project_dir = Path(top_dir)
        self.layout = Project.load(self.project_dir, None if plan_file is None else Path(plan_file), env)
        self.reporter: Reporter = reporter or LogReporter()
        self.registry_lock_timeout = registry_lock_timeout
        # unset: COMMERCECORE_DEPLOY_LOCK_TIMEOUT, _RETRIES, _RETRY_DELAY, else 5 s, 3 and 1 s
        self.lock_policy = LockPolicy.resolve(
            os.environ if env is None else env, lock_timeout, lock_retries, lock_retry_delay
        )
        # sqitch's --verify/--no-verify and --mode override deploy.verify and deploy.mode
        self.verify_on_deploy = self.layout.verify_on_deploy if verify is None else verify
        self.mode = mode or self.layout.mode
        if self.mode not in MODES:
            raise DeployError(f'Unknown deployment mode: "{self.mode}"')
        self._env = env
        self._plan: Plan | None = None
        self._identity: Identity | None = None

    @property
    def plan(self) -> Plan:
        if self._plan is None:
            self._plan = load_plan(self.layout.plan_file, self.project_dir)
        return self._plan

    @property
    def identity(self) -> Identity:
        """The committer written to the registry (sqitch's user.name/user.email lookup)."""
        if self._identity is None:
            self._identity = identity(self.layout.config, self.project_dir, self._env)
        return self._identity

    @property
    def _plan_name(self) -> str:
        return display_path(self.layout.plan_file, self.project_dir)

    def scripts(self, change: Change) -> Scripts:
        return self.layout.scripts_for(change)

    # -- plumbing ----------------------------------------------------------------------------------

    @contextmanager
    def _registry(self) -> Iterator[Registry]:
        try:
            conn = psycopg.connect(
                self.conninfo, autocommit=True, client_encoding="utf8", application_name="commercecore-deploy"
            )
        except psycopg.OperationalError as exc:
            raise DeployError(f"cannot connect to {self.destination}: {one_line(exc)}") from exc
        try:
            with conn:
                conn.execute("set client_min_messages = warning")
                yield Registry(conn, self.layout.registry, lambda: self.identity)
        except psycopg.Error as exc:
            raise DeployError(f"{self.destination}: {one_line(exc)}") from exc

    def _lock(self, reg: Registry) -> None:
        if reg.try_lock():
            return
        self.reporter.info(
            f"Blocked by another instance of Sqitch working on {self.destination}; "
            f"waiting {self.registry_lock_timeout:g} seconds..."
        )
        if not reg.wait_lock(self.registry_lock_timeout):
            raise DeployError(
                f"Timed out waiting {self.registry_lock_timeout:g} seconds for another instance of Sqitch "
                f"to finish work on {self.destination}"
            )

    def _check_registry(self, reg: Registry) -> None:
        """Engine.pm `_check_registry`: revert and verify need a registry of the current release."""
        version = reg.version()
        if version == REGISTRY_RELEASE:
            return
        if version == 0 and not reg.initialized():
            raise DeployError(f"No registry found in {self.destination}. Have you ever deployed?")
        if version > REGISTRY_RELEASE:
            raise DeployError(
                f"Registry version is {version} but {REGISTRY_RELEASE} is the latest known. Please upgrade"
            )
        raise DeployError(
            f"Registry is at version {version} but latest is {REGISTRY_RELEASE}. "
            'Please run "sqitch upgrade" (or deploy pending changes, which upgrades it)'
        )

    def _upgrade(self, reg: Registry) -> None:
        old = reg.version()
        for release in reg.upgrade():
            self.reporter.info(f"Upgraded the Sqitch registry from {old} to {release}")
            old = release

    def _run(self, path: Path) -> None:
        """Run a script with the lock policy: a lock timeout inside the script's own transaction is
        tried again after a pause that doubles each time; the last one stops with the blockers named."""
        policy = self.lock_policy
        attempt = 0
        while True:
            try:
                run_script(
                    self.conninfo, path, self.reporter.warn, self.project_dir, lock_timeout=policy.timeout
                )
                return
            except LockTimeout as exc:
                attempt += 1
                if not exc.retryable or attempt > policy.retries:
                    raise policy.give_up(exc, attempt) from exc
                delay = policy.delay(attempt)
                self.reporter.warn(
                    f"{exc}: {exc.blocked_by()}; trying again in {delay:g} s "
                    f"(attempt {attempt + 1} of {policy.retries + 1})"
                )
                time.sleep(delay)

    # -- deploy ------------------------------------------------------------------------------------

    def deploy(self, to: str | None = None) -> list[Change]:
        """Deploy pending changes (through `to`: a change, `@tag` or `@HEAD^`-style reference)."""
        plan = self.plan
        with self._registry() as reg:
            self._lock(reg)
            position = self._sync_plan(reg, plan)
            if not plan.changes:
                raise DeployError("Nothing to deploy (empty plan)")
            to_index = len(plan) - 1
            if to is not None:
                found = plan.index_of(to)
                if found is None:
                    raise DeployError(f'Unknown change: "{to}"')
                to_index = found
                if to_index == position:
                    self.reporter.info(f'Nothing to deploy (already at "{to}")')
                    return []
            if position == to_index:
                self.reporter.info("Nothing to deploy (up-to-date)")
                return []
            if to_index < position:
                raise DeployError('Cannot deploy to an earlier change; use "revert" instead')
            changes = plan.changes[position + 1 : to_index + 1]
            scripts = {change.id: self.scripts(change) for change in changes}
            # before anything runs: every script we may need exists, every dependency is satisfied
            for change in changes:
                for path in (scripts[change.id].deploy, scripts[change.id].revert):
                    if not path.is_file():
                        raise ScriptError(path, "script not found", root=self.project_dir)
            resolved = self._check_deploy_dependencies(reg, plan, changes)
            if position == -1:
                if reg.initialized():
                    self._upgrade(reg)
                else:
                    self.reporter.info(f"Adding registry tables to {self.destination}")
                    reg.initialize()
                reg.register_project(plan.project, plan.uri)
            else:
                self._upgrade(reg)
            through = f" through {plan.change_at(to_index).format_name_with_tags}" if to is not None else ""
            self.reporter.info(f"Deploying changes{through} to {self.destination}")
            start = plan.change_at(position).format_name_with_tags if position >= 0 else None
            return self._deploy_changes(reg, changes, scripts, resolved, start)

    def _sync_plan(self, reg: Registry, plan: Plan) -> int:
        """Engine.pm `_sync_plan`: the plan index of the deployed head (-1: none), recording tags
        planned after the head was deployed."""
        if reg.initialized():
            version = reg.version()
            if version > REGISTRY_RELEASE:
                raise DeployError(f"Registry version is {version} but {REGISTRY_RELEASE} is the latest known")
            if version < 1.0:
                self._upgrade(reg)  # before 1.0 there is no script_hash column to read
        state = reg.current_state(plan.project)
        if state is None:
            return -1
        index = plan.index_of(state.id)
        if index is None:
            raise DeployError(
                f"Cannot find change {state.id} ({state.format_name_with_tags}) in {self._plan_name}"
            )
        if state.script_hash == state.id:
            reg.update_script_hashes(
                plan.project,
                [(change.id, script_hash(self.scripts(change).deploy)) for change in plan.changes],
            )
        head = plan.change_at(index)
        if head.tags:
            reg.log_new_tags(subject_of(head), tag_rows_of(head))
        return index

    def _dependency_plan_id(self, plan: Plan, dep: Dependency) -> str | None:
        """Depend.pm `id`: the planned change a dependency of this project names."""
        if dep.id is not None:
            return dep.id
        if dep.project is None or dep.project != plan.project:
            return None
        change = plan.find(dep.key_name)
        if change is None:
            raise DeployError(f'Unable to find change "{dep.key_name}" in plan {self._plan_name}')
        return change.id

    def _deployed_id(self, reg: Registry, plan: Plan, dep: Dependency, plan_id: str | None) -> str | None:
        """Engine.pm `change_id_for_depend`: the deployed change a dependency resolves to."""
        ids = reg.change_ids_for(
            dep.project or plan.project, change_id=plan_id, change=dep.change, tag=dep.tag
        )
        return ids[0] if ids else None

    def _check_deploy_dependencies(
        self, reg: Registry, plan: Plan, changes: Sequence[Change]
    ) -> dict[tuple[str, int], str]:
        """Engine.pm `check_deploy_dependencies`; returns the change id each requirement resolves to."""
        seen: set[str] = set()
        conflicts: list[str] = []
        missing: list[str] = []
        resolved: dict[tuple[str, int], str] = {}
        for change in changes:
            for dep in change.conflicts:
                plan_id = self._dependency_plan_id(plan, dep)
                if (plan_id is not None and plan_id in seen) or self._deployed_id(reg, plan, dep, plan_id):
                    conflicts.append(dep.as_string)
            for number, dep in enumerate(change.requires):
                plan_id = self._dependency_plan_id(plan, dep)
                found = plan_id if plan_id is not None and plan_id in seen else None
                found = found or self._deployed_id(reg, plan, dep, plan_id)
                if found is None:
                    missing.append(dep.as_string)
                else:
                    resolved[(change.id, number)] = found
            seen.add(change.id)
        messages: list[str] = []
        if conflicts:
            unique = list(dict.fromkeys(conflicts))
            label = "change" if len(unique) == 1 else "changes"
            messages.append(f"Conflicts with previously deployed {label}: {' '.join(unique)}")
        if missing:
            unique = list(dict.fromkeys(missing))
            label = "change" if len(unique) == 1 else "changes"
            messages.append(f"Missing required {label}: {' '.join(unique)}")
        if messages:
            raise DeployError("; ".join(messages))
        already = reg.are_deployed([change.id for change in changes])
        if already:
            by_id = {change.id: change for change in changes}
            names = ", ".join(f"{by_id[i].format_name_with_tags} ({i})" for i in already)
            raise DeployError(f"Changes have already been deployed: {names}")
        return resolved

    def _deploy_changes(
        self,
        reg: Registry,
        changes: Sequence[Change],
        scripts: Mapping[str, Scripts],
        resolved: Mapping[tuple[str, int], str],
        start: str | None,
    ) -> list[Change]:
        """`_deploy_all` / `_deploy_by_tag` / `_deploy_by_change`, by the configured deploy.mode."""
        mode = self.mode
        deployed: list[Change] = []
        run: list[Change] = []  # what a failure reverts
        for change in changes:
            try:
                self._deploy_change(reg, change, scripts[change.id], resolved)
            except DeployError as failure:
                if mode == "change":
                    raise
                self._rollback(reg, run, scripts, start, failure)
                raise
            deployed.append(change)
            run.append(change)
            if mode == "tag" and change.tags:
                run = []
                start = change.format_name_with_tags
        return deployed

    def _rollback(
        self,
        reg: Registry,
        run: Sequence[Change],
        scripts: Mapping[str, Scripts],
        start: str | None,
        failure: DeployError,
    ) -> None:
        if not run:
            return
        self.reporter.info(f"Reverting to {start}" if start else "Reverting all changes")
        try:
            for change in reversed(run):
                self._revert_change(reg, subject_of(change), scripts[change.id], change.format_name_with_tags)
        except DeployError as exc:
            raise DeployError(
                f"{failure}; reverting the run failed too ({exc}): the schema needs manual repair"
            ) from exc

    def _deploy_change(
        self, reg: Registry, change: Change, scripts: Scripts, resolved: Mapping[tuple[str, int], str]
    ) -> None:
        """Engine.pm `deploy_change`."""
        subject = subject_of(change)
        name = change.format_name_with_tags
        reg.begin_work()
        try:
            self._run(scripts.deploy)
        except DeployError:
            reg.finish_work()
            reg.log_fail_change(subject)
            self.reporter.step("deploy", name, ok=False)
            raise
        try:
            if self.verify_on_deploy:
                self._verify_script(scripts.verify)
            dependencies = [
                DependencyRow("require", dep.as_string, resolved[(change.id, number)])
                for number, dep in enumerate(change.requires)
            ] + [DependencyRow("conflict", dep.as_string, None) for dep in change.conflicts]
            reg.log_deploy_change(subject, script_hash(scripts.deploy), dependencies, tag_rows_of(change))
        except (DeployError, psycopg.Error) as exc:
            # verify or logging failed: undo this change with its own revert script, as sqitch does
            reg.rollback_work()
            reg.begin_work()
            try:
                self._run(scripts.revert)
            except DeployError as revert_error:
                self.reporter.warn(str(revert_error))
            reg.finish_work()
            reg.log_fail_change(subject)
            self.reporter.step("deploy", name, ok=False)
            if isinstance(exc, psycopg.Error):
                raise DeployError(f"cannot record {change.name} in the registry: {one_line(exc)}") from exc
            raise
        reg.finish_work()
        self.reporter.step("deploy", name, ok=True)

    def _verify_script(self, path: Path) -> None:
        if path.exists():
            self._run(path)
        else:
            self.reporter.warn(f"Verify script {display_path(path, self.project_dir)} does not exist")

    # -- revert ------------------------------------------------------------------------------------

    def revert(
        self, to: str | None = None, *, confirm: Callable[[str], bool] | None = None
    ) -> list[DeployedChange]:
        """Revert every deployed change after `to` (all of them when None); newest first.

        `confirm` is asked the question sqitch asks; None reverts without asking (sqitch -y).
        """
        plan = self.plan
        with self._registry() as reg:
            self._check_registry(reg)
            self._lock(reg)
            if to is not None:
                target = self._change_for_key(reg, plan, to)
                if target is None:
                    if plan.find(to) is not None:
                        raise DeployError(f'Change not deployed: "{to}"')
                    raise DeployError(f'Unknown change: "{to}"')
                changes = reg.deployed_changes(plan.project, since_id=target.id)
                if not changes:
                    self.reporter.info(f'No changes deployed since: "{to}"')
                    return []
                heading = f"Reverting changes to {target.format_name_with_tags} from {self.destination}"
                question = f"Revert changes to {target.format_name_with_tags} from {self.destination}?"
            else:
                changes = reg.deployed_changes(plan.project)
                if not changes:
                    self.reporter.info("Nothing to revert (nothing deployed)")
                    return []
                heading = f"Reverting all changes from {self.destination}"
                question = f"Revert all changes from {self.destination}?"
            if confirm is not None and not confirm(question):
                raise DeployError("Nothing reverted")
            scripts = self._deployed_scripts(plan, changes)
            changes.reverse()
            self._check_revert_dependencies(reg, plan, changes)
            for change in changes:
                if not scripts[change.id].revert.is_file():
                    raise ScriptError(scripts[change.id].revert, "script not found", root=self.project_dir)
            self.reporter.info(heading)
            for change in changes:
                self._revert_change(
                    reg, deployed_subject_of(change), scripts[change.id], change.format_name_with_tags
                )
            return changes

    def _change_for_key(self, reg: Registry, plan: Plan, key: str) -> DeployedChange | None:
        """Engine.pm `change_for_key`: a deployed change by name, `name@tag`, `@tag`, id, HEAD/ROOT,
        with an optional `^`/`~` offset counted in deploy order."""
        key, offset = parse_offset(key)
        name, _, tag = key.partition("@")
        if tag and tag != "0":
            ids = reg.change_ids_for(plan.project, change=name or None, tag=tag)
        elif _SHA1_RE.match(name):
            ids = reg.change_ids_for(plan.project, change_id=name)
        elif name in ("HEAD", "ROOT"):
            ids = reg.change_ids_for(plan.project, tag=name)
        else:
            ids = reg.change_ids_for(plan.project, change=name)
        if len(ids) > 1:
            names = []
            for change_id in reversed(ids):
                planned = plan.find(change_id)
                names.append(planned.format_tag_qualified_name if planned else change_id)
            raise DeployError(
                f'Change "{key}" is ambiguous. Please specify a tag-qualified change: {", ".join(names)}'
            )
        if not ids:
            return None
        return reg.load_change(ids[0], offset, plan.project)

    def _deployed_scripts(self, plan: Plan, changes: Sequence[DeployedChange]) -> dict[str, Scripts]:
        """Script files of deployed changes (oldest first), rework suffixes included."""
        tags = deployed_rework_tags(plan, changes)
        return {
            change.id: self.layout.scripts(change.name, names)
            for change, names in zip(changes, tags, strict=True)
        }

    def _check_revert_dependencies(
        self, reg: Registry, plan: Plan, changes: Sequence[DeployedChange]
    ) -> None:
        seen: set[str] = set()
        messages: list[str] = []
        for change in changes:
            seen.add(change.id)
            requiring = [row for row in reg.changes_requiring(change.id) if row.change_id not in seen]
            if not requiring:
                continue
            names = " ".join(
                ("" if row.project == plan.project else f"{row.project}:") + row.change + (row.asof_tag or "")
                for row in requiring
            )
            label = "change" if len(requiring) == 1 else "changes"
            messages.append(
                f'Change "{change.format_name_with_tags}" required by currently deployed {label}: {names}'
            )
        if messages:
            raise DeployError("; ".join(messages))

    def _revert_change(self, reg: Registry, subject: EventSubject, scripts: Scripts, name: str) -> None:
        """Engine.pm `revert_change`."""
        reg.begin_work()
        try:
            self._run(scripts.revert)
        except DeployError:
            reg.finish_work()
            self.reporter.step("revert", name, ok=False)
            raise
        try:
            reg.log_revert_change(subject)
        except psycopg.Error as exc:
            reg.rollback_work()
            self.reporter.step("revert", name, ok=False)
            raise DeployError(f"Revert failed: cannot update the registry: {one_line(exc)}") from exc
        reg.finish_work()
        self.reporter.step("revert", name, ok=True)

    # -- verify, status, log -----------------------------------------------------------------------

    def verify(self) -> VerifyReport:
        """Engine.pm `verify`: run every deployed change's verify script, check order against the plan.

        Raises VerifyFailed (with the report) when anything is wrong.
        """
        plan = self.plan
        with self._registry() as reg:
            self._check_registry(reg)
            changes = reg.deployed_changes(plan.project)
            self.reporter.info(f"Verifying {self.destination}")
            if not changes:
                self.reporter.info("No changes deployed" if plan.changes else "Nothing to verify")
                return VerifyReport([], [])
            if not plan.changes:
                raise DeployError("There are deployed changes, but none planned!")
            latest = plan.index_of(changes[-1].id)
            to_index = len(plan) - 1 if latest is None else latest
            scripts = self._deployed_scripts(plan, changes)
        results: list[VerifyResult] = []
        planned_seen: set[int] = set()
        for number, change in enumerate(changes):
            reasons: list[str] = []
            reworked = False
            index = plan.index_of(change.id)
            if index is None:
                reasons.append("Not present in the plan")
            else:
                planned_seen.add(index)
                if index != number:
                    reasons.append("Out of order")
                # an older instance of a reworked change is not verified: its successor replaced it
                reworked = plan.change_at(index).is_reworked
            if not reworked:
                try:
                    self._verify_script(scripts[change.id].verify)
                except DeployError as exc:
                    reasons.append(str(exc))
            results.append(VerifyResult(change.format_name_with_tags, not reasons, "; ".join(reasons)))
        for index in range(to_index + 1):
            if index not in planned_seen:
                results.append(
                    VerifyResult(plan.change_at(index).format_name_with_tags, False, "Not deployed")
                )
        report = VerifyReport(
            results, [change.format_name_with_tags for change in plan.changes[to_index + 1 :]]
        )
        if not report.ok:
            raise VerifyFailed(report)
        return report

    def status(self) -> Status:
        """The deployed head of this project and the planned changes not deployed yet."""
        plan = self.plan
        with self._registry() as reg:
            head = reg.current_state(plan.project)
        if head is None:
            return Status(plan.project, self.destination, None, list(plan.changes))
        index = plan.index_of(head.id)
        if index is None:
            raise DeployError(
                f"Cannot find the deployed change {head.format_name_with_tags} ({head.id}) in "
                f"{self._plan_name}; is this the right database for the project?"
            )
        return Status(plan.project, self.destination, head, plan.changes[index + 1 :])

    def log(self, project: str | None = None, limit: int | None = None) -> list[Event]:
        """The registry's events, newest first (every project's, as `sqitch log`, unless `project`)."""
        with self._registry() as reg:
            return reg.events(project, limit)
