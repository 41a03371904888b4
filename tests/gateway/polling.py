"""Waiting for a call's status to settle, by polling its status URL (there is no push)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.stack import poll


async def until_settled(client: httpx.AsyncClient, status_url: str) -> dict[str, Any]:
    """The call's status once it is no longer pending."""
    seen: dict[str, Any] = {}

    async def settled() -> bool:
        response = await client.get(status_url)
        assert response.status_code == 200, response.text
        seen.update(response.json())
        return bool(seen["status"] != "pending")

    await poll(settled, timeout_s=10)
    return seen
