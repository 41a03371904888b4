"""`sentences`: each sentence of a text with its MiniLM embedding, streamed as it is ready.

A generator function: `sentences.remote_gen(text)` yields one item per sentence as soon as
that sentence has run through the model, so a caller (or an HTTP client reading
Server-Sent Events) sees the first while the rest are still computed. Same model, tokenizer
and pooling as `embed`: an item's vector equals `embed(sentence)`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from functions.app import app
from functions.embed import MODEL, encode_feeds, load_tokenizer, pool
from runtime import Context, Model

__all__ = ["sentences", "split_sentences"]

_BOUNDARY = re.compile(r"(?<=[.!?])\s+")


def split_sentences(text: str) -> list[str]:
    """`text` cut after each '.', '!' or '?' followed by white space."""
    return [part for part in _BOUNDARY.split(text.strip()) if part]


@app.function(models={"encoder": Model.file(MODEL)}, setup=load_tokenizer, timeout_s=120)
def sentences(ctx: Context, text: str) -> Iterator[dict[str, Any]]:
    """{"index", "sentence", "vector"} for each sentence of `text`, in order."""
    if not isinstance(text, str):
        raise TypeError(f"sentences takes a string, got {type(text).__name__}")
    for index, sentence in enumerate(split_sentences(text)):
        feeds = encode_feeds(ctx.state, [sentence])
        (hidden,) = ctx.models["encoder"].run(feeds, outputs=["last_hidden_state"])
        vector = pool(hidden, feeds["attention_mask"])[0].tolist()
        yield {"index": index, "sentence": sentence, "vector": vector}
