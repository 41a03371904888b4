"""Names on the wire: subjects, stream, consumer and bucket names."""

from __future__ import annotations

__all__ = [
    "CALLS_STREAM",
    "CALLS_SUBJECTS",
    "CONFIG_BUCKET",
    "DLQ_STREAM",
    "DLQ_SUBJECTS",
    "REGISTRY_BUCKET",
    "RESULTS_BUCKET",
    "call_subject",
    "consumer_name",
    "dlq_subject",
    "function_key",
    "subject_covers",
    "subjects_overlap",
    "trigger_stream_name",
]

CALLS_STREAM = "AUTAN_CALLS"
DLQ_STREAM = "AUTAN_DLQ"
DLQ_SUBJECTS = "autan.dlq.>"
CALLS_SUBJECTS = "autan.call.>"
REGISTRY_BUCKET = "autan_functions"
RESULTS_BUCKET = "autan_results"
CONFIG_BUCKET = "autan_config"


def call_subject(app: str, fn: str) -> str:
    """`autan.call.<app>.<fn>`: where calls to one function are published."""
    return f"autan.call.{app}.{fn}"


def dlq_subject(app: str, fn: str) -> str:
    """`autan.dlq.<app>.<fn>`: where a function's dead letters are kept."""
    return f"autan.dlq.{app}.{fn}"


def consumer_name(app: str, fn: str) -> str:
    """The durable pull consumer of one function (one per function on a work-queue stream)."""
    return f"fn_{app}_{fn}".replace(".", "_")


def function_key(app: str, fn: str) -> str:
    """The registry key of one function: `<app>.<fn>`."""
    return f"{app}.{fn}"


def trigger_stream_name(app: str, fn: str) -> str:
    """The stream created for a trigger no existing stream captures."""
    return f"AUTAN_TRIGGER_{app}_{fn}".replace(".", "_").replace("-", "_").upper()


def subject_covers(pattern: str, subject: str) -> bool:
    """Whether every subject that `subject` matches is matched by `pattern` too.

    >>> subject_covers("uploads.>", "uploads.images.*")
    True
    """
    wanted, given = pattern.split("."), subject.split(".")
    for index, token in enumerate(wanted):
        if token == ">":
            return len(given) > index
        if index >= len(given) or given[index] == ">":
            return False
        if token != "*" and token != given[index]:
            return False
    return len(given) == len(wanted)


def subjects_overlap(a: str, b: str) -> bool:
    """Whether some subject is matched by both `a` and `b`."""
    left, right = a.split("."), b.split(".")
    for index in range(max(len(left), len(right))):
        x = left[index] if index < len(left) else None
        y = right[index] if index < len(right) else None
        if x == ">" or y == ">":
            return x is not None and y is not None
        if x is None or y is None:
            return False
        if x != "*" and y != "*" and x != y:
            return False
    return True
