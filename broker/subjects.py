"""Names on the wire: subjects, stream, consumer and bucket names."""

from __future__ import annotations

__all__ = [
    "CALLS_STREAM",
    "CALLS_SUBJECTS",
    "CONFIG_BUCKET",
    "REGISTRY_BUCKET",
    "RESULTS_BUCKET",
    "call_subject",
    "consumer_name",
    "function_key",
]

CALLS_STREAM = "AUTAN_CALLS"
CALLS_SUBJECTS = "autan.call.>"
REGISTRY_BUCKET = "autan_functions"
RESULTS_BUCKET = "autan_results"
CONFIG_BUCKET = "autan_config"


def call_subject(app: str, fn: str) -> str:
    """`autan.call.<app>.<fn>`: where calls to one function are published."""
    return f"autan.call.{app}.{fn}"


def consumer_name(app: str, fn: str) -> str:
    """The durable pull consumer of one function (one per function on a work-queue stream)."""
    return f"fn_{app}_{fn}".replace(".", "_")


def function_key(app: str, fn: str) -> str:
    """The registry key of one function: `<app>.<fn>`."""
    return f"{app}.{fn}"
