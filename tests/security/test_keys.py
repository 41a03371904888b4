"""Deploy keys: made once by the stack, private to their owner, never made by a deployer by
accident, and public keys alone on the verifying side."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from runtime.core import (
    ArtifactRejected,
    DeployKey,
    FunctionOptions,
    FunctionSpec,
    Settings,
    Trust,
    python_version,
)
from tests.keys import DEPLOY_KEY, OTHER_KEY, TRUSTED_KEYS


def test_the_stack_makes_its_key_once_private_and_trusts_it(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    key = settings.stack_keys()
    path = tmp_path / "data" / "deploy.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert settings.trust().trusts(key.public)
    assert settings.stack_keys().public == key.public  # the same key the next time
    assert settings.trusted_keys_path.read_text().count(key.public) == 1
    assert key.public not in path.read_text()  # the file holds the seed, the log the public


def test_a_deployer_without_a_key_is_told_where_to_find_one(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "elsewhere")
    with pytest.raises(ValueError, match=r"no deploy key at .*deploy\.key"):
        settings.load_deploy_key()
    assert not (tmp_path / "elsewhere").exists()  # nothing made on the way


def test_a_key_is_never_written_over(tmp_path: Path) -> None:
    DeployKey.create(tmp_path / "k")
    with pytest.raises(ValueError, match="never written over"):
        DeployKey.create(tmp_path / "k")


def test_keys_never_show_their_secret() -> None:
    key = DeployKey.parse(DEPLOY_KEY)
    assert DEPLOY_KEY.removeprefix("ed25519:") not in repr(key)
    assert key.public == TRUSTED_KEYS


@pytest.mark.parametrize("text", ["", "12", "zz" * 32, "ab" * 33])
def test_malformed_keys_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="64 hex digits"):
        DeployKey.parse(text)
    with pytest.raises(ValueError, match="64 hex digits"):
        Trust.parse(text or "x")


def test_trusted_keys_rotate() -> None:
    old, new = DeployKey.parse(DEPLOY_KEY), DeployKey.parse(OTHER_KEY)
    trust = Trust.parse(f"{old.public}, {new.public}  # rotating\n")
    spec = FunctionSpec(app="a", name="f", version="v", python=python_version(),
                        artifact="0" * 64, artifact_bytes=1, options=FunctionOptions())  # fmt: skip
    for key in (old, new):
        assert trust.verify(key.sign(spec), "a", "f") == spec
    with pytest.raises(ArtifactRejected, match="does not trust"):
        Trust([old.public]).verify(new.sign(spec), "a", "f")
