"""The context every function receives as its first argument."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from runtime.core.models import ModelHandle

__all__ = ["Context"]


class Context:
    """What a running call can see: its id, attempt, the models and the setup state.

    `ctx.models["encoder"].run({...})` runs an ONNX session built once per worker;
    `ctx.state` holds what the function's `setup` hook returned (None without one).
    """

    __slots__ = ("attempt", "call_id", "function", "log", "models", "node", "state", "subject")

    def __init__(
        self,
        *,
        function: str,
        models: Mapping[str, ModelHandle],
        state: Any = None,
        call_id: str = "",
        attempt: int = 1,
        log: structlog.typing.FilteringBoundLogger | None = None,
        subject: str = "",
        node: str = "",
    ) -> None:
        self.function = function
        self.models = models
        self.state = state
        self.call_id = call_id
        self.attempt = attempt
        self.log = log or structlog.get_logger(function=function)
        self.subject = subject  # the subject a triggering message was published on
        self.node = node  # the node (agent) or host the worker runs on

    def for_call(self, call_id: str, attempt: int, subject: str = "") -> Context:
        """A copy bound to one call (cheap: models and state are shared)."""
        return Context(
            function=self.function,
            models=self.models,
            state=self.state,
            call_id=call_id,
            attempt=attempt,
            log=self.log.bind(call_id=call_id),
            subject=subject,
            node=self.node,
        )
