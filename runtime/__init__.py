"""Autan's engine and public API.

The engine lives in rooms around a shared core: `client` (what callers import),
`worker` (the process that runs user code), `control` (scaler, providers, the
embedded stack), `gateway` (the HTTP bridge) and `ops` (the CLI, deploy).

from runtime import App, Batching, Model, Retries, Scaling

app = App("demo")

@app.function(models={"encoder": Model.file("model.onnx")}, batching=Batching(max_size=32))
def embed(ctx, texts: list[str]) -> list[list[float]]: ...

embed.remote("hello")            # or: await embed.remote.aio("hello")
call = embed.spawn("hello"); call.get(timeout=10)
list(embed.map(["a", "b"]))
embed.local("hello")
"""

import os

# ONNX Runtime 1.29+ reaches out to the network unless this is set before its import. Every
# entry point (the CLI, workers, the fork server) is in this package: this runs first. Set
# only when it is not already: replacing the first variable of the environment hides argv
# from setproctitle, and processes lose their titles (`autan worker ...` in `ps`).
if os.environ.get("ORT_DISABLE_TELEMETRY") != "1":
    os.environ["ORT_DISABLE_TELEMETRY"] = "1"

from broker import BrokerUnavailable, QueueFull, UnencodableValue
from runtime.client import App, BatchedFunction, Call, Function
from runtime.core import (
    GPU,
    ArtifactRejected,
    AutanError,
    Batching,
    CallNotFound,
    Context,
    DeployError,
    FunctionNotFound,
    FunctionTimeout,
    InvalidOption,
    Model,
    RemoteError,
    Retries,
    Scaling,
    Settings,
    pad_batch,
    stack_batch,
)

__all__ = [
    "GPU",
    "App",
    "ArtifactRejected",
    "AutanError",
    "BatchedFunction",
    "Batching",
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
]
