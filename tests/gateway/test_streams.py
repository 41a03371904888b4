"""A generator function over HTTP: Server-Sent Events, NDJSON, or one list at the end."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.gateway.running import ALL_KEY, bearer
from tests.stack import poll

URL = "/v1/functions/gw/count"
EXPLICIT = {"Autan-Arguments": "explicit"}


def _events(text: str) -> list[dict[str, str]]:
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append(fields)
    return events


async def test_server_sent_events_carry_each_item_then_the_end(client: httpx.AsyncClient) -> None:
    headers = {"Accept": "text/event-stream"}
    async with client.stream("POST", URL, json=5, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = (await response.aread()).decode()
    events = _events(text)
    assert [(e["id"], json.loads(e["data"])) for e in events[:-1]] == [
        (str(i), i) for i in range(5)
    ]
    assert events[-1] == {"event": "end", "data": '{"items":5}'}


async def test_an_error_mid_stream_is_an_error_event_at_its_place(
    client: httpx.AsyncClient,
) -> None:
    body = {"args": [10], "kwargs": {"fail_at": 3}}
    headers = {"Accept": "text/event-stream", **EXPLICIT}
    response = await client.post(URL, json=body, headers=headers)
    events = _events(response.text)
    assert [json.loads(e["data"]) for e in events[:3]] == [0, 1, 2]
    assert events[3]["event"] == "error"
    assert json.loads(events[3]["data"])["error"]["type"] == "ValueError"
    assert len(events) == 4


async def test_ndjson_streams_one_item_per_line(client: httpx.AsyncClient) -> None:
    response = await client.post(URL, json=4, headers={"Accept": "application/x-ndjson"})
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert [json.loads(line) for line in response.text.splitlines()] == [0, 1, 2, 3]


async def test_plain_json_gets_every_item_as_one_list(client: httpx.AsyncClient) -> None:
    response = await client.post(URL, json=4)
    assert response.status_code == 200
    assert response.json() == [0, 1, 2, 3]


async def test_a_live_stream_cannot_be_run_once_per_key(client: httpx.AsyncClient) -> None:
    response = await client.post(URL, json=4, headers={"Idempotency-Key": "k1"})
    assert response.status_code == 400
    assert "is a generator" in response.json()["error"]["message"]


async def test_a_client_that_disconnects_stops_the_generator(gateway: str, tmp_path: Path) -> None:
    """Read two events, hang up: the generator in the worker is closed, far from its end."""
    log = tmp_path / "log"
    body = {"args": [1_000_000], "kwargs": {"log": str(log)}}
    headers = {"Accept": "text/event-stream", **EXPLICIT, **bearer(ALL_KEY)}
    async with (
        httpx.AsyncClient(base_url=gateway, timeout=10) as own,  # a connection of its own
        own.stream("POST", URL, json=body, headers=headers) as response,
    ):
        assert response.status_code == 200
        seen = 0
        async for line in response.aiter_lines():
            seen += line.startswith("id: ")
            if seen == 2:
                break

    async def closed() -> bool:
        return log.exists() and "closed" in log.read_text().splitlines()

    await poll(closed, timeout_s=15)
    yielded = sum(line.startswith("yield") for line in log.read_text().splitlines())
    assert yielded < 10_000


async def test_a_spawned_stream_is_read_and_resumed_after_last_event_id(
    client: httpx.AsyncClient,
) -> None:
    queued = await client.post(URL + "?async=true", json=5)
    assert queued.status_code == 202
    call_id = queued.json()["call_id"]
    items = f"/v1/calls/{call_id}/items"
    whole = _events((await client.get(items, headers={"Accept": "text/event-stream"})).text)
    assert [(e["id"], e["data"]) for e in whole[:-1]] == [(str(i), str(i)) for i in range(5)]
    assert whole[-1] == {"event": "end", "data": '{"items":5}'}
    resumed = await client.get(items, headers={"Accept": "text/event-stream", "Last-Event-ID": "2"})
    assert [e["id"] for e in _events(resumed.text)[:-1]] == ["3", "4"]
    assert (await client.get(items)).json() == [0, 1, 2, 3, 4]


async def test_items_of_a_plain_call_are_refused_with_where_to_look(
    client: httpx.AsyncClient,
) -> None:
    queued = await client.post("/v1/functions/gw/echo?async=true", json=1)
    response = await client.get(f"/v1/calls/{queued.json()['call_id']}/items")
    assert response.status_code == 400
    assert "returns one result" in response.json()["error"]["message"]
