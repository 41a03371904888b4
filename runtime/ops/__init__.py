"""Operating Autan: the `autan` command, deploy, dead letters, the long-running stacks.

The composition root: it may import every other room, and nothing imports it.
"""

from runtime.ops.deploy import (
    DeployResult,
    deploy_app,
    deploy_target,
    discover_apps,
    package,
)
from runtime.ops.dlq import DeadLetters, Letter
from runtime.ops.stack import make_buckets

__all__ = [
    "DeadLetters",
    "DeployResult",
    "Letter",
    "deploy_app",
    "deploy_target",
    "discover_apps",
    "make_buckets",
    "package",
]
