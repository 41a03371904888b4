"""How many cores this process may really use: its CPU affinity, within a cgroup's quota.

`os.cpu_count()` counts the host's cores; a container given two CPUs (`--cpus 2`, a
Kubernetes limit) or pinned to some (`taskset`, cpusets) may use fewer. Workers size
ONNX Runtime's intra-op threads by this, and node agents report it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["usable_cores"]

_CGROUP = Path("/sys/fs/cgroup")


def usable_cores() -> int:
    """The cores this process may run on, bounded by its cgroup's CPU quota; at least 1."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    quota = cpu_quota()
    if quota is not None:
        cores = min(cores, math.ceil(quota))
    return max(1, cores)


def cpu_quota(root: Path = _CGROUP) -> float | None:
    """The CPUs a cgroup lets this process use (cgroup v2 `cpu.max`, else v1's CFS quota);
    None when unlimited or unknown."""
    try:
        limit, period = (root / "cpu.max").read_text().split()[:2]
        return None if limit == "max" else int(limit) / int(period)
    except (OSError, ValueError):
        pass
    try:
        limit_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return limit_us / period_us if limit_us > 0 and period_us > 0 else None
