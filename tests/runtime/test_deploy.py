"""Deploy is idempotent and content-addressed (tests/security/test_signatures.py has what
workers refuse)."""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import pytest

from broker import BrokerUnavailable
from runtime.client import Session
from runtime.core import (
    DeployError,
    DeployKey,
    Link,
    Settings,
    Trust,
)
from runtime.ops import deploy_target
from storage import ArtifactStore, Digest
from tests.keys import DEPLOY_KEY, TRUSTED_KEYS
from tests.stack import Stack

KEY = DeployKey.parse(DEPLOY_KEY)


async def test_redeploy_uploads_nothing_and_keeps_versions(stack: Stack) -> None:
    store = await stack.session.link.store()
    before = await store.list()
    again = await deploy_target(stack.session.link, "tests.apps.sample")
    assert {r.qualname: r.version for r in again} == {r.qualname: r.version for r in stack.results}
    assert all(not r.changed and r.uploaded_bytes == 0 for r in again)
    assert await store.list() == before


async def test_specs_are_signed_and_artifacts_content_addressed(stack: Stack) -> None:
    signed = await stack.session.registry.signed("tests", "echo")
    spec = Trust.parse(TRUSTED_KEYS).verify(signed, "tests", "echo")
    artifacts = ArtifactStore(await stack.session.link.store())
    data = await artifacts.get_bytes(Digest(spec.artifact, spec.artifact_bytes))
    assert Digest.of(data).hex == spec.artifact
    assert spec.sequence >= 1


async def test_unreachable_nats_fails_fast_with_the_url(settings: Settings) -> None:
    from runtime.control import free_port

    url = f"nats://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match=f"cannot reach NATS at {url} - is 'autan up'"):
        await Session.open(msgspec.structs.replace(settings, nats_url=url, connect_timeout_s=1.0))
    assert time.monotonic() - started < 3.0


_NEEDS_MISSING = """
from runtime import App, Context

app = App("needs")


@app.function()
def uses(ctx: Context, x: int) -> int:
    import autan_absent_package_for_tests  # installed nowhere

    return x
"""

_NEEDS_LOCAL = """
import autan_local_helper_for_tests  # beside the script: no worker has it

from runtime import App, Context

app = App("local")


@app.function()
def uses(ctx: Context, x: int) -> int:
    return autan_local_helper_for_tests.twice(x)
"""


async def test_a_module_workers_lack_fails_the_deploy_not_every_call(
    stack: Stack, tmp_path: Path
) -> None:
    """Imported inside the function's body: found in its bytecode; nothing is deployed."""
    script = tmp_path / "needs.py"
    script.write_text(_NEEDS_MISSING)
    refusal = (
        r"needs\.uses would fail on every worker: it imports "
        r"'autan_absent_package_for_tests', which is not installed here"
    )
    with pytest.raises(DeployError, match=refusal):
        await deploy_target(stack.session.link, str(script))
    assert await stack.session.registry.find("needs", "uses") is None


async def test_a_module_only_the_deployer_can_import_fails_the_deploy(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A helper beside the script (on the deployer's path, not installed): a clean
    interpreter cannot load the function."""
    (tmp_path / "autan_local_helper_for_tests.py").write_text("def twice(x):\n    return 2 * x\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    script = tmp_path / "local.py"
    script.write_text(_NEEDS_LOCAL)
    refusal = r"local\.uses would fail on every worker: it cannot be loaded: ModuleNotFoundError"
    with pytest.raises(DeployError, match=refusal):
        await deploy_target(stack.session.link, str(script))
    assert await stack.session.registry.find("local", "uses") is None


async def test_the_check_can_be_turned_off_for_workers_elsewhere(
    stack: Stack, tmp_path: Path
) -> None:
    script = tmp_path / "needs.py"
    script.write_text(_NEEDS_MISSING.replace('App("needs")', 'App("needs_off")'))
    link = stack.session.link
    settings = msgspec.structs.replace(link.settings, deploy_import_check=False)
    [result] = await deploy_target(Link(link.broker, link.registry, settings), str(script))
    assert result.changed
