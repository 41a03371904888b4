"""Where a new worker goes: a pure function from what it needs and what nodes have free.

    fits      free cores >= cpu, free memory >= memory_mb, and GPUs: `count` devices with
              nothing on them, or one device with `memory_gb` free (shares pack: the
              device with the least free memory that fits is taken)
    prefers   the node with the fewest workers of the function (spread), then one whose
              cache holds its artifact, then the least loaded, then by name
    else      `Unplaceable`, saying what is missing ("needs 40 GB of GPU memory, the
              largest free is 24 GB")

What a function did not declare is not reserved (`cpu=None` takes no core from the count).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from runtime.control.nodes import Gpu, Reservation
from runtime.core import GPU, FunctionOptions

__all__ = ["Needs", "NodeView", "Placed", "Unplaceable", "needs_of", "place"]


class Needs(msgspec.Struct, frozen=True, kw_only=True):
    cpu: float = 0.0
    memory_mb: int = 0
    gpus: int = 0  # whole devices
    gpu_memory_mb: int = 0  # a share of one device


def needs_of(options: FunctionOptions) -> Needs:
    gpu = options.gpu
    share = gpu.memory_mb if isinstance(gpu, GPU) else None
    whole = gpu.count if isinstance(gpu, GPU) and share is None else int(gpu is True)
    return Needs(
        cpu=options.cpu or 0.0,
        memory_mb=options.memory_mb or 0,
        gpus=whole,
        gpu_memory_mb=share or 0,
    )


class NodeView(msgspec.Struct, frozen=True, kw_only=True):
    """A live node as placement sees it: its capacity and what its workers hold."""

    name: str
    cores: int
    memory_mb: int
    gpus: tuple[Gpu, ...] = ()
    reserved: tuple[Reservation, ...] = ()
    function_workers: int = 0  # workers of the function being placed
    caches_artifact: bool = False

    def free_cpu(self) -> float:
        return self.cores - sum(r.cpu for r in self.reserved)

    def free_memory_mb(self) -> int:
        return self.memory_mb - sum(r.memory_mb for r in self.reserved)

    def free_gpu_memory_mb(self) -> dict[int, int]:
        """Free memory by device; a device held whole has none."""
        free = {gpu.index: gpu.memory_mb for gpu in self.gpus}
        for held in self.reserved:
            for device in held.devices:
                if device in free:
                    free[device] = free[device] - held.gpu_memory_mb if held.gpu_memory_mb else 0
        return free

    def idle_gpus(self) -> list[int]:
        """Devices nothing holds any of."""
        busy = {device for held in self.reserved for device in held.devices}
        return [gpu.index for gpu in self.gpus if gpu.index not in busy]


class Placed(msgspec.Struct, frozen=True):
    node: str
    reserved: Reservation


class Unplaceable(msgspec.Struct, frozen=True):
    reason: str


def place(needs: Needs, nodes: Sequence[NodeView]) -> Placed | Unplaceable:
    """The node (and devices) for one more worker, or why none will do."""
    if not nodes:
        return Unplaceable("no node agent reports: start 'autan agent' on a host")
    fitting = [(node, devices) for node in nodes if (devices := _devices(needs, node)) is not None]
    if not fitting:
        return Unplaceable(_why_not(needs, nodes))
    node, devices = min(fitting, key=lambda pair: _preference(pair[0]))
    reserved = Reservation(
        cpu=needs.cpu,
        memory_mb=needs.memory_mb,
        devices=devices,
        gpu_memory_mb=needs.gpu_memory_mb,
    )
    return Placed(node.name, reserved)


def _devices(needs: Needs, node: NodeView) -> tuple[int, ...] | None:
    """The devices `needs` would take on `node` (() for none), or None if it does not fit."""
    if node.free_cpu() + 1e-9 < needs.cpu or node.free_memory_mb() < needs.memory_mb:
        return None
    if needs.gpus:
        idle = node.idle_gpus()
        return tuple(idle[: needs.gpus]) if len(idle) >= needs.gpus else None
    if needs.gpu_memory_mb:
        free = node.free_gpu_memory_mb()
        fits = [device for device, mb in free.items() if mb >= needs.gpu_memory_mb]
        return (min(fits, key=lambda device: (free[device], device)),) if fits else None
    return ()


def _preference(node: NodeView) -> tuple[int, bool, float, str]:
    load = sum(r.cpu for r in node.reserved) / max(1, node.cores) + len(node.reserved) / 1000
    return node.function_workers, not node.caches_artifact, load, node.name


def _why_not(needs: Needs, nodes: Sequence[NodeView]) -> str:
    """What is missing, against the best any node offers."""
    reasons = []
    most_cpu = max(node.free_cpu() for node in nodes)
    if most_cpu + 1e-9 < needs.cpu:
        reasons.append(f"needs {needs.cpu:g} cores, the most free is {max(0.0, most_cpu):g}")
    most_memory = max(node.free_memory_mb() for node in nodes)
    if most_memory < needs.memory_mb:
        reasons.append(
            f"needs {_gb(needs.memory_mb)} of memory, the most free is {_gb(most_memory)}"
        )
    if needs.gpus:
        most_idle = max(len(node.idle_gpus()) for node in nodes)
        if most_idle < needs.gpus:
            reasons.append(
                f"needs {needs.gpus} whole GPU{'s' * (needs.gpus > 1)}, "
                f"the most idle on one node is {most_idle}"
            )
    if needs.gpu_memory_mb:
        free = [mb for node in nodes for mb in node.free_gpu_memory_mb().values()]
        if not free:
            reasons.append(f"needs {_gb(needs.gpu_memory_mb)} of GPU memory; no node has a GPU")
        elif max(free) < needs.gpu_memory_mb:
            reasons.append(
                f"needs {_gb(needs.gpu_memory_mb)} of GPU memory, the largest free is "
                f"{_gb(max(free))}"
            )
    if not reasons:  # each need is met somewhere, but not all on one node
        reasons.append(
            f"no single node has {needs.cpu:g} cores, {_gb(needs.memory_mb)} of memory and "
            "the GPUs asked for free at once"
        )
    return "unplaceable: " + "; ".join(reasons)


def _gb(mb: int) -> str:
    return f"{mb / 1024:.3g} GB"
