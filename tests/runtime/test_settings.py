"""Settings: read from the environment once, handed to children whole (`to_env`)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from runtime.control import worker_env
from runtime.core import HttpSettings, Settings, parse_api_keys
from tests.keys import DEPLOY_KEY, TRUSTED_KEYS


def test_to_env_reads_back_as_the_same_settings() -> None:
    settings = Settings(
        nats_url="nats://127.0.0.1:4333",
        storage_url="file:///tmp/objects",
        data_dir=Path("/tmp/autan-data"),
        s3_access_key="access",
        deploy_key="ed25519:" + "ab" * 32,
        trusted_keys="cd" * 32,
        ack_wait_s=2.5,
        max_queued_calls=10,
        log_format="json",
        http=HttpSettings(port=0, tracebacks=True, api_keys=parse_api_keys("tok:demo")),
    )
    assert Settings.from_env(settings.to_env()) == settings
    assert Settings.from_env(Settings().to_env()) == Settings()


def test_settings_given_in_code_reach_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTAN_ACK_WAIT_S", "99")  # the environment says otherwise
    monkeypatch.setenv("AUTAN_API_KEYS_FILE", "/nonexistent/keys.toml")  # the bridge's
    monkeypatch.setenv("AUTAN_FAULTS_LOG", "/tmp/kept.log")  # not a setting: inherited
    settings = Settings(
        ack_wait_s=2.0,
        payload_threshold_bytes=1024,
        data_dir=Path("rel"),
        deploy_key=DEPLOY_KEY,
        trusted_keys=TRUSTED_KEYS,
    )
    env = worker_env(settings, threads=3, device=None)
    seen = Settings.from_env(env)
    assert (seen.ack_wait_s, seen.payload_threshold_bytes) == (2.0, 1024)
    assert seen.data_dir == Path("rel").resolve()
    assert seen.http == HttpSettings()
    assert (seen.deploy_key, seen.trusted_keys) == (None, TRUSTED_KEYS)  # verify, never sign
    assert env["AUTAN_FAULTS_LOG"] == "/tmp/kept.log"
    assert (env["OMP_NUM_THREADS"], env["ORT_DISABLE_TELEMETRY"]) == ("3", "1")
    assert "CUDA_VISIBLE_DEVICES" not in env


@pytest.mark.parametrize(
    ("variable", "read"),
    [("AUTAN_NATS_URL", True), ("AUTAN_HTTP_PORT", True), ("AUTAN_API_KEYS", True),
     ("AUTAN_FAULTS_LOG", False), ("MINIO_ROOT_USER", False), ("AUTAN_HTTP", False)],
)  # fmt: skip
def test_which_variables_are_settings(variable: str, read: bool) -> None:
    assert Settings.reads(variable) is read


def test_flags_win_over_the_environment() -> None:
    env = {"AUTAN_NATS_URL": "nats://127.0.0.1:1", "AUTAN_HTTP_PORT": "9000"}
    settings = Settings.from_env(env, nats_url="nats://127.0.0.1:2").with_http(port=None)
    assert (settings.nats_url, settings.http.port) == ("nats://127.0.0.1:2", 9000)
    assert settings.with_http(port=0).http.port == 0


def test_bad_settings_say_which() -> None:
    with pytest.raises(ValueError, match="connect_timeout_s"):
        Settings.from_env({"AUTAN_CONNECT_TIMEOUT_S": "soon"})
    with pytest.raises(ValueError, match="port"):
        Settings.from_env({"AUTAN_HTTP_PORT": "70000"})


def test_settings_are_frozen() -> None:
    with pytest.raises(AttributeError):
        Settings().nats_url = "nats://elsewhere"  # type: ignore[misc]
    assert msgspec.structs.replace(Settings(), nats_url="nats://x").nats_url == "nats://x"
