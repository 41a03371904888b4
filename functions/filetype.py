"""`filetype`: the content type of a blob of bytes, with Google's magika model (standard_v3_3).

It gives what `magika.Magika().identify_bytes(data)` gives in its default (high-confidence)
mode, without magika on the worker:

- empty input is `empty`; input too short for the model (under `min_file_size_for_dl` bytes,
  or that few once leading whitespace is stripped) is `txt` if it decodes as UTF-8, else
  `unknown`, with score 1.0;
- otherwise the model sees the first `beg_size` bytes of the first block, left-stripped of
  whitespace, and the last `end_size` bytes of the last block, right-stripped, each padded with
  `padding_token` (1024 + 1024 int32 values); its best label goes through the overwrite map,
  and a score under that label's threshold falls back to `txt` or `unknown`.

Magika's model config and the content-type table travel with the pickled function as plain
dicts read here at import time; the model is a declared file that deploy uploads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict

import numpy as np
import numpy.typing as npt

from functions.app import app
from functions.package_data import read_json
from runtime import Batching, Context, Model

__all__ = ["FileType", "extract_features", "filetype"]

_MODEL_DIR = "models/standard_v3_3"
#: Where the model comes from at deploy time (the `magika` wheel).
MODEL = f"magika:{_MODEL_DIR}/model.onnx"


class FileType(TypedDict):
    """What `filetype` returns for one input, as magika's `result.output` and `result.score`."""

    label: str
    score: float
    group: str
    mime_type: str
    is_text: bool


class _Config(TypedDict):
    beg_size: int
    end_size: int
    block_size: int
    padding_token: int
    min_file_size_for_dl: int
    medium_confidence_threshold: float
    target_labels: tuple[str, ...]
    thresholds: dict[str, float]
    overwrite_map: dict[str, str]


#: group, mime type, is text: magika's content-type info, with its defaults filled in.
_ContentType = tuple[str, str, bool]


def _check_supported(raw: dict[str, Any]) -> None:
    # magika's own extractor supports only this shape of config; so does this one.
    beg, end, block = raw["beg_size"], raw["end_size"], raw["block_size"]
    if raw["mid_size"] or raw["use_inputs_at_offsets"] or not (0 < end < block and 0 < beg < block):
        raise RuntimeError(
            f"magika's {_MODEL_DIR} config asks for features filetype does not extract "
            "(mid bytes, bytes at offsets, or beg/end sizes outside (0, block_size)); "
            "filetype reproduces magika 1.0's standard_v3_3 extraction: install magika 1.0.x"
        )
    if beg < raw["min_file_size_for_dl"]:
        raise RuntimeError(
            f"magika's {_MODEL_DIR} config has beg_size < min_file_size_for_dl, which "
            "filetype's small-input rule does not handle: install magika 1.0.x"
        )


def _load_config() -> _Config:
    raw = read_json("magika", f"{_MODEL_DIR}/config.min.json")
    _check_supported(raw)
    return {
        "beg_size": int(raw["beg_size"]),
        "end_size": int(raw["end_size"]),
        "block_size": int(raw["block_size"]),
        "padding_token": int(raw["padding_token"]),
        "min_file_size_for_dl": int(raw["min_file_size_for_dl"]),
        "medium_confidence_threshold": float(raw["medium_confidence_threshold"]),
        "target_labels": tuple(raw["target_labels_space"]),
        "thresholds": {k: float(v) for k, v in raw["thresholds"].items()},
        "overwrite_map": dict(raw["overwrite_map"]),
    }


def _content_type(info: dict[str, Any]) -> _ContentType:
    # The defaults magika's _load_content_types_kb fills in.
    is_text = bool(info["is_text"])
    default_mime = "text/plain" if is_text else "application/octet-stream"
    mime_type = default_mime if info["mime_type"] is None else str(info["mime_type"])
    group = "unknown" if info["group"] is None else str(info["group"])
    return group, mime_type, is_text


def _load_content_types(config: _Config) -> dict[str, _ContentType]:
    """Info for every label `filetype` can return, and only those (the table has ~350)."""
    table = read_json("magika", "config/content_types_kb.min.json")
    overwrite = config["overwrite_map"]
    labels = {overwrite.get(t, t) for t in config["target_labels"]} | {"empty", "txt", "unknown"}
    return {label: _content_type(table[label]) for label in sorted(labels)}


_CONFIG = _load_config()
_CONTENT_TYPES = _load_content_types(_CONFIG)


def _result(label: str, score: float) -> FileType:
    group, mime_type, is_text = _CONTENT_TYPES[label]
    return {
        "label": label,
        "score": score,
        "group": group,
        "mime_type": mime_type,
        "is_text": is_text,
    }


def _few_bytes_label(data: bytes) -> str:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "unknown"
    return "txt"


def _classify_small(data: bytes) -> FileType | None:
    """magika's answer for inputs with too few bytes for the model; None for the others."""
    if not data:
        return _result("empty", 1.0)
    min_size, block = _CONFIG["min_file_size_for_dl"], _CONFIG["block_size"]
    if len(data) < min_size:
        return _result(_few_bytes_label(data), 1.0)
    # magika checks that the min_size-th feature is not padding; as beg_size >= min_size,
    # that is: the first block, left-stripped, keeps at least min_size bytes.
    if len(data[:block].lstrip()) < min_size:
        return _result(_few_bytes_label(data[:block]), 1.0)
    return None


def extract_features(data: bytes) -> npt.NDArray[np.int32]:
    """The model's input row for `data`: stripped first and last bytes, padded (int32, 2048)."""
    beg_size, end_size, block = _CONFIG["beg_size"], _CONFIG["end_size"], _CONFIG["block_size"]
    beg = data[:block].lstrip()[:beg_size]
    end = data[-block:].rstrip()[-end_size:]
    row = np.full(beg_size + end_size, _CONFIG["padding_token"], dtype=np.int32)
    row[: len(beg)] = np.frombuffer(beg, dtype=np.uint8)
    row[beg_size + end_size - len(end) :] = np.frombuffer(end, dtype=np.uint8)
    return row


def _output_label(dl_label: str, score: float) -> str:
    """magika's high-confidence mode: overwrite map, then the label's threshold."""
    label = _CONFIG["overwrite_map"].get(dl_label, dl_label)
    threshold = _CONFIG["thresholds"].get(dl_label, _CONFIG["medium_confidence_threshold"])
    if score >= threshold:
        return label
    return "txt" if _CONTENT_TYPES[label][2] else "unknown"


def _from_scores(scores: npt.NDArray[np.float32]) -> FileType:
    index = int(np.argmax(scores))
    score = float(scores[index])
    return _result(_output_label(_CONFIG["target_labels"][index], score), score)


def _classify_with_model(ctx: Context, blobs: Sequence[bytes]) -> list[FileType]:
    if not blobs:
        return []
    rows = np.stack([extract_features(data) for data in blobs])
    (scores,) = ctx.models["classifier"].run({"bytes": rows}, outputs=["target_label"])
    return [_from_scores(row) for row in scores]


def _check_blobs(blobs: Sequence[object]) -> None:
    for data in blobs:
        if not isinstance(data, bytes):
            raise TypeError(f"filetype takes bytes, got {type(data).__name__}")


@app.function(
    models={"classifier": Model.file(MODEL)},
    batching=Batching(max_size=16, max_delay_ms=5),
    timeout_s=30,
)
def filetype(ctx: Context, blobs: list[bytes]) -> list[FileType]:
    """The content type of each blob (callers pass one `bytes`, get one dict).

    >>> filetype.local(Path("setup.py").read_bytes())["label"]
    'python'
    """
    _check_blobs(blobs)
    found = {i: r for i, data in enumerate(blobs) if (r := _classify_small(data)) is not None}
    pending = [i for i in range(len(blobs)) if i not in found]
    found.update(zip(pending, _classify_with_model(ctx, [blobs[i] for i in pending]), strict=True))
    return [found[i] for i in range(len(blobs))]
