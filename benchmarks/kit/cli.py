"""What every benchmark's command line shares: `--quick`, size flags, measure then report.

    def main() -> None:
        run_benchmark(__doc__, measure, report, sizes=[Size("calls", "calls per round", 300, 2000)])

`measure(args)` runs (async) against the stack and returns what it measured;
`report(args, measured)` prints the table, the ratio and the goal, and writes the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["Size", "parse", "run_benchmark"]

T = TypeVar("T")


@dataclass(frozen=True)
class Size:
    """A size flag whose default depends on `--quick`."""

    name: str  # --<name> (dashes for underscores)
    help: str
    quick: float
    full: float
    kind: type = int


def parse(
    doc: str | None,
    sizes: Sequence[Size] = (),
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
    argv: Sequence[str] | None = None,
) -> argparse.Namespace:
    """The arguments: `--quick`, one flag per size (its default by `--quick`), and `extra`'s."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    if sizes:
        quick = ", ".join(f"{size.name} {size.quick:g}" for size in sizes)
        parser.add_argument("--quick", action="store_true", help=f"a short run: {quick}")
    for size in sizes:
        parser.add_argument(
            f"--{size.name.replace('_', '-')}",
            type=size.kind,
            help=f"{size.help} (default {size.full:g})",
        )
    if extra is not None:
        extra(parser)
    args = parser.parse_args(argv)
    for size in sizes:
        if getattr(args, size.name) is None:
            setattr(args, size.name, size.kind(size.quick if args.quick else size.full))
    return args


def run_benchmark(
    doc: str | None,
    measure: Callable[[argparse.Namespace], Coroutine[Any, Any, T]],
    report: Callable[[argparse.Namespace, T], None],
    *,
    sizes: Sequence[Size] = (),
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> None:
    """Parse the command line, measure, report: the whole of a benchmark's `main`."""
    args = parse(doc, sizes, extra)
    report(args, asyncio.run(measure(args)))
