"""A sqitch-compatible deployer: sqitch.plan parsing, the sqitch registry, deploy/revert/verify."""

from commercecore.deploy.engine import Deployer
from commercecore.deploy.errors import DeployError, PlanError, ScriptError
from commercecore.deploy.model import Change, Dependency, Plan, Tag
from commercecore.deploy.plan import load_plan, parse_plan
from commercecore.deploy.reports import Reporter, Status, VerifyFailed, VerifyReport, VerifyResult

__all__ = [
    "Change",
    "Dependency",
    "DeployError",
    "Deployer",
    "Plan",
    "PlanError",
    "Reporter",
    "ScriptError",
    "Status",
    "Tag",
    "VerifyFailed",
    "VerifyReport",
    "VerifyResult",
    "load_plan",
    "parse_plan",
]
