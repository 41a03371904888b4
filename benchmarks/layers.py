"""Cold start with a dependency layer: zero to first result of a function whose
`requirements=` make a 20 MB layer, with the layer in the worker's cache and without,
beside the same function with no layer (the floor).

The package (`autan-benchpayload`, 20 MB of incompressible data and one constant) is a
wheel made here into a wheelhouse (`AUTAN_WHEELHOUSE`); deploy builds the layer once. Each
round calls each side once at zero workers: "not cached" first deletes the layer (the zip
and its unpacked folder) from the worker cache, so the worker fetches it from object
storage, verifies it and unpacks it. Rounds alternate the sides.

    python -m benchmarks.layers [--quick] [--rounds R]
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import argparse
import base64
import hashlib
import shutil
import statistics
import tempfile
import zipfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec

from benchmarks.kit.cli import Size, run_benchmark
from benchmarks.kit.fleet import Fleet, running_fleet
from benchmarks.kit.harness import running_stack
from benchmarks.kit.layer_app import app
from benchmarks.kit.report import print_table, write_json
from benchmarks.kit.rounds import alternate
from runtime.client import Session
from runtime.core import FunctionSpec

__all__ = ["main"]

NAME = "layers"
PAYLOAD_MB = 20


def _wheel(folder: Path) -> None:
    """`autan-benchpayload` 1.0: a module with ONE = 1 and a 20 MB data file beside it."""
    files = {
        "autan_benchpayload/__init__.py": b"ONE = 1\n",
        "autan_benchpayload/data.bin": os.urandom(PAYLOAD_MB << 20),
        "autan_benchpayload-1.0.dist-info/METADATA": (
            b"Metadata-Version: 2.1\nName: autan-benchpayload\nVersion: 1.0\n"
        ),
        "autan_benchpayload-1.0.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = [f"{path},sha256={_b64(data)},{len(data)}" for path, data in files.items()] + [
        "autan_benchpayload-1.0.dist-info/RECORD,,"
    ]
    files["autan_benchpayload-1.0.dist-info/RECORD"] = ("\n".join(record) + "\n").encode()
    with zipfile.ZipFile(folder / "autan_benchpayload-1.0-py3-none-any.whl", "w") as wheel:
        for path, data in files.items():
            wheel.writestr(path, data)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _forget(zipped: Path) -> None:
    """Drop the layer from the worker cache: its zip and its unpacked folder."""
    shutil.rmtree(zipped.parent.parent / "layers", ignore_errors=True)
    zipped.unlink(missing_ok=True)


async def _cold(fleet: Fleet, session: Session, qualname: str, drop: Path | None) -> float:
    await fleet.to_zero(qualname)
    if drop is not None:
        _forget(drop)
    return (await fleet.cold_call(session, qualname, 1)).total_ms


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="autan-wheels-") as wheels:
        _wheel(Path(wheels))
        async with running_stack() as stack:
            stack.settings = msgspec.structs.replace(stack.settings, wheelhouse=Path(wheels))
            await stack.deploy("benchmarks.kit.layer_app")
            app.sessions.configure(stack.settings)
            async with running_fleet(stack) as fleet:
                session = await Session.open(stack.settings, name="bench-client")
                try:
                    spec: FunctionSpec = await session.registry.get("layerbench", "heavy")
                    zipped = stack.settings.cache_dir / "sha256" / spec.layer
                    sides: dict[str, Callable[[], Awaitable[float]]] = {
                        "not cached": lambda: _cold(fleet, session, "layerbench.heavy", zipped),
                        "cached": lambda: _cold(fleet, session, "layerbench.heavy", None),
                        "no layer": lambda: _cold(fleet, session, "layerbench.light", None),
                    }
                    for side in sides.values():  # warm-up
                        await side()
                    samples = await alternate(sides, args.rounds)
                finally:
                    await session.close()
                    await app.sessions.aclose()
    return {"samples_ms": samples, "layer_bytes": spec.layer_bytes}


def report(args: argparse.Namespace, measured: dict[str, Any]) -> None:
    samples: dict[str, list[float]] = measured["samples_ms"]
    medians = {side: statistics.median(values) for side, values in samples.items()}
    floor = medians["no layer"]
    print_table(
        f"{NAME}: zero to first result, a {PAYLOAD_MB} MB package in the layer "
        f"({measured['layer_bytes'] >> 20} MiB zipped), {args.rounds} rounds (medians)",
        ["side", "p50 ms", "vs no layer"],
        [[side, f"{ms:.1f}", f"{ms / floor:.2f}x"] for side, ms in medians.items()],
    )
    write_json(NAME, {"config": vars(args), "medians_ms": medians, **measured})


def main() -> None:
    sizes = [Size("rounds", "rounds (sides alternate within each)", 3, 7)]
    run_benchmark(__doc__, measure, report, sizes=sizes)


if __name__ == "__main__":
    main()
