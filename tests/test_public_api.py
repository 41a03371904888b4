"""The public face: what `from runtime import ...` offers, and what each room exports."""

from __future__ import annotations

import importlib

import pytest

import runtime

PUBLIC = {
    "App",
    "ArtifactRejected",
    "AutanError",
    "BatchedFunction",
    "Batching",
    "GPU",
    "BrokerUnavailable",
    "Call",
    "CallNotFound",
    "Context",
    "DeployError",
    "Function",
    "FunctionNotFound",
    "FunctionTimeout",
    "InvalidOption",
    "Model",
    "QueueFull",
    "RemoteError",
    "Retries",
    "Scaling",
    "Settings",
    "UnencodableValue",
    "pad_batch",
    "stack_batch",
}


def test_runtime_exports_the_user_api() -> None:
    assert set(runtime.__all__) == PUBLIC
    for name in runtime.__all__:
        assert getattr(runtime, name) is not None


@pytest.mark.parametrize(
    "package",
    ["runtime.core", "runtime.client", "runtime.worker", "runtime.control", "runtime.gateway",
     "runtime.ops", "broker", "storage"],
)  # fmt: skip
def test_each_package_exports_what_it_lists(package: str) -> None:
    module = importlib.import_module(package)
    exported = module.__all__
    missing = [name for name in exported if not hasattr(module, name)]
    assert missing == []
