"""The dashboard at `/ui`: what an operator watches, served by the bridge.

`GET /ui` is a page (HTML, CSS and JavaScript in this package: nothing from the internet)
that reads `GET /v1/dashboard` every 2 s: the parts of the stack and whether they report,
each function with its version, workers by state, backlog, oldest call and last scaling
decision, and the latest dead letters, each with a button that redrives it
(`POST /v1/dead-letters/{seq}/redrive`); a chart of backlog and workers over the last
minutes is drawn from what it read. With API keys on, both API routes want a key for every
app (`*`): the page asks for one and keeps it for the browser tab.
"""

from __future__ import annotations

import time
from importlib import resources

import msgspec
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from runtime.core import (
    STALE_AFTER_S,
    DeadLetters,
    FunctionStatus,
    read_parts,
    read_statuses,
)
from runtime.gateway.codec import json_response
from runtime.gateway.errors import Forbidden, NotFound
from runtime.gateway.keys import KeyRing
from runtime.gateway.uplink import Uplink

__all__ = ["Dashboard"]

_LETTERS_SHOWN = 20


class FunctionRow(msgspec.Struct, frozen=True):
    function: str
    version: str
    deployed_unix_s: float
    status: FunctionStatus | None  # None: the scaler has not reported on it yet


class PartRow(msgspec.Struct, frozen=True):
    kind: str
    host: str
    where: str
    up: bool
    problem: str | None


class LetterRow(msgspec.Struct, frozen=True):
    seq: int
    call_id: str
    function: str
    reason: str
    attempts: int
    error_type: str
    message: str


class DashboardState(msgspec.Struct, frozen=True):
    now_unix_s: float
    parts: list[PartRow]
    functions: list[FunctionRow]
    dead_letters: list[LetterRow]


class Redriven(msgspec.Struct, frozen=True):
    seq: int
    call_id: str  # the new call's


class Dashboard:
    """The page and the two routes it uses."""

    def __init__(self, uplink: Uplink, keys: KeyRing) -> None:
        self.uplink = uplink
        self.keys = keys
        self._page = resources.files("runtime.gateway").joinpath("assets/dashboard.html")

    async def page(self, request: Request) -> Response:
        """GET /ui: the page (no data in it: it asks for the state with the key)."""
        return HTMLResponse(self._page.read_text(encoding="utf-8"))

    async def state(self, request: Request) -> Response:
        """GET /v1/dashboard: everything the page shows, at once."""
        self._operator(request)
        link = self.uplink.link
        now = time.time()
        statuses = {status.function: status for status in await read_statuses(link.broker)}
        functions = [
            FunctionRow(
                spec.qualname, spec.version, spec.deployed_unix_s, statuses.get(spec.qualname)
            )
            for spec in sorted(await link.registry.all(), key=lambda spec: spec.qualname)
        ]
        parts = [
            PartRow(
                report.kind,
                report.host,
                report.where,
                report.age_s(now) < STALE_AFTER_S,
                report.problem,
            )
            for report in await read_parts(link.broker)
        ]
        letters = (await DeadLetters(link.broker).list())[-_LETTERS_SHOWN:]
        rows = [
            LetterRow(
                seq=letter.seq,
                call_id=letter.letter.call_id,
                function=f"{letter.letter.app}.{letter.letter.fn}",
                reason=letter.letter.reason,
                attempts=letter.letter.attempts,
                error_type=letter.letter.error.type,
                message=letter.letter.error.message[:500],
            )
            for letter in reversed(letters)
        ]
        return json_response(DashboardState(now, parts, functions, rows))

    async def redrive(self, request: Request) -> Response:
        """POST /v1/dead-letters/{seq}/redrive: run the call again under a new id."""
        self._operator(request)
        link = self.uplink.link
        letters = DeadLetters(link.broker, await link.store(), remember=link.remember_spawned_as)
        try:
            letter = await letters.find(str(int(request.path_params["seq"])))
        except (LookupError, ValueError):
            raise NotFound("no such dead letter (redriven or purged already?)") from None
        return json_response(Redriven(letter.seq, await letters.redrive(letter)))

    def _operator(self, request: Request) -> None:
        access = self.keys.authenticate(request.headers.get("authorization"))
        if not access.all_apps:
            raise Forbidden("the dashboard is for keys that may call every app ('*')")
