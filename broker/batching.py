"""When a forming batch should run: a pure decision, tested by table.

full              run now (max_size reached)
preferred size    run now when nothing more waits locally (Triton's preferred sizes)
nothing pending   run now: the server said no call waits behind the last one, so
                  waiting would only add latency (under load, calls queue behind the
                  running batch and the next batch fills by itself)
otherwise         wait for more, until `max_delay_s` after the first call arrived
"""

from __future__ import annotations

__all__ = ["batch_wait_s"]


def batch_wait_s(
    size: int,
    *,
    max_size: int,
    waited_s: float,
    max_delay_s: float,
    server_pending: int,
    queued: int,
    preferred: tuple[int, ...] = (),
) -> float:
    """Seconds to wait for more calls before running a batch of `size` (0: run it now)."""
    if size >= max_size:
        return 0.0
    if queued == 0 and (size in preferred or server_pending == 0):
        return 0.0
    return max(0.0, max_delay_s - waited_s)
