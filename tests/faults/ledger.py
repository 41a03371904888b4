"""The ledger of a fault case: what was accepted, what came of it, what ran how often.

lost = accepted - (completed + dead-lettered)      must be empty
duplicate results: a call id with two visible outcomes (a success and a dead letter)
duplicate executions: a completed call that started more than once (allowed only for
calls in flight at a fault; the retries of a dead-lettered call are attempts)
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import msgspec

from broker import BrokerUnavailable, PublishRejected, QueueFull
from runtime import RemoteError
from runtime.client import BatchedFunction, Function, Session
from runtime.ops import DeadLetters, Letter


class Report(msgspec.Struct, frozen=True):
    accepted: int
    refused: int
    completed: int
    dead_lettered: int
    lost: int
    duplicate_results: int
    duplicate_executions: int

    def line(self, case: str) -> str:
        return (
            f"{case:<28} accepted {self.accepted:>4}  refused {self.refused:>4}  completed "
            f"{self.completed:>4}  dead-lettered {self.dead_lettered:>3}  lost {self.lost}  "
            f"duplicate results {self.duplicate_results}  duplicate executions "
            f"{self.duplicate_executions}"
        )


class Ledger:
    """Calls accepted by JetStream (spawn returned) and what became of each."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.accepted: list[str] = []
        self.refused = 0

    async def spawn(
        self, handle: Function[Any, Any] | BatchedFunction[Any, Any], *args: Any
    ) -> bool:
        try:
            call = await handle.spawn.aio(*args)
        except (BrokerUnavailable, QueueFull, PublishRejected):
            self.refused += 1
            return False
        self.accepted.append(call.id)
        return True

    def executions(self, event: str = "start") -> Counter[str]:
        if not self.log_path.exists():
            return Counter()
        lines = self.log_path.read_text().splitlines()
        return Counter(line.split()[1] for line in lines if line.startswith(event + " "))

    def busy_pids(self) -> list[int]:
        """Workers running a call now: its start is logged, its end not yet."""
        running: dict[tuple[str, str], int] = {}
        lines = self.log_path.read_text().splitlines() if self.log_path.exists() else []
        for line in lines:
            event, call_id, attempt, pid, _ = line.split()
            if event == "start":
                running[call_id, attempt] = int(pid)
            elif event == "end":
                running.pop((call_id, attempt), None)
        return sorted(set(running.values()))

    async def settle(self, session: Session, timeout_s: float = 90) -> Report:
        """Wait for every accepted call's outcome (or the deadline), then count."""
        completed: set[str] = set()
        failed: set[str] = set()
        with anyio.move_on_after(timeout_s):
            for call_id in self.accepted:
                while True:
                    try:
                        await session.result(call_id, timeout_s)
                        completed.add(call_id)
                    except RemoteError:
                        failed.add(call_id)
                    except BrokerUnavailable:  # a NATS cluster electing a leader: ask again
                        await anyio.sleep(0.5)
                        continue
                    break
        letters = {item.letter.call_id for item in await _dead_letters(session)}
        mine = set(self.accepted)
        executions = self.executions()
        return Report(
            accepted=len(mine),
            refused=self.refused,
            completed=len(completed),
            dead_lettered=len(failed & letters),
            lost=len(mine - completed - (failed & letters)),
            duplicate_results=len(completed & letters),
            # Over completed calls: a dead letter's attempts are retries, not duplicates.
            duplicate_executions=sum(1 for c in completed if executions[c] > 1),
        )


async def _dead_letters(session: Session, timeout_s: float = 30) -> list[Letter]:
    """Every dead letter, asking again while a NATS cluster elects the dead-letter stream's
    leader (it may have been on the node a test killed)."""
    with anyio.fail_after(timeout_s):
        while True:
            try:
                return await DeadLetters(session.broker).list()
            except BrokerUnavailable:
                await anyio.sleep(0.5)
