"""What the registry is told about a change: event subjects and tag rows from the plan or from
the registry itself, and the rework tags that locate a deployed change's `name@tag.sql` scripts."""

from __future__ import annotations

from collections.abc import Sequence

from commercecore.deploy.model import Change, Plan
from commercecore.deploy.registry import DeployedChange, EventSubject, TagRow


def subject_of(change: Change) -> EventSubject:
    return EventSubject(
        id=change.id,
        name=change.name,
        project=change.project,
        note=change.note,
        planned_at=change.timestamp,
        planner_name=change.planner_name,
        planner_email=change.planner_email,
        tags=[tag.format_name for tag in change.tags],
        requires=[dep.as_string for dep in change.requires],
        conflicts=[dep.as_string for dep in change.conflicts],
    )


def deployed_subject_of(change: DeployedChange) -> EventSubject:
    # tags and dependencies of a revert event come from the registry rows being deleted
    return EventSubject(
        id=change.id,
        name=change.name,
        project=change.project,
        note=change.note,
        planned_at=change.planned_at,
        planner_name=change.planner_name,
        planner_email=change.planner_email,
        tags=list(change.tags),
        requires=[],
        conflicts=[],
    )


def tag_rows_of(change: Change) -> list[TagRow]:
    return [
        TagRow(tag.id, tag.format_name, tag.note, tag.timestamp, tag.planner_name, tag.planner_email)
        for tag in change.tags
    ]


def deployed_rework_tags(plan: Plan, changes: Sequence[DeployedChange]) -> list[list[str]]:
    """Engine.pm `_load_changes`: the rework tags (names, newest first) of each deployed change, from
    later deployed instances of the same name and from the plan, so reverts find `name@tag.sql`."""
    slots: dict[int, list[list[str]]] = {}
    seen: dict[str, int] = {}
    for index, change in enumerate(changes):
        previous = seen.get(change.name)
        if previous is not None:
            bucket = slots.setdefault(previous, [])
            for slot, earlier in enumerate(changes[previous:index]):
                while len(bucket) <= slot:
                    bucket.append([])
                known = set(bucket[slot])
                stored = [tag.removeprefix("@") for tag in earlier.tags]  # the registry keeps `@v1.0`
                bucket[slot].extend(name for name in stored if name not in known)
        plan_index = plan.index_of(change.id)
        reworked_index = plan.first_index_of(change.name, change.id) if plan_index is not None else None
        if plan_index is not None and reworked_index is not None:
            bucket = slots.setdefault(index, [])
            for slot, planned in enumerate(plan.changes[plan_index:reworked_index]):
                while len(bucket) <= slot:
                    bucket.append([])
                bucket[slot].extend(tag.name for tag in planned.tags)
        seen[change.name] = index
    result: list[list[str]] = []
    for index in range(len(changes)):
        names: list[str] = []
        for slot_names in reversed(slots.get(index, [])):
            names.extend(name for name in slot_names if name not in names)
        result.append(names)
    return result
