"""A fixed deploy key for the tests, and the trusted keys that go with it."""

from __future__ import annotations

from runtime.core import DeployKey

__all__ = ["DEPLOY_KEY", "OTHER_KEY", "TRUSTED_KEYS"]

DEPLOY_KEY = "ed25519:" + "5e" * 32
TRUSTED_KEYS = DeployKey.parse(DEPLOY_KEY).public
OTHER_KEY = "ed25519:" + "07" * 32  # a key the tests' stacks do not trust
