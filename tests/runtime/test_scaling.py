"""The scaling decision, by table."""

from __future__ import annotations

import pytest

from runtime.control.decision import (
    STALL_S,
    FunctionLoad,
    PeakWindow,
    decide,
    target_workers,
    wanted_workers,
)
from runtime.core import Scaling

POLICY = Scaling(min_warm=0, max_workers=4, target_backlog=16, keep_warm_s=60)
WARM = Scaling(min_warm=1, max_workers=4, target_backlog=16, keep_warm_s=60)


@pytest.mark.parametrize(
    ("load", "policy", "peak", "desired", "reason"),
    [
        # activation from zero when anything waits
        (FunctionLoad(backlog=1, waiting=1), POLICY, 1, 1, "activate"),
        # with no worker, calls held by a departing worker do not count...
        (FunctionLoad(backlog=1, waiting=0, departing=1), POLICY, 0, 0, "steady"),
        # ...but calls handed back for a retry, with no worker left, do
        (FunctionLoad(backlog=1, waiting=0), POLICY, 1, 1, "activate"),
        (FunctionLoad(backlog=0), POLICY, 0, 0, "steady"),
        # one worker per target_backlog waiting calls, up to max_workers, in one step
        (FunctionLoad(backlog=40, waiting=40), POLICY, 3, 3, "activate"),
        (FunctionLoad(backlog=40, idle=1), POLICY, 3, 3, "burst"),
        (FunctionLoad(backlog=2000, busy=1), POLICY, 4, 4, "burst"),
        (FunctionLoad(backlog=16, busy=1), POLICY, 1, 1, "steady"),
        (FunctionLoad(backlog=17, busy=1), POLICY, 2, 2, "burst"),
        # starting workers count: no second start while one is on its way
        (FunctionLoad(backlog=3, starting=1), POLICY, 1, 1, "steady"),
        (FunctionLoad(backlog=40, starting=3), POLICY, 3, 3, "steady"),
        # no scale-down before keep_warm_s of idleness (the window still holds the peak)
        (FunctionLoad(backlog=0, idle=1), POLICY, 1, 1, "steady"),
        (FunctionLoad(backlog=0, idle=4), POLICY, 4, 4, "steady"),
        # after keep_warm_s idle: to zero, or to min_warm
        (FunctionLoad(backlog=0, idle=1), POLICY, 0, 0, "idle"),
        (FunctionLoad(backlog=0, idle=3), POLICY, 0, 0, "idle"),
        (FunctionLoad(backlog=0, idle=3), WARM, 1, 1, "idle"),
        # never below min_warm
        (FunctionLoad(backlog=0), WARM, 1, 1, "min_warm"),
        (FunctionLoad(backlog=0, idle=1), WARM, 0, 1, "steady"),
        # a lower load scales down only to the window's peak: no flapping
        (FunctionLoad(backlog=5, busy=4), POLICY, 4, 4, "steady"),
        (FunctionLoad(backlog=5, busy=4), POLICY, 2, 2, "idle"),
        # stalled: the oldest call has waited with every worker busy
        (FunctionLoad(backlog=3, waiting=2, oldest_age_s=STALL_S, busy=1), POLICY, 1, 2, "stalled"),
        (FunctionLoad(backlog=3, waiting=2, oldest_age_s=STALL_S, busy=4), POLICY, 4, 4, "steady"),
        (
            FunctionLoad(backlog=3, waiting=2, oldest_age_s=STALL_S, busy=1, idle=1),
            POLICY,
            2,
            2,
            "steady",
        ),
        (
            FunctionLoad(backlog=3, waiting=2, oldest_age_s=STALL_S, busy=1, starting=1),
            POLICY,
            2,
            2,
            "steady",
        ),
        # a long call in progress, none waiting: not a stall
        (FunctionLoad(backlog=1, waiting=0, oldest_age_s=30.0, busy=1), POLICY, 1, 1, "steady"),
        # the worker added for a stall stays for the window, then goes
        (FunctionLoad(backlog=3, busy=1, idle=1), POLICY, 2, 2, "steady"),
        (FunctionLoad(backlog=3, busy=1, idle=1), POLICY, 1, 1, "idle"),
    ],
)
def test_decide(load: FunctionLoad, policy: Scaling, peak: int, desired: int, reason: str) -> None:
    decision = decide(load, policy, recent_peak=peak)
    assert (decision.desired, decision.reason.split(":")[0]) == (desired, reason)


@pytest.mark.parametrize(
    ("backlog", "policy", "wanted"),
    [(0, POLICY, 0), (1, POLICY, 1), (16, POLICY, 1), (33, POLICY, 3), (10**6, POLICY, 4),
     (0, WARM, 1)],
)  # fmt: skip
def test_wanted_workers(backlog: int, policy: Scaling, wanted: int) -> None:
    assert wanted_workers(backlog, policy) == wanted


def test_peak_window_forgets_after_the_window() -> None:
    window = PeakWindow(10.0)
    assert window.record(0.0, 3) == 3
    assert window.record(1.0, 1) == 3
    assert window.record(9.9, 0) == 3
    assert window.record(10.5, 0) == 1
    assert window.record(11.5, 0) == 0
    assert window.record(12.0, 2) == 2


def test_noisy_backlog_does_not_flap() -> None:
    """A backlog swinging between 0 and 40 keeps 3 workers instead of stopping and starting."""
    window = PeakWindow(POLICY.keep_warm_s)
    workers = 0
    history = []
    for tick in range(200):
        backlog = 40 if tick % 7 == 0 else 0
        load = FunctionLoad(backlog=backlog, waiting=backlog, idle=workers)
        peak = window.record(tick * 0.5, target_workers(load, POLICY)[0])
        workers = decide(load, POLICY, recent_peak=peak).desired
        history.append(workers)
    assert history[0] == 3
    assert set(history) == {3}
