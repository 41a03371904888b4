"""A timeline plot: backlog (left axis) and workers (right axis) over time, as a PNG.

matplotlib is a dev dependency; it is imported here only, with the Agg backend (no display).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["plot_timeline"]


def plot_timeline(
    rows: Sequence[tuple[float, int, int, int]],
    path: Path,
    *,
    title: str,
    marks: Mapping[str, float],
) -> Path:
    """Plot (t_s, backlog, workers, ready workers) rows; `marks` are labelled vertical lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    t = [r[0] for r in rows]
    figure, backlog_axis = plt.subplots(figsize=(10, 5), dpi=110)
    backlog_axis.plot(t, [r[1] for r in rows], color="tab:blue", label="backlog (calls)")
    backlog_axis.set_xlabel("time since the first call was published (s)")
    backlog_axis.set_ylabel("backlog: calls pending + unacked", color="tab:blue")
    backlog_axis.set_ylim(bottom=0)
    worker_axis = backlog_axis.twinx()
    worker_axis.step(t, [r[2] for r in rows], where="post", color="tab:orange",
                     linewidth=2, label="workers (starting + ready)")  # fmt: skip
    worker_axis.step(t, [r[3] for r in rows], where="post", color="tab:green",
                     linestyle="--", label="workers ready")  # fmt: skip
    worker_axis.set_ylabel("workers", color="tab:orange")
    worker_axis.set_ylim(0, max(max((r[2] for r in rows), default=1), 1) + 1)
    worker_axis.yaxis.set_major_locator(MaxNLocator(integer=True))
    for label, at in marks.items():
        backlog_axis.axvline(at, color="grey", linestyle=":")
        backlog_axis.annotate(f" {label} {at:.1f} s", (at, 0), xytext=(2, 4),
                              textcoords="offset points", color="grey", rotation=90)  # fmt: skip
    lines = backlog_axis.get_legend_handles_labels()
    more = worker_axis.get_legend_handles_labels()
    backlog_axis.legend(lines[0] + more[0], lines[1] + more[1], loc="upper right")
    backlog_axis.set_title(title, fontsize=10)
    backlog_axis.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
