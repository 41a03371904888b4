"""Numbers and their presentation: percentiles of rounds, medians of rounds, a table, JSON.

Every benchmark measures our path and its floor in alternating rounds; each round gives one
`Summary` per side, and the medians of those rounds are what the tables quote.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "OUT_DIR",
    "Goal",
    "Rate",
    "Summary",
    "median_rate",
    "median_summary",
    "print_goal",
    "print_table",
    "summarize",
    "summarize_ms",
    "write_json",
]

OUT_DIR = Path(__file__).resolve().parent.parent / "out"


@dataclass(frozen=True)
class Summary:
    """Latency of one round (or the medians of several): milliseconds."""

    n: int
    p50_ms: float
    p99_ms: float
    mean_ms: float


@dataclass(frozen=True)
class Rate:
    """Throughput of one round (or the median of several)."""

    n: int
    seconds: float

    @property
    def per_s(self) -> float:
        return self.n / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Goal:
    """What the issue asks for, and whether this run met it."""

    text: str
    value: float
    met: bool
    extra: dict[str, Any] = field(default_factory=dict)


def _quantile(ordered: Sequence[int], q: float) -> float:
    # Nearest rank on sorted samples: no interpolation between two calls' timings.
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return float(ordered[index])


def summarize(samples_ns: Sequence[int]) -> Summary:
    """p50, p99 and mean of per-call durations measured with `time.perf_counter_ns`."""
    if not samples_ns:
        raise ValueError("no samples: the round measured nothing")
    ordered = sorted(samples_ns)
    return Summary(
        n=len(ordered),
        p50_ms=_quantile(ordered, 0.50) / 1e6,
        p99_ms=_quantile(ordered, 0.99) / 1e6,
        mean_ms=statistics.fmean(ordered) / 1e6,
    )


def summarize_ms(values_ms: Sequence[float]) -> Summary:
    """`summarize` for durations already in milliseconds."""
    return summarize([round(v * 1e6) for v in values_ms])


def median_summary(rounds: Sequence[Summary]) -> Summary:
    """Each figure's median over the rounds (so one noisy round moves nothing)."""
    return Summary(
        n=sum(r.n for r in rounds),
        p50_ms=statistics.median(r.p50_ms for r in rounds),
        p99_ms=statistics.median(r.p99_ms for r in rounds),
        mean_ms=statistics.median(r.mean_ms for r in rounds),
    )


def median_rate(rounds: Sequence[Rate]) -> float:
    """The median over the rounds of calls per second."""
    return statistics.median(r.per_s for r in rounds)


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A plain fixed-width table: first column left-aligned, the others right-aligned."""
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    print(f"\n{title}")

    def line(cells: Sequence[str]) -> str:
        first = f"{cells[0]:<{widths[0]}}"
        rest = (f"{c:>{w}}" for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest])

    print(line(header))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


def print_goal(goal: Goal) -> None:
    print(f"goal: {goal.text} -> {'MET' if goal.met else 'NOT MET'} ({goal.value:.3g})")


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
    }


def write_json(name: str, data: dict[str, Any]) -> Path:
    """`benchmarks/out/<name>.json` (git-ignored), with the machine it ran on; says where."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{name}.json"
    payload = {"benchmark": name, "machine": machine(), **data}
    path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
    print(f"written: {path}")
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, Rate):
        return {**asdict(value), "per_s": value.per_s}
    if isinstance(value, Summary | Goal):
        return asdict(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
