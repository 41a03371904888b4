"""Gateway settings from the environment, and how long a sync call waits: tables."""

from __future__ import annotations

import pytest
from starlette.datastructures import Headers, QueryParams

from runtime.core import HttpSettings, Settings
from runtime.gateway.call_options import CallOptions
from runtime.gateway.errors import BadRequest


def test_config_from_env() -> None:
    settings = Settings.from_env(
        {
            "AUTAN_HTTP_MAX_BODY_BYTES": "1024",
            "AUTAN_HTTP_TIMEOUT_S": "5",
            "AUTAN_HTTP_TRACEBACKS": "true",
            "AUTAN_HTTP_MAX_TIMEOUT_S": "",
            "UNRELATED": "x",
        }
    )
    assert settings.http == HttpSettings(max_body_bytes=1024, timeout_s=5.0, tracebacks=True)


@pytest.mark.parametrize(
    "env",
    [
        {"AUTAN_HTTP_MAX_BODY_BYTES": "lots"},
        {"AUTAN_HTTP_MAX_BODY_BYTES": "0"},
        {"AUTAN_HTTP_TIMEOUT_S": "600"},  # over max_timeout_s
    ],
)
def test_bad_config_is_refused(env: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=r"invalid HTTP bridge setting"):
        Settings.from_env(env)


@pytest.mark.parametrize(
    ("query", "function_timeout_s", "wait_s"),
    [
        ("", 10.0, 60.0),  # the default wait
        ("", 120.0, 120.0),  # a function allowed longer is waited for longer
        ("", 1000.0, 300.0),  # ... never past max_timeout_s
        ("timeout_s=2.5", 120.0, 2.5),
        ("timeout_s=9999", 10.0, 300.0),  # capped
    ],
)
def test_sync_wait(query: str, function_timeout_s: float, wait_s: float) -> None:
    options = CallOptions.read(Headers(), QueryParams(query))
    assert options.wait_s(HttpSettings(), function_timeout_s) == wait_s


@pytest.mark.parametrize(
    ("headers", "query", "expected"),
    [
        ({}, "", CallOptions()),
        ({"Prefer": "respond-async"}, "", CallOptions(respond_async=True)),
        ({"Prefer": "handling=lenient, respond-async"}, "", CallOptions(respond_async=True)),
        ({}, "async=1", CallOptions(respond_async=True)),
        ({}, "async=false", CallOptions()),
        ({"Autan-Arguments": "Explicit"}, "", CallOptions(explicit=True)),
        ({}, "args=explicit", CallOptions(explicit=True)),
        ({"Idempotency-Key": "k1"}, "", CallOptions(idempotency_key="k1")),
    ],
)
def test_call_options(headers: dict[str, str], query: str, expected: CallOptions) -> None:
    assert CallOptions.read(Headers(headers), QueryParams(query)) == expected


@pytest.mark.parametrize("query", ["async=later", "timeout_s=0", "timeout_s=inf", "args=implicit"])
def test_meaningless_call_options_are_400(query: str) -> None:
    with pytest.raises(BadRequest):
        CallOptions.read(Headers(), QueryParams(query))
