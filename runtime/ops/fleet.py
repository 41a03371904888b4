"""`autan agent` (one per host of a fleet) and `autan nodes` (what the fleet has)."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import anyio
import anyio.to_thread
import msgspec
import structlog

from broker import NODES_BUCKET
from runtime.control import (
    NODE_LOST_S,
    Agent,
    Children,
    LocalProvider,
    NodeReport,
    OrderedIdentities,
    StackSecrets,
    check_node_name,
    default_node_name,
    detect_node_gpus,
    parse_gpus,
)
from runtime.core import (
    ADMIN,
    HttpSettings,
    Link,
    SecretsKey,
    SecretStore,
    Settings,
    die_with_parent,
)
from runtime.ops.hosting import (
    claimed_data_dir,
    isolation,
    jetstream_ready,
    private_data_dir,
    wait_for_signal,
)

__all__ = ["LocalAgents", "agent", "nodes"]

log = structlog.get_logger("autan")

_AGENT_GRACE_S = 40.0  # its workers' 30 s drain, and a margin


async def agent(
    settings: Settings,
    *,
    name: str | None,
    gpus: str | None,
    unisolated: bool = False,
    identities_from_orders: bool = False,
) -> int:
    """Run this host's workers for the fleet's leading control plane until a signal.

    `gpus`: GPUs to declare instead of nvidia-smi's (each one's memory in GB: "24,24").
    Its data dir is its own (caches, sandboxes); the secrets key, when the stack's is
    copied there, opens the secrets its functions declare. `identities_from_orders`: each
    function's workers run as the NATS identity its orders name (`autan up --agents`).
    """
    node = check_node_name(name or default_node_name())
    declared = parse_gpus(gpus) if gpus is not None else detect_node_gpus()
    isolate = isolation(unisolated=unisolated, required=True)
    private_data_dir(settings.data_dir)
    with claimed_data_dir(settings.data_dir) as children:
        await jetstream_ready(settings)
        async with await Link.open(settings, name=f"autan-agent-{node}", role=ADMIN) as link:
            secrets = None
            if settings.secrets_key_path.exists():
                secrets = StackSecrets(
                    SecretStore(link.broker), SecretsKey.load_or_create(settings.secrets_key_path)
                )
            identities = OrderedIdentities() if identities_from_orders else None
            provider = LocalProvider(
                settings, isolate=isolate, secrets=secrets, children=children, host=node,
                gpus=[gpu.index for gpu in declared], access=identities,
            )  # fmt: skip
            serving = Agent(link, provider, node=node, gpus=declared, identities=identities)
            async with anyio.create_task_group() as group:
                await group.start(serving.serve)
                await wait_for_signal()
                group.cancel_scope.cancel()
    log.info("agent stopped", node=node)
    return 0


async def nodes(settings: Settings, *, as_json: bool = False) -> int:
    """The fleet's nodes: capacity, what is reserved, workers, the last report's age.
    Exits 1 when a node is lost (no report for the bound) or none reports."""
    async with await Link.open(settings, name="autan-nodes", role=ADMIN) as link:
        bucket = await link.broker.bucket(NODES_BUCKET)
        values = await bucket.values()
    reports = []
    for value in values.values():
        try:
            reports.append(msgspec.msgpack.decode(value, type=NodeReport))
        except msgspec.DecodeError:
            continue
    now = time.time()
    rows = [_row(report, now) for report in sorted(reports, key=lambda r: r.node)]
    if as_json:
        print(json.dumps({"nodes": rows}, indent=1))
    else:
        print(_table(rows))
    return 0 if rows and all(row["state"] == "up" for row in rows) else 1


def _row(report: NodeReport, now: float) -> dict[str, object]:
    reserved = [w.reserved for w in report.workers]
    gpu_used: dict[int, int] = {gpu.index: 0 for gpu in report.gpus}
    for held in reserved:
        for device in held.devices:
            whole = next((g.memory_mb for g in report.gpus if g.index == device), 0)
            gpu_used[device] = gpu_used.get(device, 0) + (held.gpu_memory_mb or whole)
    age_s = report.age_s(now)
    return {
        "node": report.node,
        "host": report.host,
        "state": "up" if age_s < NODE_LOST_S else "lost",
        "last_report_s": round(age_s, 1),
        "cores": report.cores,
        "cpu_reserved": sum(r.cpu for r in reserved),
        "memory_mb": report.memory_mb,
        "memory_reserved_mb": sum(r.memory_mb for r in reserved),
        "gpus": [
            {
                "index": g.index,
                "model": g.model,
                "memory_mb": g.memory_mb,
                "reserved_mb": gpu_used.get(g.index, 0),
            }
            for g in report.gpus
        ],
        "isolated": report.isolated,
        "workers": [
            {
                "worker_id": w.worker.worker_id,
                "function": w.worker.function,
                "state": w.worker.state,
                "devices": list(w.reserved.devices),
            }
            for w in report.workers
        ],
    }


def _table(rows: list[dict[str, object]]) -> str:
    if not rows:
        return "no node reports: start 'autan agent' on each host (and 'autan serve --fleet')"
    lines = [f"{'NODE':<16} {'STATE':<5} {'CORES':>9} {'MEMORY':>13} {'WORKERS':>7}  GPUS  LAST"]
    for row in rows:
        gpus = row["gpus"]
        assert isinstance(gpus, list)
        gpu_text = " ".join(f"{g['reserved_mb'] / 1024:.0f}/{g['memory_mb'] / 1024:.0f}G"
                            for g in gpus) or "-"  # fmt: skip
        workers = row["workers"]
        assert isinstance(workers, list)
        lines.append(
            f"{row['node']:<16} {row['state']:<5} {row['cpu_reserved']:>4g}/{row['cores']:<4} "
            f"{_gb(row['memory_reserved_mb'])}/{_gb(row['memory_mb'])} {len(workers):>7}  "
            f"{gpu_text}  {row['last_report_s']} s ago"
        )
    return "\n".join(lines)


def _gb(mb: object) -> str:
    assert isinstance(mb, int)
    return f"{mb / 1024:.1f}G".rjust(6)


class LocalAgents:
    """`autan up --agents N`: N agents on this machine, each with a data dir of its own
    under the stack's, connecting as the stack and running each function's workers as the
    function's own NATS identity (named in the orders). Ctrl-C reaches `autan up` alone
    (each agent has a session of its own); they end with it."""

    def __init__(
        self, settings: Settings, count: int, *, unisolated: bool, children: Children
    ) -> None:
        self.settings = settings
        self.count = count
        self.unisolated = unisolated
        self.children = children
        self.processes: list[subprocess.Popen[bytes]] = []
        self._stopping = False

    def start(self) -> None:
        for index in range(1, self.count + 1):
            name = f"local-{index}"
            data_dir = self.settings.data_dir / "agents" / name
            data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            if self.settings.secrets_key_path.exists():  # it opens the functions' secrets
                shutil.copy2(self.settings.secrets_key_path, data_dir / "secrets.key")
            own = msgspec.structs.replace(
                self.settings,
                data_dir=data_dir,
                nats_creds=self.settings.creds_for(ADMIN),
                deploy_key=None,
                deploy_key_file=None,
                trusted_keys=self.settings.trust().text(),
                metrics_port=0,
                http=HttpSettings(port=0),
            )
            env = {k: v for k, v in os.environ.items() if not Settings.reads(k)}
            env.update(own.to_env())
            command = [sys.executable, "-m", "runtime.ops.cli", "agent", "--name", name,
                       "--identities-from-orders",
                       *(["--unisolated"] if self.unisolated else [])]  # fmt: skip
            process = subprocess.Popen(
                command, env=env, stdin=subprocess.DEVNULL, start_new_session=True,
                preexec_fn=functools.partial(die_with_parent, os.getpid()),
            )  # fmt: skip
            self.children.record(process.pid, "agent")
            self.processes.append(process)
            threading.Thread(target=self._watch, args=(name, process), daemon=True).start()
        log.info("agents started on this machine", agents=self.count)

    def _watch(self, name: str, process: subprocess.Popen[bytes]) -> None:
        code = process.wait()
        if not self._stopping:  # its node is lost: the others serve, `autan nodes` says so
            log.error("an agent exited; see its output above", node=name, code=code)

    async def stop(self) -> None:
        """SIGTERM each (it drains its workers); SIGKILL after the workers' grace."""
        self._stopping = True
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                await anyio.to_thread.run_sync(process.wait, _AGENT_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                await anyio.to_thread.run_sync(process.wait)
            self.children.forget(process.pid)
