"""Secrets per function: sealed at rest, readable by the admin identity alone, opened by
the control plane for the workers of the functions that declare them, and never logged."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from broker import SECRETS_BUCKET, Broker, Identities, PermissionDenied, worker_role
from runtime.control import (
    EmbeddedAccess,
    LocalProvider,
    NatsServer,
    Scaler,
    StackSecrets,
    free_port,
    isolation_unavailable,
    read_statuses,
)
from runtime.core import (
    ADMIN,
    InvalidOption,
    Link,
    SecretsKey,
    SecretStore,
    Settings,
    WorkerDirectory,
)
from runtime.ops import deploy_target, make_buckets
from tests.apps import secretive
from tests.keys import DEPLOY_KEY, TRUSTED_KEYS
from tests.stack import serving

ROOT = Path(__file__).resolve().parents[2]
API_TOKEN = "tok-3c1f0e6b9a27-only-for-holder"
OTHER_TOKEN = "tok-8d5e2a41f7c0-only-for-stranger"
LATE_TOKEN = "tok-51b9e0c3a6d2-set-late"


class Secretive:
    def __init__(self, settings: Settings, access: EmbeddedAccess, url: str) -> None:
        self.settings = settings
        self.access = access
        self.url = url


@pytest.fixture(scope="module")
async def secretive_stack(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Secretive]:
    """A stack as `autan up` runs it, with the secrets of two of its functions set."""
    root = tmp_path_factory.mktemp("secretive")
    access = EmbeddedAccess(Identities(root / "creds"))
    server = NatsServer(root / "nats", port=free_port(), authorization=access.authorization())
    server.start()
    access.attach(server)
    settings = Settings(
        nats_url=server.url,
        data_dir=root,
        storage_url=f"file://{root / 'objects'}",
        deploy_key=DEPLOY_KEY,
        trusted_keys=TRUSTED_KEYS,
        connect_timeout_s=2.0,
    )
    key = SecretsKey.load_or_create(settings.secrets_key_path)
    try:
        async with await Link.open(settings, role=ADMIN) as link:
            await make_buckets(link)
            store = SecretStore(link.broker)
            await store.record_key(key)
            await store.set("API_TOKEN", API_TOKEN)
            await store.set("OTHER_TOKEN", OTHER_TOKEN)
            await deploy_target(link, "tests.apps.secretive")
            provider = LocalProvider(
                settings,
                access=access,
                isolate=isolation_unavailable() is None,
                secrets=StackSecrets(store, key),
                stop_grace_s=10,
            )
            scaler = Scaler(link.broker, provider, tick_s=0.2)
            secretive.app.sessions.configure(settings)
            async with serving(provider, scaler):
                yield Secretive(settings, access, server.url)
    finally:
        await secretive.app.sessions.aclose()
        server.stop()


@pytest.mark.timeout(120)
async def test_each_function_gets_the_secrets_it_declares_and_no_other(
    secretive_stack: Secretive,
) -> None:
    with anyio.fail_after(90):
        holder = await secretive.holder.remote.aio()
        stranger = await secretive.stranger.remote.aio()
    assert holder == {"API_TOKEN": API_TOKEN, "OTHER_TOKEN": None, "LATE_TOKEN": None}
    assert stranger == {"API_TOKEN": None, "OTHER_TOKEN": OTHER_TOKEN, "LATE_TOKEN": None}


async def test_secrets_are_sealed_at_rest(secretive_stack: Secretive) -> None:
    async with await Link.open(secretive_stack.settings, role=ADMIN) as link:
        stored = await (await link.broker.bucket(SECRETS_BUCKET)).get("API_TOKEN")
    assert API_TOKEN.encode() not in stored
    assert SecretsKey.load_or_create(secretive_stack.settings.secrets_key_path).open(stored)
    other = SecretsKey.load_or_create(secretive_stack.settings.data_dir / "other.key")
    with pytest.raises(ValueError, match="sealed for another secrets key"):
        other.open(stored)


async def test_a_functions_identity_cannot_read_the_secrets(secretive_stack: Secretive) -> None:
    async with await Link.open(secretive_stack.settings, role=ADMIN) as link:
        spec = await link.registry.get("secretive", "holder")
    creds = await secretive_stack.access.worker_creds(spec)
    broker = await Broker.connect(
        secretive_stack.url, creds=creds, role=worker_role("secretive", "holder")
    )
    try:
        with pytest.raises(PermissionDenied):
            await (await broker.bucket(SECRETS_BUCKET)).get("API_TOKEN")
    finally:
        await broker.close()


@pytest.mark.timeout(120)
async def test_a_missing_secret_holds_the_calls_until_it_is_set(
    secretive_stack: Secretive,
) -> None:
    """Not set: no worker starts, the status says what to do, the call waits (nothing is
    lost); once set, the call is served."""
    call = await secretive.late.spawn.aio()
    async with await Link.open(secretive_stack.settings, role=ADMIN) as link:
        with anyio.fail_after(30):
            while True:
                statuses = {s.function: s for s in await read_statuses(link.broker)}
                status = statuses.get("secretive.late")
                if status is not None and "autan secret set LATE_TOKEN" in status.reason:
                    break
                await anyio.sleep(0.1)
        assert "cannot start" in status.reason
        alive = await (await WorkerDirectory.open(link.broker)).alive()
        assert not [w for w in alive if w.function == "secretive.late"]
        await SecretStore(link.broker).set("LATE_TOKEN", LATE_TOKEN)
    with anyio.fail_after(60):
        seen = await call.get_aio()
    assert seen["LATE_TOKEN"] == LATE_TOKEN


def test_a_secret_name_is_checked_at_decoration() -> None:
    from runtime import App

    app = App("names")
    for bad in ("AUTAN_NATS_URL", "LD_PRELOAD", "PATH", "PYTHONPATH", "1TOKEN", "A-B", ""):
        with pytest.raises(InvalidOption, match="secret name"):
            app.function(secrets=[bad])
    with pytest.raises(InvalidOption, match="give a list of names"):
        app.function(secrets="API_TOKEN")
    with pytest.raises(InvalidOption, match="each name once"):
        app.function(secrets=["A", "A"])


@pytest.mark.timeout(120)
def test_the_cli_sets_lists_and_removes_secrets_without_showing_them(
    secretive_stack: Secretive, capfd: pytest.CaptureFixture[str]
) -> None:
    """The value comes in on stdin; `ls` shows names only; nothing logs a value (the
    stack's and the workers' output is captured here too)."""
    settings = secretive_stack.settings

    def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTAN_")}
        command = [sys.executable, "-m", "runtime.ops.cli", "--data-dir", str(settings.data_dir),
                   "--nats-url", secretive_stack.url, *args]  # fmt: skip
        return subprocess.run(
            command, input=stdin, env={**env, "PYTHONPATH": str(ROOT)},
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    made = cli("secret", "set", "CLI_TOKEN", stdin="tok-from-the-cli\n")
    assert made.returncode == 0, made.stderr
    listing = cli("secret", "ls")
    assert "CLI_TOKEN" in listing.stdout.split()
    assert "API_TOKEN" in listing.stdout.split()
    assert API_TOKEN not in listing.stdout
    assert cli("secret", "set", "LD_PRELOAD", stdin="x").returncode == 2
    assert "no value" in cli("secret", "set", "EMPTY_TOKEN").stderr
    assert cli("secret", "rm", "CLI_TOKEN").returncode == 0
    assert cli("secret", "rm", "CLI_TOKEN").returncode == 1
    assert "CLI_TOKEN" not in cli("secret", "ls").stdout.split()
    out, err = capfd.readouterr()
    for value in (API_TOKEN, OTHER_TOKEN, LATE_TOKEN, "tok-from-the-cli"):
        assert value not in out + err
