"""Idempotency-Key: the same key is the same call, run once; another request is refused."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx

from tests.gateway.polling import until_settled
from tests.gateway.running import GW_KEY, bearer


def _key() -> dict[str, str]:
    return {"Idempotency-Key": f"test-{uuid.uuid4()}"}


def _runs(path: Path) -> list[str]:
    return path.read_text().split()


async def test_repeated_key_returns_the_same_call_run_once(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    log, key = tmp_path / "runs", _key()
    first = await client.post("/v1/functions/gw/record", json=str(log), headers=key)
    second = await client.post("/v1/functions/gw/record", json=str(log), headers=key)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json() == first.headers["autan-call-id"]
    assert second.headers["autan-call-id"] == first.headers["autan-call-id"]
    assert _runs(log) == [first.json()]


async def test_concurrent_requests_with_one_key_run_once(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    log, key = tmp_path / "runs", _key()
    responses = await asyncio.gather(
        *(client.post("/v1/functions/gw/record", json=str(log), headers=key) for _ in range(5))
    )
    assert {r.status_code for r in responses} == {200}
    assert len({r.json() for r in responses}) == 1
    assert len(_runs(log)) == 1


async def test_async_then_sync_with_one_key(client: httpx.AsyncClient, tmp_path: Path) -> None:
    log, key = tmp_path / "runs", _key()
    queued = await client.post("/v1/functions/gw/record?async=true", json=str(log), headers=key)
    assert queued.status_code == 202
    again = await client.post("/v1/functions/gw/record?async=true", json=str(log), headers=key)
    assert again.json() == queued.json()
    waited = await client.post("/v1/functions/gw/record", json=str(log), headers=key)
    assert waited.status_code == 200
    assert waited.json() == queued.json()["call_id"]
    assert _runs(log) == [queued.json()["call_id"]]


async def test_key_reused_with_another_body_is_422(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    key = _key()
    first = await client.post("/v1/functions/gw/echo", json={"a": 1, "b": 2}, headers=key)
    reordered = await client.post(
        "/v1/functions/gw/echo",
        content=b'{"b": 2, "a": 1}',
        headers={**key, "Content-Type": "application/json"},
    )
    assert reordered.status_code == 200
    assert reordered.headers["autan-call-id"] == first.headers["autan-call-id"]
    other = await client.post("/v1/functions/gw/echo", json={"a": 1, "b": 3}, headers=key)
    assert other.status_code == 422
    error = other.json()["error"]
    assert error["type"] == "IdempotencyConflict"
    assert "another request" in error["message"]
    assert error["call_id"] == first.headers["autan-call-id"]


async def test_key_is_scoped_to_the_function(client: httpx.AsyncClient) -> None:
    key = _key()
    echo = await client.post("/v1/functions/gw/echo", json="x", headers=key)
    describe = await client.post("/v1/functions/gw/describe", json="x", headers=key)
    assert echo.status_code == describe.status_code == 200
    assert echo.headers["autan-call-id"] != describe.headers["autan-call-id"]


async def test_key_is_scoped_to_the_api_key(client: httpx.AsyncClient, gateway: str) -> None:
    key = _key()
    mine = await client.post("/v1/functions/gw/echo", json="x", headers=key)
    async with httpx.AsyncClient(base_url=gateway, headers=bearer(GW_KEY)) as other:
        theirs = await other.post("/v1/functions/gw/echo", json="y", headers=key)
    assert theirs.status_code == 200
    assert theirs.headers["autan-call-id"] != mine.headers["autan-call-id"]


async def test_failed_call_is_answered_again_from_its_record(
    client: httpx.AsyncClient,
) -> None:
    key = _key()
    first = await client.post("/v1/functions/gw/boom", json="once", headers=key)
    second = await client.post("/v1/functions/gw/boom", json="once", headers=key)
    assert first.status_code == second.status_code == 500
    assert first.json() == second.json()
    status = await until_settled(client, f"/v1/calls/{first.headers['autan-call-id']}")
    assert status["status"] == "failed"


async def test_malformed_key_is_400(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/functions/gw/echo", json=1, headers={"Idempotency-Key": "x" * 256}
    )
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["error"]["message"]
