"""The short commands: deploy, invoke, ls, status, trigger replay."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from broker import STATUS_BUCKET, BrokerUnavailable
from runtime.client import Session
from runtime.control import FunctionStatus, read_statuses
from runtime.core import (
    ADMIN,
    STALE_AFTER_S,
    ArtifactRejected,
    DeployKey,
    FunctionState,
    Link,
    PartReport,
    Settings,
    function_states,
    jetstream_problem,
    read_parts,
    split_qualname,
    storage_problem,
)
from runtime.ops.deploy import deploy_target, discover_apps

__all__ = ["deploy", "invoke", "key", "ls", "replay", "status"]


async def deploy(settings: Settings, target: str) -> int:
    discover_apps(target)  # a path that holds no app is said before connecting anywhere
    settings.load_deploy_key()  # and so is a missing key
    async with await Link.open(settings, name="autan-deploy", role=ADMIN) as link:
        results = await deploy_target(link, target)
    for result in results:
        state = "deployed" if result.changed else "unchanged"
        print(f"{result.qualname}  {result.version}  {state}  {result.uploaded_bytes} bytes sent")
    return 0


def key(settings: Settings, command: str, path: Path | None) -> int:
    """`autan key public` (the deploy key in use) and `autan key new PATH`."""
    if command == "new" and path is not None:
        made = DeployKey.create(path)
        print(made.public)
        print(f"# written to {path}; trust it where workers run: AUTAN_TRUSTED_KEYS={made.public}")
        return 0
    print(settings.load_deploy_key().public)
    return 0


async def invoke(
    settings: Settings,
    qualname: str,
    value: Any,
    kwargs: dict[str, Any],
    show: Callable[[Any], None],
) -> None:
    """Call `qualname` and `show` its result; a generator's items, each as it comes."""
    app, fn = split_qualname(qualname)
    async with await Session.open(settings, name="autan-invoke") as session:
        spec = await session.registry.get(app, fn)
        if not spec.options.streams:
            show(await session.call(app, fn, (value,), kwargs))
            return
        async for item in session.stream(app, fn, (value,), kwargs):
            show(item)


async def replay(
    settings: Settings, qualname: str, *, since_s: float | None, from_seq: int | None
) -> int:
    """Deliver the past events of a trigger again (at least once, from the given point)."""
    app, fn = split_qualname(qualname)
    async with await Link.open(settings, name="autan-replay", role=ADMIN) as link:
        spec = await link.registry.get(app, fn, cached=False)
        if spec.trigger is None:
            raise ValueError(f"{qualname} has no trigger (on=...): nothing to replay")
        await link.broker.replay(spec.trigger, since_s=since_s, from_seq=from_seq)
    start = f"sequence {from_seq}" if from_seq is not None else f"the last {since_s:g} s"
    print(f"{qualname}: events of {spec.trigger.stream} from {start} will be delivered again")
    return 0


async def ls(settings: Settings, *, as_json: bool = False) -> int:
    """Deployed functions: version, live workers, backlog, the providers they run on."""
    async with await Link.open(settings, name="autan-ls", role=ADMIN) as link:
        states = await function_states(link.broker, await link.registry.all())
        refused = await _refused(link, settings)
    if as_json:
        print(json.dumps({"functions": [_state_row(s, refused) for s in states]}, indent=1))
        return 0
    print(_states_table(states))
    for qualname, reason in sorted(refused.items()):
        print(f"{qualname}: refused: {reason}")
    return 0


async def _refused(link: Link, settings: Settings) -> dict[str, str]:
    """The entries workers will refuse, and why (when this host knows the trusted keys)."""
    try:
        trust = settings.trust()
    except ValueError:
        return {}
    refused = {}
    for key, signed in (await link.registry.all_signed()).items():
        app, fn = split_qualname(key)
        try:
            trust.verify(signed, app, fn)
        except ArtifactRejected as exc:
            refused[key] = str(exc)
    return refused


def _state_row(state: FunctionState, refused: dict[str, str]) -> dict[str, Any]:
    spec = state.spec
    return {
        "function": spec.qualname,
        "version": spec.version,
        "sequence": spec.sequence,
        "deployed_unix_s": spec.deployed_unix_s,
        "backlog": state.backlog,
        "problem": str(state.missing) if state.missing is not None else None,
        "refused": refused.get(spec.qualname),
        "workers": [
            {
                "worker_id": w.worker_id,
                "host": w.host,
                "state": w.state,
                "version": w.version,
                "providers": list(w.providers),
                "isolated": w.isolated,
                "template": w.template,  # "hit", "built" (it waited), "" (loaded itself)
            }
            for w in state.workers
        ],
    }


def _states_table(states: list[FunctionState]) -> str:
    if not states:
        return "nothing deployed: run 'autan deploy PATH' (or 'autan up')"
    lines = [f"{'FUNCTION':<24} {'VERSION':<18} {'WORKERS':>7} {'BACKLOG':>7}  PROVIDERS"]
    for state in states:
        spec = state.spec
        backlog = "?" if state.backlog is None else str(state.backlog)
        providers = sorted({p for w in state.workers for p in w.providers})
        lines.append(
            f"{spec.qualname:<24} {spec.version:<18} {len(state.workers):>7} {backlog:>7}  "
            f"{','.join(providers) or '-'}"
        )
    lines += [f"{s.spec.qualname}: {s.missing}" for s in states if s.missing is not None]
    for state in states:
        if unisolated := sum(not worker.isolated for worker in state.workers):
            lines.append(_unisolated(state.spec.qualname, unisolated))
    return "\n".join(lines)


class PartState(msgspec.Struct, frozen=True):
    """One part of the stack as `autan status` sees it: up, DOWN, or unknown ("?")."""

    part: str
    state: str
    detail: str


async def status(settings: Settings, *, as_json: bool = False) -> int:
    """Which parts are up (NATS, JetStream, control plane, storage, bridge), then per
    function: backlog, oldest age, workers starting/idle/busy, the last decision.
    Exits 1 when a part is down."""
    try:
        link = await Link.open(settings, name="autan-status", role=ADMIN)
    except BrokerUnavailable as exc:
        down = PartState("nats", "DOWN", str(exc))
        unknown = [PartState(part, "?", "behind NATS") for part in ("jetstream", *_REPORTING)]
        return _print_status([down, *unknown], [], as_json=as_json)
    async with link:
        parts = [PartState("nats", "up", settings.nats_url)]
        if problem := await jetstream_problem(link.broker, STATUS_BUCKET, _PROBE_KEY):
            parts.append(PartState("jetstream", "DOWN", problem))
            parts += [PartState(part, "?", "reports through JetStream") for part in _REPORTING]
            return _print_status(parts, [], as_json=as_json)
        parts.append(PartState("jetstream", "up", "stores writes"))
        parts += await _reported_parts(link)
        rows = await read_statuses(link.broker)
    return _print_status(parts, rows, as_json=as_json)


_REPORTING = ("control plane", "storage", "bridge")
_PROBE_KEY = "_probe"  # no function's name starts with "_"


async def _reported_parts(link: Link) -> list[PartState]:
    """The control planes and bridges, from their own reports; storage as the freshest
    control plane sees it (else as this command does)."""
    now = time.time()
    reports = await read_parts(link.broker)
    controls = [r for r in reports if r.kind == "control"]
    bridges = [r for r in reports if r.kind == "bridge"]
    parts = [_reported("control plane", r, now) for r in controls] or [
        PartState("control plane", "DOWN", "none reports: start 'autan up' or 'autan serve'")
    ]
    live = [r for r in controls if r.age_s(now) < STALE_AFTER_S]
    if live:
        seen = max(live, key=lambda r: r.updated_unix_s)
        by = f"as the control plane on {seen.host} sees it, {seen.age_s(now):.0f} s ago"
        if seen.problem is None:
            parts.append(PartState("storage", "up", by))
        else:
            parts.append(PartState("storage", "DOWN", f"{seen.problem} ({by})"))
    elif (problem := await storage_problem(link)) is not None:
        parts.append(PartState("storage", "DOWN", f"{problem} (as seen from here)"))
    else:
        parts.append(PartState("storage", "up", "as seen from here"))
    parts += [_reported("bridge", r, now) for r in bridges] or [
        PartState("bridge", "-", "none reports (the HTTP bridge is not running)")
    ]
    return parts


def _reported(part: str, report: PartReport, now: float) -> PartState:
    age_s = report.age_s(now)
    who = f"pid {report.pid} on {report.host}" + (f", {report.where}" if report.where else "")
    if age_s >= STALE_AFTER_S:
        return PartState(part, "DOWN", f"no report for {age_s:.0f} s ({who}): killed or hung?")
    return PartState(part, "up", f"{who}, reported {age_s:.0f} s ago")


def _print_status(parts: list[PartState], rows: list[FunctionStatus], *, as_json: bool) -> int:
    if as_json:
        print(msgspec.json.encode({"parts": parts, "functions": rows}).decode())
    else:
        print(_parts_table(parts))
        if any(part.state == "up" for part in parts if part.part == "control plane"):
            print()
            print(_status_table(rows))
    return 1 if any(part.state == "DOWN" for part in parts) else 0


def _parts_table(parts: list[PartState]) -> str:
    lines = [f"{'PART':<14} {'STATE':<5}  DETAIL"]
    lines += [f"{p.part:<14} {p.state:<5}  {p.detail}" for p in parts]
    return "\n".join(lines)


def _status_table(rows: list[FunctionStatus]) -> str:
    if not rows:
        return "no scaler has reported yet: is 'autan up' (or 'autan serve') running?"
    lines = [
        f"{'FUNCTION':<20} {'BACKLOG':>7} {'OLDEST':>7} {'START':>5} {'IDLE':>4} {'BUSY':>4} "
        f"{'WANT':>4}  LAST DECISION"
    ]
    now = time.time()
    for row in rows:
        ago = f"{now - row.decided_unix_s:.0f} s ago" if row.decided_unix_s else "-"
        lines.append(
            f"{row.function:<20} {row.backlog:>7} {row.oldest_age_s:>6.1f}s {row.starting:>5} "
            f"{row.idle:>4} {row.busy:>4} {row.desired:>4}  {row.reason} ({ago})"
        )
    lines += [_unisolated(row.function, row.unisolated) for row in rows if row.unisolated]
    return "\n".join(lines)


def _unisolated(function: str, count: int) -> str:
    workers = "1 worker runs" if count == 1 else f"{count} workers run"
    return f"{function}: {workers} UNISOLATED (as the stack's user, unconfined)"
