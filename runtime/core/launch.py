"""How a worker process is started: the command line a provider writes and a worker reads.

The contract between the control plane and the worker room, which never import each
other: a provider runs `python -m runtime.worker APP.FN --worker-id ...` (or asks the
fork server, `python -m runtime.worker.forkserver`, for the same argv) with the
environment `Settings.to_env()` gives; the worker parses it back with `WorkerLaunch`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import msgspec

__all__ = ["FORKSERVER_MODULE", "WORKER_MODULE", "WorkerLaunch"]

WORKER_MODULE = "runtime.worker"
FORKSERVER_MODULE = "runtime.worker.forkserver"


class WorkerLaunch(msgspec.Struct, frozen=True, kw_only=True):
    """One worker to start: which function, its id, and the resources it is given."""

    function: str  # APP.FN
    worker_id: str = ""  # the provider's name for it ("": <host>-<pid>)
    threads: int = 0  # ONNX Runtime intra-op threads (0: ONNX Runtime's default)
    device: int = 0  # GPU device id, as the worker sees the devices it may use
    memory_mb: int | None = None  # address-space limit; past it, MemoryError
    spawned_unix_s: float = 0.0  # when the provider asked for it (a cold-start phase)
    parent_pid: int = 0  # end when this process ends (0: live on; a worker run by hand)
    min_sequence: int = 0  # refuse a registry entry older than this deploy (a rollback)
    isolated: bool = False  # it runs in a sandbox (`runtime.control.sandbox`): announced
    gate: str = ""  # connect to NATS and storage through this gate (`broker.gate`)
    node: str = ""  # the node agent that started it ("": the host's name)

    def argv(self) -> list[str]:
        """The arguments `from_argv` reads back as this launch."""
        args = [self.function, "--threads", str(self.threads), "--device", str(self.device)]
        if self.worker_id:
            args += ["--worker-id", self.worker_id]
        if self.memory_mb:
            args += ["--memory-mb", str(self.memory_mb)]
        if self.spawned_unix_s:
            args += ["--spawned-unix-s", repr(self.spawned_unix_s)]
        if self.parent_pid:
            args += ["--parent-pid", str(self.parent_pid)]
        if self.min_sequence:
            args += ["--min-sequence", str(self.min_sequence)]
        if self.isolated:
            args.append("--isolated")
        if self.gate:
            args += ["--gate", self.gate]
        if self.node:
            args += ["--node", self.node]
        return args

    @classmethod
    def from_argv(cls, argv: Sequence[str]) -> WorkerLaunch:
        quick = _parse_quickly(list(argv))
        if quick is not None:
            return cls(**quick)  # type: ignore[arg-type]
        parser = argparse.ArgumentParser(prog="autan worker", description="serve one function")
        cls.add_arguments(parser)
        return cls.from_args(parser.parse_args(list(argv)))

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """The arguments of `autan worker` (and of `python -m runtime.worker`)."""
        parser.add_argument("function", metavar="APP.FN")
        parser.add_argument("--worker-id", default="", help="default: <host>-<pid>")
        parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads")
        parser.add_argument("--device", type=int, default=0, help="GPU device id")
        parser.add_argument("--memory-mb", type=int, default=None, help="address-space limit")
        parser.add_argument("--spawned-unix-s", type=float, default=0.0, help=argparse.SUPPRESS)
        parser.add_argument("--parent-pid", type=int, default=0, help=argparse.SUPPRESS)
        parser.add_argument(
            "--min-sequence", type=int, default=0, help="refuse older deploys (rollbacks)"
        )
        parser.add_argument("--isolated", action="store_true", help=argparse.SUPPRESS)
        parser.add_argument("--gate", default="", help=argparse.SUPPRESS)
        parser.add_argument("--node", default="", help="the node it runs on (ctx.node)")

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> WorkerLaunch:
        return cls(
            function=args.function,
            worker_id=args.worker_id,
            threads=args.threads,
            device=args.device,
            memory_mb=args.memory_mb,
            spawned_unix_s=args.spawned_unix_s,
            parent_pid=args.parent_pid,
            min_sequence=args.min_sequence,
            isolated=args.isolated,
            gate=args.gate,
            node=args.node,
        )


# Every option `argv()` writes, with its type: a forked worker parses its command line in
# microseconds this way (argparse takes ~2 ms in a process just forked). Anything else,
# and every mistake, goes to argparse, which says what is wrong.
_OPTIONS: dict[str, type] = {
    "--worker-id": str, "--threads": int, "--device": int, "--memory-mb": int,
    "--spawned-unix-s": float, "--parent-pid": int, "--min-sequence": int, "--gate": str,
    "--node": str,
}  # fmt: skip


def _parse_quickly(argv: list[str]) -> dict[str, object] | None:
    if not argv or argv[0].startswith("-"):
        return None
    values: dict[str, object] = {"function": argv[0]}
    rest = iter(argv[1:])
    for flag in rest:
        if flag == "--isolated":
            values["isolated"] = True
            continue
        kind = _OPTIONS.get(flag)
        value = next(rest, None)
        if kind is None or value is None or value.startswith("--"):
            return None
        try:
            values[flag[2:].replace("-", "_")] = kind(value)
        except ValueError:
            return None
    return values
