"""Where a sqitch project keeps its plan and scripts (App::Sqitch::Target), and each change's files.

Directories come from sqitch.conf (`engine.pg.<key>`, then `core.<key>`) and, like sqitch, relative ones
are taken from the directory sqitch runs in (the project directory), not from `top_dir`. Note sqitch's
default for reworked scripts: `reworked_deploy_dir` is `<reworked_dir>/deploy` (reworked_dir defaults to
top_dir) even when `deploy_dir` is `.`, so with `deploy_dir = .` an old deploy script lives at
`deploy/<name>@<tag>.sql` unless `reworked_deploy_dir` is configured.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from commercecore.deploy.config import SqitchConfig
from commercecore.deploy.errors import DeployError
from commercecore.deploy.plan import Change

DEFAULT_REGISTRY = "sqitch"
MODES = ("all", "tag", "change")


@dataclass(frozen=True)
class Scripts:
    """The three script files of one change instance."""

    deploy: Path
    revert: Path
    verify: Path


@dataclass(frozen=True)
class Project:
    """A sqitch project on disk, as sqitch's pg target sees it."""

    project_dir: Path
    config: SqitchConfig
    top_dir: Path
    plan_file: Path
    deploy_dir: Path
    revert_dir: Path
    verify_dir: Path
    reworked_deploy_dir: Path
    reworked_revert_dir: Path
    reworked_verify_dir: Path
    extension: str
    registry: str
    verify_on_deploy: bool
    mode: str

    @classmethod
    def load(
        cls, project_dir: Path, plan_file: Path | None = None, env: Mapping[str, str] | None = None
    ) -> Project:
        config = SqitchConfig.load(project_dir, env)

        def directory(key: str, default: Path) -> Path:
            value = config.engine_value(key)
            return project_dir / value if value else default

        top_dir = directory("top_dir", project_dir)
        reworked_dir = directory("reworked_dir", top_dir)
        mode = config.get("deploy.mode") or "all"
        if mode not in MODES:
            raise DeployError(f'Unknown deployment mode: "{mode}" (deploy.mode in sqitch.conf)')
        return cls(
            project_dir=project_dir,
            config=config,
            top_dir=top_dir,
            plan_file=plan_file if plan_file is not None else directory("plan_file", top_dir / "sqitch.plan"),
            deploy_dir=directory("deploy_dir", top_dir / "deploy"),
            revert_dir=directory("revert_dir", top_dir / "revert"),
            verify_dir=directory("verify_dir", top_dir / "verify"),
            reworked_deploy_dir=directory("reworked_deploy_dir", reworked_dir / "deploy"),
            reworked_revert_dir=directory("reworked_revert_dir", reworked_dir / "revert"),
            reworked_verify_dir=directory("reworked_verify_dir", reworked_dir / "verify"),
            extension=config.engine_value("extension") or "sql",
            registry=config.engine_value("registry") or DEFAULT_REGISTRY,
            verify_on_deploy=bool(config.get_bool("deploy.verify")),
            mode=mode,
        )

    def scripts(self, name: str, rework_tags: Sequence[str] = ()) -> Scripts:
        """Change.pm `path_segments`: a reworked instance takes the first rework tag whose deploy
        script exists (`name@tag.sql`), else the first rework tag; the list runs newest tag first."""
        segments = name.split("/")
        ext = f".{self.extension}"
        if not rework_tags:
            segments[-1] += ext
            return Scripts(
                deploy=self.deploy_dir.joinpath(*segments),
                revert=self.revert_dir.joinpath(*segments),
                verify=self.verify_dir.joinpath(*segments),
            )
        base = segments.pop()
        chosen = f"{base}@{rework_tags[0]}{ext}"
        for tag in rework_tags:
            candidate = f"{base}@{tag}{ext}"
            if self.reworked_deploy_dir.joinpath(*segments, candidate).exists():
                chosen = candidate
                break
        segments.append(chosen)
        return Scripts(
            deploy=self.reworked_deploy_dir.joinpath(*segments),
            revert=self.reworked_revert_dir.joinpath(*segments),
            verify=self.reworked_verify_dir.joinpath(*segments),
        )

    def scripts_for(self, change: Change) -> Scripts:
        return self.scripts(change.name, [tag.name for tag in change.rework_tags])


def script_hash(path: Path) -> str | None:
    """Change.pm `script_hash`: SHA-1 of the deploy script's bytes; None when there is no such file."""
    if not path.is_file():
        return None
    return hashlib.sha1(path.read_bytes(), usedforsecurity=False).hexdigest()
