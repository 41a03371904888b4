"""The functions the batching benchmark deploys: an MLP and embed, with and without batching.

The MLP (384 -> 1024 -> 384, dynamic batch) is written with onnx.helper into
benchmarks/out/ when this module is imported, so that `Model.file` finds it
(`benchmarks.kit.mlp_model`).
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import numpy as np
import numpy.typing as npt

from benchmarks.kit.mlp_model import MLP_PATH, build_mlp
from functions.embed import MODEL as EMBED_MODEL
from functions.embed import encode_feeds, load_tokenizer, pool
from runtime import App, Batching, Context, Model, Scaling

__all__ = ["MLP_PATH", "app", "embed_batched", "embed_single", "mlp", "mlp_array"]

_ONE_WORKER = Scaling(max_workers=1)


app = App("batching")


@app.function(
    models={"mlp": Model.file(build_mlp())},
    batching=Batching(max_size=32, max_delay_ms=5),
    scaling=_ONE_WORKER,
    timeout_s=60,
)
def mlp(ctx: Context, rows: list[npt.NDArray[np.float32]]) -> list[npt.NDArray[np.float32]]:
    """One 384-float row in, one out, written as a user would: a list of the callers' rows
    in, stacked here, a list of rows out."""
    [out] = ctx.models["mlp"].run({"x": np.stack(rows)})
    return list(out)


@app.function(
    models={"mlp": Model.file(build_mlp())},
    batching=Batching(max_size=32, max_delay_ms=5),
    scaling=_ONE_WORKER,
    timeout_s=60,
)
def mlp_array(ctx: Context, rows: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The same, annotated as arrays: the batch arrives stacked (a slice of the pack when
    its rows came together: no copy), and the output's rows are the results."""
    [out] = ctx.models["mlp"].run({"x": rows})
    return out


@app.function(
    models={"encoder": Model.file(EMBED_MODEL)},
    batching=Batching(max_size=32, max_delay_ms=5),
    setup=load_tokenizer,
    scaling=_ONE_WORKER,
    timeout_s=60,
)
def embed_batched(ctx: Context, texts: list[str]) -> list[list[float]]:
    return _embed(ctx, texts)


@app.function(
    models={"encoder": Model.file(EMBED_MODEL)},
    setup=load_tokenizer,
    scaling=_ONE_WORKER,
    timeout_s=60,
)
def embed_single(ctx: Context, text: str) -> list[float]:
    return _embed(ctx, [text])[0]


def _embed(ctx: Context, texts: list[str]) -> list[list[float]]:
    feeds = encode_feeds(ctx.state, texts)
    [hidden] = ctx.models["encoder"].run(feeds, outputs=["last_hidden_state"])
    vectors: list[list[float]] = pool(hidden, feeds["attention_mask"]).tolist()
    return vectors
