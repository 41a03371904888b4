"""What a worker counts of its calls, for the control plane's per-function metrics: calls,
failed attempts by error type, run times and queue waits (time from publish to run)."""

from __future__ import annotations

import bisect

from runtime.core import DURATION_BUCKETS_MS, CallCounts
from runtime.worker.invocations import Outcome

__all__ = ["CallStats"]

_ERROR_TYPES = 16  # distinct error types counted by name; the rest as "other"


class CallStats:
    """Counts, cumulative since the worker started; `snapshot` for its heartbeat."""

    def __init__(self) -> None:
        self.calls = 0
        self.errors: dict[str, int] = {}
        self.run_ms = [0] * (len(DURATION_BUCKETS_MS) + 1)
        self.run_ms_sum = 0.0
        self.wait_ms = [0] * (len(DURATION_BUCKETS_MS) + 1)
        self.wait_ms_sum = 0.0

    def record(
        self, outcome: Outcome, created_unix_s: float, now_unix_s: float, count: int = 1
    ) -> None:
        """One call's outcome (or `count` calls' alike: a batch's); `created_unix_s`: when
        its caller published it (0: unknown)."""
        self.calls += count
        if outcome.error is not None:
            name = outcome.error.type
            if name not in self.errors and len(self.errors) >= _ERROR_TYPES:
                name = "other"
            self.errors[name] = self.errors.get(name, 0) + count
        self.run_ms[bisect.bisect_left(DURATION_BUCKETS_MS, outcome.run_ms)] += count
        self.run_ms_sum += outcome.run_ms * count
        if created_unix_s > 0:
            started = now_unix_s - outcome.run_ms / 1000
            wait = max(0.0, (started - created_unix_s) * 1000)
            self.wait_ms[bisect.bisect_left(DURATION_BUCKETS_MS, wait)] += count
            self.wait_ms_sum += wait * count

    def snapshot(self) -> CallCounts:
        return CallCounts(
            calls=self.calls,
            errors=dict(self.errors),
            run_ms=tuple(self.run_ms),
            run_ms_sum=round(self.run_ms_sum, 3),
            wait_ms=tuple(self.wait_ms),
            wait_ms_sum=round(self.wait_ms_sum, 3),
        )
