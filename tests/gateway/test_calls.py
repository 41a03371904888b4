"""Calls through HTTP: arguments in, results out, sync, async, late results, function errors."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np

from broker import decode_value, encode_value
from tests.gateway.polling import until_settled

MSGPACK = "application/msgpack"


async def test_json_body_is_the_one_argument(client: httpx.AsyncClient) -> None:
    value = {"text": "héllo", "n": [1, 2.5, None, True]}
    response = await client.post("/v1/functions/gw/echo", json=value)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == value
    assert len(response.headers["autan-call-id"]) == 22
    assert response.headers["autan-attempts"] == "1"


async def test_explicit_arguments_by_header_or_query(client: httpx.AsyncClient) -> None:
    body = {"args": [1, "two"], "kwargs": {"flag": True}}
    by_header = await client.post(
        "/v1/functions/gw/describe", json=body, headers={"Autan-Arguments": "explicit"}
    )
    by_query = await client.post("/v1/functions/gw/describe?args=explicit", json=body)
    for response in (by_header, by_query):
        assert response.status_code == 200
        assert response.json()["args"] == [1, "two"]
        assert response.json()["kwargs"] == {"flag": True}
    plain = await client.post("/v1/functions/gw/describe", json=body)
    assert plain.json()["args"] == [body]


async def test_no_body_is_a_call_without_arguments(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/functions/gw/describe")
    assert response.status_code == 200
    assert response.json()["args"] == []


async def test_octet_stream_body_is_bytes(client: httpx.AsyncClient) -> None:
    data = bytes(range(256)) * 3
    response = await client.post(
        "/v1/functions/gw/length",
        content=data,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 200
    assert response.json() == len(data)


async def test_bytes_results_are_base64_in_json(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/functions/gw/blob", json=4)
    assert response.json() == "AAECAw=="


async def test_numpy_results_are_lists_in_json_and_arrays_in_msgpack(
    client: httpx.AsyncClient,
) -> None:
    body = {"args": [2, 3]}
    as_json = await client.post("/v1/functions/gw/grid?args=explicit", json=body)
    assert as_json.json() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    as_msgpack = await client.post(
        "/v1/functions/gw/grid?args=explicit", json=body, headers={"Accept": MSGPACK}
    )
    assert as_msgpack.headers["content-type"] == MSGPACK
    array = decode_value(as_msgpack.content)
    assert array.dtype == np.float32
    assert array.shape == (2, 3)


async def test_msgpack_bodies_carry_numpy_arrays(client: httpx.AsyncClient) -> None:
    array = np.arange(6, dtype=np.int16).reshape(3, 2)
    response = await client.post(
        "/v1/functions/gw/double",
        content=encode_value(array),
        headers={"Content-Type": MSGPACK, "Accept": MSGPACK},
    )
    assert response.status_code == 200
    result = decode_value(response.content)
    assert result.dtype == np.int16
    np.testing.assert_array_equal(result, array * 2)


async def test_async_call_is_pending_then_succeeds(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    door = tmp_path / "door"
    response = await client.post(
        "/v1/functions/gw/gate", json=str(door), headers={"Prefer": "respond-async"}
    )
    assert response.status_code == 202
    accepted = response.json()
    assert set(accepted) == {"call_id", "status_url"}
    assert accepted["status_url"] == f"/v1/calls/{accepted['call_id']}"
    assert response.headers["location"] == accepted["status_url"]
    pending = await client.get(accepted["status_url"])
    assert pending.status_code == 200
    assert pending.json() == {
        "call_id": accepted["call_id"],
        "status": "pending",
        "result": None,
        "error": None,
    }
    door.touch()
    done = await until_settled(client, accepted["status_url"])
    assert done == {
        "call_id": accepted["call_id"],
        "status": "succeeded",
        "result": "opened",
        "error": None,
    }


async def test_async_by_query_parameter(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/functions/gw/echo?async=true", json="later")
    assert response.status_code == 202
    status = await until_settled(client, response.json()["status_url"])
    assert status["result"] == "later"


async def test_sync_call_past_its_wait_is_504_and_goes_on(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/functions/gw/nap?timeout_s=0.05", json=0.5)
    assert response.status_code == 504
    error = response.json()["error"]
    assert error["type"] == "GatewayTimeout"
    assert error["status_url"] == f"/v1/calls/{error['call_id']}"
    assert response.headers["autan-call-id"] == error["call_id"]
    status = await until_settled(client, error["status_url"])
    assert status["status"] == "succeeded"
    assert status["result"] == 0.5


async def test_function_error_is_500_with_its_type_and_no_traceback(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/v1/functions/gw/boom", json="broken input")
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["type"] == "ValueError"
    assert error["message"] == "broken input"
    assert error["call_id"] == response.headers["autan-call-id"]
    assert "traceback" not in error
    assert "Traceback" not in response.text


async def test_failed_async_call_reports_its_error(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/functions/gw/boom?async=1", json="spawned failure")
    status = await until_settled(client, response.json()["status_url"])
    assert status["status"] == "failed"
    assert status["result"] is None
    assert status["error"] == {"type": "ValueError", "message": "spawned failure"}


async def test_sync_result_can_be_fetched_again(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/functions/gw/echo", json=[1, 2])
    again = await client.get(f"/v1/calls/{response.headers['autan-call-id']}")
    assert again.json()["result"] == [1, 2]


async def test_call_status_in_msgpack_keeps_arrays(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/functions/gw/grid?args=explicit&async=1", json={"args": [1, 2]}
    )
    await until_settled(client, response.json()["status_url"])
    packed = await client.get(response.json()["status_url"], headers={"Accept": MSGPACK})
    status = decode_value(packed.content)
    assert status["status"] == "succeeded"
    assert status["result"].dtype == np.float32


async def test_wait_shorter_than_the_ack_is_still_a_stored_call(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/functions/gw/nap?timeout_s=0.000001", json=0.05)
    assert response.status_code == 504
    status = await until_settled(client, response.json()["error"]["status_url"])
    assert status["result"] == 0.05
