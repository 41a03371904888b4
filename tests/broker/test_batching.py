"""Batch formation, by table."""

from __future__ import annotations

import pytest

from broker.batching import batch_wait_s


@pytest.mark.parametrize(
    ("size", "waited_s", "server_pending", "queued", "preferred", "wait_s"),
    [
        (32, 0.0, 100, 50, (), 0.0),  # full: runs at once
        (40, 0.0, 100, 50, (), 0.0),
        (1, 0.0, 0, 0, (), 0.0),  # a lone call at low load: no waiting
        (1, 0.0, 5, 0, (), 0.005),  # more are stored: wait for them
        (1, 0.0, 0, 3, (), 0.005),  # more arrived locally: wait (they will be taken)
        (3, 0.002, 5, 0, (), 0.003),  # partial batch: wait out the rest of the delay
        (3, 0.005, 5, 0, (), 0.0),  # delay spent: run the partial batch
        (3, 0.009, 5, 0, (), 0.0),
        (8, 0.0, 5, 0, (8, 16), 0.0),  # a preferred size with nothing queued: run
        (8, 0.0, 5, 2, (8, 16), 0.005),  # a preferred size but more queued: keep filling
        (9, 0.0, 5, 0, (8, 16), 0.005),
    ],
)
def test_batch_wait(
    size: int,
    waited_s: float,
    server_pending: int,
    queued: int,
    preferred: tuple[int, ...],
    wait_s: float,
) -> None:
    got = batch_wait_s(
        size,
        max_size=32,
        waited_s=waited_s,
        max_delay_s=0.005,
        server_pending=server_pending,
        queued=queued,
        preferred=preferred,
    )
    assert got == pytest.approx(wait_s)
