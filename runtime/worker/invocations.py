"""What the executor runs and what it gives back: an invocation in, an outcome out."""

from __future__ import annotations

import traceback
from typing import Any

import msgspec

from broker import ErrorInfo

__all__ = ["Invocation", "Outcome", "error_info", "timeout_error"]


class Invocation(msgspec.Struct, frozen=True):
    """One call to run: its id and attempt, its arguments, and the subject of a trigger's."""

    call_id: str
    attempt: int
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    subject: str = ""  # for calls made by a trigger: where the message was published
    sink: Any = None  # for a generator function's call: where its items go (`Sink`)


class Outcome(msgspec.Struct, frozen=True):
    """What one invocation produced: a value or an error, and how long it ran."""

    value: Any = None
    error: ErrorInfo | None = None
    run_ms: float = 0.0


def error_info(exc: BaseException) -> ErrorInfo:
    """The caller's view of an exception: type name, message and traceback text."""
    text = "".join(traceback.format_exception(exc))
    return ErrorInfo(type=type(exc).__name__, message=str(exc), traceback=text[-16_000:])


def timeout_error(timeout_s: float) -> ErrorInfo:
    return ErrorInfo(
        type="FunctionTimeout",
        message=f"the call ran longer than its timeout_s={timeout_s:g}; raise timeout_s "
        "in @app.function or make the call faster",
    )
