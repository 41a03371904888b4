"""Placement by table: what fits where, what is preferred, and why nothing fits."""

from __future__ import annotations

import pytest

from runtime import GPU
from runtime.control.nodes import Gpu, Reservation
from runtime.control.placement import Needs, NodeView, Placed, Unplaceable, needs_of, place
from runtime.core import FunctionOptions

GB = 1024


def _node(name: str, *, cores: int = 8, memory_gb: int = 32, gpus: tuple[int, ...] = (),
          reserved: tuple[Reservation, ...] = (), workers: int = 0,
          cached: bool = False) -> NodeView:  # fmt: skip
    return NodeView(
        name=name,
        cores=cores,
        memory_mb=memory_gb * GB,
        gpus=tuple(Gpu(index=i, model="test", memory_mb=m * GB) for i, m in enumerate(gpus)),
        reserved=reserved,
        function_workers=workers,
        caches_artifact=cached,
    )


def test_needs_come_from_the_options() -> None:
    assert needs_of(FunctionOptions()) == Needs()
    assert needs_of(FunctionOptions(gpu=True, cpu=2, memory_mb=512)) == Needs(
        cpu=2, memory_mb=512, gpus=1
    )
    assert needs_of(FunctionOptions(gpu=GPU(count=2))) == Needs(gpus=2)
    assert needs_of(FunctionOptions(gpu=GPU(memory_gb=10))) == Needs(gpu_memory_mb=10 * GB)
    assert needs_of(FunctionOptions(gpu="auto")) == Needs()


def test_gpu_memory_packs_onto_the_fullest_device_that_fits() -> None:
    share = Reservation(devices=(0,), gpu_memory_mb=16 * GB)
    node = _node("a", gpus=(24, 24), reserved=(share,))
    # 8 GB fits beside the 16 GB share on device 0 (8 free): packed there, device 1 kept whole.
    assert place(Needs(gpu_memory_mb=8 * GB), [node]) == Placed(
        "a", Reservation(devices=(0,), gpu_memory_mb=8 * GB)
    )
    # 10 GB does not fit on device 0 any more: device 1.
    assert place(Needs(gpu_memory_mb=10 * GB), [node]) == Placed(
        "a", Reservation(devices=(1,), gpu_memory_mb=10 * GB)
    )


def test_whole_gpus_take_idle_devices_only() -> None:
    shared = _node("a", gpus=(24, 24), reserved=(Reservation(devices=(0,), gpu_memory_mb=GB),))
    assert place(Needs(gpus=1), [shared]) == Placed("a", Reservation(devices=(1,)))
    placed = place(Needs(gpus=2), [shared])
    assert placed == Unplaceable("unplaceable: needs 2 whole GPUs, the most idle on one node is 1")


def test_a_function_spreads_over_nodes_then_prefers_its_cached_artifact() -> None:
    nodes = [_node("a", workers=1, cached=True), _node("b"), _node("c", cached=True)]
    placed = place(Needs(), nodes)
    assert isinstance(placed, Placed)
    assert placed.node == "c"  # b and c have none of its workers; c caches its artifact


def test_capacity_is_respected() -> None:
    busy = _node("a", cores=2, reserved=(Reservation(cpu=1.5),))
    roomy = _node("b", cores=4)
    placed = place(Needs(cpu=1), [busy, roomy])
    assert isinstance(placed, Placed)
    assert placed.node == "b"
    assert place(Needs(cpu=8), [busy, roomy]) == Unplaceable(
        "unplaceable: needs 8 cores, the most free is 4"
    )


@pytest.mark.parametrize(
    ("needs", "reason"),
    [
        (Needs(gpu_memory_mb=40 * GB), "needs 40 GB of GPU memory, the largest free is 24 GB"),
        (Needs(memory_mb=64 * GB), "needs 64 GB of memory, the most free is 32 GB"),
        (Needs(gpus=1, cpu=16), "needs 16 cores, the most free is 8"),
    ],
)
def test_unplaceable_says_what_is_missing(needs: Needs, reason: str) -> None:
    nodes = [_node("a", gpus=(24,)), _node("b", gpus=(24, 24), reserved=(
        Reservation(devices=(0,)),))]  # fmt: skip
    placed = place(needs, nodes)
    assert isinstance(placed, Unplaceable)
    assert placed.reason == f"unplaceable: {reason}"


def test_no_node_at_all() -> None:
    placed = place(Needs(), [])
    assert isinstance(placed, Unplaceable)
    assert "autan agent" in placed.reason


def test_each_need_met_somewhere_but_not_together() -> None:
    nodes = [_node("gpu", cores=1, gpus=(24,)), _node("cpu", cores=16)]
    placed = place(Needs(cpu=8, gpus=1), nodes)
    assert isinstance(placed, Unplaceable)
    assert "no single node" in placed.reason
