"""A sqitch-compatible deployer: sqitch.plan parsing, the sqitch registry, deploy/revert/verify."""

from gateway.deploy.engine import Deployer
from gateway.deploy.errors import DeployError, PlanError, ScriptError
from gateway.deploy.model import Change, Dependency, Plan, Tag
from gateway.deploy.plan import load_plan, parse_plan
from gateway.deploy.reports import Reporter, Status, VerifyFailed, VerifyReport, VerifyResult

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
