"""The scaling decision: a pure function from what waits and what runs to how many workers.

    wanted  = ceil(backlog / target_backlog), at least 1 when anything waits
    up      at once to `wanted` (a burst starts every worker it needs in one step),
            plus one when calls still wait undelivered, the oldest `STALL_S` old, every worker taken
    down    only to the highest `wanted` seen over the last `keep_warm_s` (so a noisy
            backlog never flaps), never below `min_warm`; at zero after `keep_warm_s` idle

Workers that are starting count as workers: they are on their way.
"""

from __future__ import annotations

import math
from collections import deque

import msgspec

from runtime.core import Scaling

__all__ = [
    "Decision",
    "FunctionLoad",
    "PeakWindow",
    "decide",
    "target_workers",
    "wanted_workers",
]

# A call older than this, with no worker starting, means the workers cannot keep up.
STALL_S = 1.0


class FunctionLoad(msgspec.Struct, frozen=True, kw_only=True):
    """One function's state at one tick."""

    backlog: int  # calls waiting or running: consumer num_pending + num_ack_pending
    waiting: int = 0  # of which not yet delivered to any worker (num_pending)
    oldest_age_s: float = 0.0  # age of the oldest call not yet finished
    starting: int = 0
    idle: int = 0
    busy: int = 0
    departing: int = 0  # stopping: draining what they hold, not counted as workers

    @property
    def workers(self) -> int:
        return self.starting + self.idle + self.busy


class Decision(msgspec.Struct, frozen=True):
    desired: int
    reason: str


def wanted_workers(backlog: int, policy: Scaling) -> int:
    """Workers the backlog alone asks for, within the policy's bounds."""
    wanted = math.ceil(backlog / policy.target_backlog) if backlog > 0 else 0
    return min(max(wanted, policy.min_warm), policy.max_workers)


def target_workers(load: FunctionLoad, policy: Scaling) -> tuple[int, str]:
    """Workers this tick asks for, and why: the backlog's share, or one more when stalled.

    The scaler records this in a `PeakWindow`; scale-down never goes below its peak.
    """
    current = load.workers
    # With no worker but some going away, calls they hold are theirs to finish.
    backlog = load.waiting if current == 0 and load.departing else load.backlog
    wanted = wanted_workers(backlog, policy)
    if wanted > current and backlog == 0:
        return wanted, f"min_warm: keep {policy.min_warm} warm"
    if wanted > current and current == 0:
        return wanted, f"activate: {backlog} waiting, no worker"
    if wanted > current:
        return wanted, f"burst: backlog {backlog} wants {wanted} workers"
    if _stalled(load, policy, current):
        return current + 1, (
            f"stalled: oldest call waited {load.oldest_age_s:.1f} s with {current} busy"
        )
    return wanted, "steady"


def decide(load: FunctionLoad, policy: Scaling, *, recent_peak: int) -> Decision:
    """How many workers the function should have now, and why.

    `recent_peak` is the highest `target_workers` over the last `keep_warm_s`, this
    tick's included (see `PeakWindow`).
    """
    current = load.workers
    target, reason = target_workers(load, policy)
    if target > current:
        return Decision(target, reason)
    floor = max(policy.min_warm, min(recent_peak, policy.max_workers), target)
    if floor < current:
        return Decision(floor, f"idle: peak {recent_peak} over the last {policy.keep_warm_s:g} s")
    if current < policy.min_warm:
        return Decision(policy.min_warm, f"min_warm: keep {policy.min_warm} warm")
    return Decision(current, "steady")


def _stalled(load: FunctionLoad, policy: Scaling, current: int) -> bool:
    # Only calls not yet delivered count: a long call in progress is not a stall.
    return (
        load.waiting > 0
        and load.oldest_age_s >= STALL_S
        and load.starting == 0
        and load.idle == 0
        and 0 < current < policy.max_workers
    )


class PeakWindow:
    """The highest value recorded over a sliding window of time (monotonic deque)."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._samples: deque[tuple[float, int]] = deque()

    def record(self, now: float, value: int) -> int:
        """Add `value` at time `now`; return the window's peak, `value` included."""
        while self._samples and self._samples[-1][1] <= value:
            self._samples.pop()
        self._samples.append((now, value))
        while self._samples[0][0] < now - self.window_s:
            self._samples.popleft()
        return self._samples[0][1]
