"""A fleet on one machine: a three-node NATS cluster, node agents as `autan agent`
processes (their own data dirs, declared GPUs), and a control plane in this process
(scaler and `FleetProvider`), sharing one object store as hosts of a fleet would."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import msgspec

from runtime.client import Session
from runtime.control import FleetProvider, ProvidedWorker, descendants
from runtime.control.scaler import Scaler
from runtime.core import Settings, die_with_parent
from runtime.ops import deploy_target
from tests.fleet.app import app
from tests.keys import DEPLOY_KEY, TRUSTED_KEYS
from tests.natscluster import NatsCluster
from tests.stack import poll, serving

ROOT = Path(__file__).resolve().parents[2]


class AgentProcess:
    """One `autan agent`, in a process group of its own."""

    def __init__(self, root: Path, name: str, settings: Settings, gpus: str) -> None:
        self.name = name
        self.log = root / f"agent-{name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTAN_")}
        own = msgspec.structs.replace(settings, data_dir=root / name, deploy_key=None)
        env.update(own.to_env(), PYTHONPATH=str(ROOT), AUTAN_HTTP_PORT="0")
        if "AUTAN_FAULTS_LOG" in os.environ:
            env["AUTAN_FAULTS_LOG"] = os.environ["AUTAN_FAULTS_LOG"]
        command = [sys.executable, "-m", "runtime.ops.cli", "agent", "--name", name,
                   "--gpus", gpus, "--unisolated"]  # fmt: skip
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                command, env=env, stdout=out, stderr=out, start_new_session=True,
                preexec_fn=functools.partial(die_with_parent, os.getpid()),  # a killed run's too
            )  # fmt: skip

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill_host(self) -> int:
        """kill -9 of the agent and every process under it at once, as a host's loss would
        end them (else its workers, told by their parent's death, drain first)."""
        doomed = [self.process.pid, *descendants(self.process.pid)]
        for pid in doomed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        return len(doomed)

    def signal(self, sig: int) -> None:
        self.process.send_signal(sig)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


class Fleet:
    def __init__(self, root: Path, nats: NatsCluster, settings: Settings, session: Session) -> None:
        self.root = root
        self.nats = nats
        self.settings = settings
        self.session = session
        self.provider = FleetProvider(session.broker)
        self.scaler = Scaler(session.broker, self.provider, trust=settings.trust())
        self.agents: dict[str, AgentProcess] = {}
        self._serving: AbstractAsyncContextManager[None] | None = None

    def start_agent(self, name: str, gpus: str = "24") -> AgentProcess:
        self.agents[name] = AgentProcess(self.root, name, self.settings, gpus)
        return self.agents[name]

    async def nodes_up(self, count: int, timeout_s: float = 60) -> None:
        async def enough() -> bool:
            for agent in self.agents.values():
                if agent.process.poll() is not None:
                    raise AssertionError(f"agent {agent.name} exited: {agent.output()[-3000:]}")
            return len(self.provider.nodes()) >= count

        await poll(enough, timeout_s=timeout_s, every_s=0.05)

    @asynccontextmanager
    async def restarted_control_plane(self) -> AsyncIterator[None]:
        """The control plane stopped (as if killed: nothing is stopped on the agents), and
        another started in its place for the block."""
        assert self._serving is not None
        await self._serving.__aexit__(None, None, None)
        self.provider = FleetProvider(self.session.broker)
        self.scaler = Scaler(self.session.broker, self.provider, trust=self.settings.trust())
        self._serving = serving(self.provider, self.scaler, stop_timeout_s=60)
        await self._serving.__aenter__()
        await self.nodes_up(len(self.agents))
        yield

    def workers(self, fn: str) -> list[ProvidedWorker]:
        return self.provider.workers(f"fleet.{fn}")

    def per_node(self, fn: str) -> Counter[str]:
        return Counter(w.host for w in self.workers(fn) if w.state != "stopping")

    @classmethod
    @asynccontextmanager
    async def running(cls, root: Path, agents: int = 3) -> AsyncIterator[Fleet]:
        nats = NatsCluster(root)
        nats.start()
        fleet: Fleet | None = None
        try:
            await nats.wait_ready()
            settings = Settings(
                nats_url=nats.url,
                storage_url=f"file://{root / 'objects'}",
                data_dir=root / "control",
                deploy_key=DEPLOY_KEY,
                trusted_keys=TRUSTED_KEYS,
                ack_wait_s=2.0,
                connect_timeout_s=2.0,
            )
            async with await Session.open(settings) as session:
                await deploy_target(session.link, "tests.fleet.app")
                app.sessions.configure(settings)
                fleet = cls(root, nats, settings, session)
                for index in range(agents):
                    fleet.start_agent(f"a{index + 1}")
                fleet._serving = serving(fleet.provider, fleet.scaler, stop_timeout_s=60)
                await fleet._serving.__aenter__()
                try:
                    await fleet.nodes_up(agents)
                    yield fleet
                finally:
                    await fleet._serving.__aexit__(None, None, None)
                    await app.sessions.aclose()
        finally:
            if fleet is not None:
                for agent in fleet.agents.values():
                    agent.stop()
            nats.stop()
