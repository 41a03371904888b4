"""API keys: parsed from a file or a string, required off loopback, scoped to apps."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from runtime.core import ApiKey, ApiKeys, Settings, load_api_keys, parse_api_keys
from runtime.gateway import serve_gateway
from runtime.gateway.keys import is_loopback
from tests.gateway.running import ALL_KEY, GW_KEY, OTHER_KEY, bearer
from tests.stack import Stack


def test_parse_compact_entries() -> None:
    keys = parse_api_keys("tok-one:demo,search;tok-two\n tok-three:*")
    assert keys.keys == (
        ApiKey(key="tok-one", apps=("demo", "search")),
        ApiKey(key="tok-two"),
        ApiKey(key="tok-three", apps=("*",)),
    )


def test_parse_json_document() -> None:
    keys = parse_api_keys('{"keys": [{"key": "tok", "apps": ["demo"], "name": "billing"}]}')
    assert keys.keys == (ApiKey(key="tok", apps=("demo",), name="billing"),)


def test_load_json_and_toml_files(tmp_path: Path) -> None:
    as_json = tmp_path / "keys.json"
    as_json.write_text('{"keys": [{"key": "tok", "apps": ["demo"]}]}')
    as_toml = tmp_path / "keys.toml"
    as_toml.write_text('[[keys]]\nkey = "tok"\napps = ["demo"]\n')
    assert (
        load_api_keys(as_json)
        == load_api_keys(as_toml)
        == ApiKeys(keys=(ApiKey(key="tok", apps=("demo",)),))
    )


def test_keys_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    path.write_text('[[keys]]\nkey = "from-file"\n')

    def keys(env: dict[str, str]) -> ApiKeys | None:
        return Settings.from_env(env).http.api_keys

    assert keys({}) is None
    assert keys({"AUTAN_API_KEYS": "tok:demo"}) == parse_api_keys("tok:demo")
    from_file = keys({"AUTAN_API_KEYS_FILE": str(path)})
    assert from_file is not None
    assert from_file.keys[0].key == "from-file"
    with pytest.raises(ValueError, match="not both"):
        keys({"AUTAN_API_KEYS": "a", "AUTAN_API_KEYS_FILE": str(path)})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "at least one"),
        ("tok:", "at least one app"),
        ("same same", "twice"),
        ('{"keys": [{"key": "has space"}]}', "printable"),
        ('{"keys": [{"key": "tok", "scopes": []}]}', "scopes"),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_keys_are_refused_with_the_reason(text: str, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        parse_api_keys(text)


def test_errors_never_show_a_key(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one app") as raised:
        parse_api_keys('{"keys": [{"key": "sup3r-secret", "apps": []}]}')
    assert "sup3r-secret" not in str(raised.value)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"keys\.toml"):
        load_api_keys(tmp_path / "keys.toml")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.2.1", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
        ("example.internal", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
async def test_keys_off_is_refused_off_loopback(settings: Settings, host: str) -> None:
    with pytest.raises(ValueError, match="without API keys"):
        await serve_gateway(settings.with_http(host=host, port=0))


async def test_missing_or_unknown_key_is_401(gateway: str) -> None:
    async with httpx.AsyncClient(base_url=gateway) as client:
        for headers in ({}, bearer("not-a-configured-key"), {"Authorization": "Basic abc"}):
            response = await client.post("/v1/functions/gw/echo", json=1, headers=headers)
            assert response.status_code == 401
            assert response.json()["error"]["type"] == "Unauthorized"
            assert response.headers["www-authenticate"].startswith("Bearer")
        for path in ("/v1/functions", "/v1/calls/someid", "/metrics"):
            assert (await client.get(path)).status_code == 401


async def test_key_of_another_app_gets_the_same_404_as_a_missing_function(gateway: str) -> None:
    async with httpx.AsyncClient(base_url=gateway, headers=bearer(OTHER_KEY)) as client:
        hidden = await client.post("/v1/functions/gw/echo", json=1)
        missing = await client.post("/v1/functions/gw/nothing", json=1)
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["error"]["message"] == "no function gw.echo that this key may call"
    assert missing.json()["error"]["message"] == "no function gw.nothing that this key may call"


async def test_scoped_key_calls_its_app_and_sees_only_its_calls(gateway: str) -> None:
    async with httpx.AsyncClient(base_url=gateway, headers=bearer(GW_KEY)) as client:
        response = await client.post("/v1/functions/gw/echo?async=1", json="mine")
        assert response.status_code == 202
        status_url = response.json()["status_url"]
        assert (await client.get(status_url)).status_code == 200
        missing = await client.post("/v1/functions/gw/ehco", json=1)
        assert "deployed: " in missing.json()["error"]["message"]
    async with httpx.AsyncClient(base_url=gateway, headers=bearer(OTHER_KEY)) as other:
        assert (await other.get(status_url)).status_code == 404


async def test_scoped_key_reads_its_sync_calls_again(gateway: str) -> None:
    async with httpx.AsyncClient(base_url=gateway, headers=bearer(GW_KEY)) as client:
        response = await client.post("/v1/functions/gw/echo", json="sync")
        again = await client.get(f"/v1/calls/{response.headers['autan-call-id']}")
    assert again.json()["result"] == "sync"


async def test_calls_not_made_here_are_for_all_app_keys_only(gateway: str, gw_stack: Stack) -> None:
    call_id = await gw_stack.session.spawn("gw", "echo", ("from python",), {})
    assert await gw_stack.session.result(call_id, timeout_s=10) == "from python"
    async with httpx.AsyncClient(base_url=gateway, headers=bearer(GW_KEY)) as scoped:
        assert (await scoped.get(f"/v1/calls/{call_id}")).status_code == 404
    async with httpx.AsyncClient(base_url=gateway, headers=bearer(ALL_KEY)) as everything:
        status = (await everything.get(f"/v1/calls/{call_id}")).json()
    assert status["result"] == "from python"


async def test_metrics_need_a_key_for_every_app(gateway: str) -> None:
    async with httpx.AsyncClient(base_url=gateway, headers=bearer(GW_KEY)) as client:
        response = await client.get("/metrics")
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "Forbidden"


async def test_function_list_is_scoped(gateway: str) -> None:
    async with httpx.AsyncClient(base_url=gateway, headers=bearer(OTHER_KEY)) as client:
        assert (await client.get("/v1/functions")).json() == {"functions": []}
    async with httpx.AsyncClient(base_url=gateway, headers=bearer(GW_KEY)) as client:
        functions = (await client.get("/v1/functions")).json()["functions"]
    assert functions
    assert {f["app"] for f in functions} == {"gw"}
