"""What node agents and the control plane tell each other.

Each agent (`autan agent`, `control.agent`) writes a `NodeReport` of its host under its
node name in the KV bucket `autan_nodes` every `REPORT_EVERY_S`, and at once when its
workers change: capacity (cores, memory, GPUs with their memory), each worker with what
it reserves, recent exits, and the artifacts its cache holds. The control plane
(`control.fleet`) reads those reports and sends orders (`StartOrder`, `StopOrder`) to
`autan.agent.<node>`, each answered with an `AgentAnswer`. A node whose reports stop for
`NODE_LOST_S` is lost: the control plane counts its workers no more, and the agent, when
it cannot report for that long, stops them itself.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time

import msgspec

from runtime.control.provider import ProvidedWorker
from runtime.core import FunctionSpec

__all__ = [
    "NODE_LOST_S",
    "REPORT_EVERY_S",
    "AgentAnswer",
    "Gpu",
    "NodeReport",
    "NodeWorker",
    "Order",
    "Reservation",
    "StartOrder",
    "StopOrder",
    "check_node_name",
    "default_node_name",
    "detect_node_gpus",
    "parse_gpus",
]

REPORT_EVERY_S = 0.5
NODE_LOST_S = 3.0  # no report for this long: the node is lost, its workers are not counted

_NODE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class Gpu(msgspec.Struct, frozen=True, kw_only=True):
    index: int  # its device id on the node (CUDA_VISIBLE_DEVICES)
    model: str
    memory_mb: int


class Reservation(msgspec.Struct, frozen=True, kw_only=True):
    """What one worker holds of its node: cores, memory, and GPUs (whole devices, or
    `gpu_memory_mb` of `devices[0]`)."""

    cpu: float = 0.0
    memory_mb: int = 0
    devices: tuple[int, ...] = ()
    gpu_memory_mb: int = 0


class NodeWorker(msgspec.Struct, frozen=True, kw_only=True):
    worker: ProvidedWorker
    reserved: Reservation


class NodeReport(msgspec.Struct, frozen=True, kw_only=True):
    """One agent's account of its host, rewritten every `REPORT_EVERY_S`."""

    node: str
    host: str
    pid: int
    epoch: str  # new each time the agent registers afresh (a start; after being lost)
    seq: int  # counts its reports: a report that did not change is still news
    sent_unix_s: float
    cores: int
    memory_mb: int
    gpus: tuple[Gpu, ...] = ()
    isolated: bool = False
    workers: tuple[NodeWorker, ...] = ()
    exits: dict[str, int] = {}  # recent exit codes, by worker id
    cached: tuple[str, ...] = ()  # digests of the artifacts its cache holds

    def age_s(self, now_unix_s: float | None = None) -> float:
        return max(0.0, (now_unix_s or time.time()) - self.sent_unix_s)


class StartOrder(msgspec.Struct, frozen=True, tag="start"):
    spec: FunctionSpec
    reserved: Reservation
    lease_revision: int  # the leading control plane's: an agent refuses older ones
    # The seed of the function's own NATS identity, a path on this machine: agents of an
    # embedded stack (`autan up --agents N`) run each function as its own identity.
    creds: str = ""


class StopOrder(msgspec.Struct, frozen=True, tag="stop"):
    worker_id: str
    lease_revision: int


Order = StartOrder | StopOrder


class AgentAnswer(msgspec.Struct, frozen=True, kw_only=True):
    worker: ProvidedWorker | None = None
    error: str = ""
    refused: bool = False  # the start was refused as it stands (a secret not set): back off


def check_node_name(name: str) -> str:
    """`name` as a node name: lower-case, each character a NATS subject token and a KV key
    cannot hold made '-' (a Kubernetes node name's dots too); ValueError if nothing is left."""
    node = re.sub(r"[^a-z0-9_-]", "-", name.lower()).strip("-_")[:63]
    if not _NODE_NAME.match(node):
        raise ValueError(f"node name {name!r}: use 1 to 63 letters, digits, '_' and '-' (--name)")
    return node


def default_node_name() -> str:
    """This host's name, made into a node name."""
    return check_node_name(os.uname().nodename or "node")


def parse_gpus(text: str) -> tuple[Gpu, ...]:
    """`--gpus 24,24,80`: GPUs to declare (each its memory in GB), for trying placement
    where there are none; "" declares none."""
    gpus = []
    for index, part in enumerate(p.strip() for p in text.split(",") if p.strip()):
        try:
            memory_gb = float(part.removesuffix("GB").removesuffix("gb"))
        except ValueError:
            raise ValueError(
                f"--gpus {text!r}: give each GPU's memory in GB, comma-separated (24,24,80)"
            ) from None
        if memory_gb <= 0:
            raise ValueError(f"--gpus {text!r}: a GPU's memory must be positive")
        gpus.append(Gpu(index=index, model="declared", memory_mb=round(memory_gb * 1024)))
    return tuple(gpus)


def detect_node_gpus() -> tuple[Gpu, ...]:
    """This host's GPUs with their model and memory, from nvidia-smi (none without it)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return ()
    query = ["--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"]
    try:
        listing = subprocess.run([smi, *query], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    gpus = []
    for line in listing.stdout.splitlines():
        index, _, rest = line.partition(",")
        model, _, memory = rest.rpartition(",")
        with contextlib.suppress(ValueError):
            gpus.append(Gpu(index=int(index), model=model.strip(), memory_mb=int(memory)))
    return tuple(gpus)
