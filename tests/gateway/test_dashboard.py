"""The dashboard at /ui, in a real headless browser (Chromium): it loads, shows the deployed
functions, and shows a dead letter once a call has failed; redrive runs it again."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser

import anyio
import httpx
import pytest

from runtime import RemoteError
from tests.gateway import app as gw
from tests.gateway.running import ALL_KEY, GW_KEY, bearer

pytestmark = pytest.mark.timeout(180)


class _Rows(HTMLParser):
    """The `data-*` attributes of every table row of the rendered page."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append({k: v or "" for k, v in attrs if k.startswith("data-")})


def _rendered(url: str) -> str:
    """The page's DOM after its scripts ran, as Chromium renders it."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "chromium is not installed: 'make system' installs it"
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--virtual-time-budget=10000", "--dump-dom", url],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _rows(dom: str) -> list[dict[str, str]]:
    parser = _Rows()
    parser.feed(dom)
    return parser.rows


async def test_the_dashboard_shows_functions_and_a_new_dead_letter(gateway: str) -> None:
    page = f"{gateway}/ui#key={ALL_KEY}"
    before = await anyio.to_thread.run_sync(_rendered, page)
    functions = {row.get("data-function") for row in _rows(before)}
    assert {"gw.echo", "gw.boom", "gw.nap"} <= functions
    assert "updated " in before  # the page read the state

    with pytest.raises(RemoteError):
        await gw.boom.remote.aio("for the dashboard")  # fails for good: a dead letter
    after = await anyio.to_thread.run_sync(_rendered, page)
    letters = [row for row in _rows(after) if "data-letter" in row]
    assert any(row["data-function"] == "gw.boom" for row in letters), after[-3000:]
    assert "for the dashboard" in after


async def test_dashboard_state_and_redrive_want_an_operators_key(gateway: str) -> None:
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:
        assert (await client.get("/v1/dashboard")).status_code == 401
        narrow = await client.get("/v1/dashboard", headers=bearer(GW_KEY))
        assert narrow.status_code == 403
        with pytest.raises(RemoteError):
            await gw.boom.remote.aio("to redrive")
        state = (await client.get("/v1/dashboard", headers=bearer(ALL_KEY))).json()
        letter = next(row for row in state["dead_letters"] if "to redrive" in row["message"])
        redriven = await client.post(
            f"/v1/dead-letters/{letter['seq']}/redrive", headers=bearer(ALL_KEY)
        )
        assert redriven.status_code == 200, redriven.text
        assert redriven.json()["call_id"] != letter["call_id"]
        again = await client.post(
            f"/v1/dead-letters/{letter['seq']}/redrive", headers=bearer(ALL_KEY)
        )
        assert again.status_code == 404  # it was dropped when redriven
