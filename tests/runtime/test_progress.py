"""Deploying a large model shows bytes uploaded on a terminal, and stays quiet otherwise."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from runtime.core import Settings
from runtime.ops.progress import UploadProgress

ROOT = Path(__file__).resolve().parents[2]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_sees_the_bytes_sent_and_a_pipe_nothing() -> None:
    shown = _Terminal()
    progress = UploadProgress("demo.embed model encoder", 4_000_000, out=shown)
    for sent in (1_000_000, 2_000_000, 4_000_000):
        progress(sent)
    progress.done()
    assert "uploading demo.embed model encoder: 1.0 / 4.0 MB (25%)" in shown.getvalue()
    assert shown.getvalue().endswith("4.0 / 4.0 MB (100%)\n")
    quiet = io.StringIO()  # not a terminal
    UploadProgress("x", 4_000_000, out=quiet)(4_000_000)
    assert quiet.getvalue() == ""


def _model(path: Path, values: int, seed: int) -> Path:
    weights = np.random.default_rng(seed).random(values, dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [values])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [values])],
        [numpy_helper.from_array(weights, "w")],
    )  # fmt: skip
    onnx.save(helper.make_model(graph), path)
    return path


def _app(root: Path, model: Path) -> Path:
    module = root / "bigmodel_app.py"
    module.write_text(
        textwrap.dedent(f"""
        from runtime import App, Model

        app = App("bigmodel")

        @app.function(models={{"big": Model.file({str(model)!r})}})
        def run(ctx, x: list) -> list:
            return x
    """)
    )
    return module


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTAN_")}
    env.update(settings.to_env(), PYTHONPATH=str(ROOT), AUTAN_DEPLOY_IMPORT_CHECK="false")
    return env


def test_autan_deploy_shows_upload_progress_on_a_terminal(
    settings: Settings, tmp_path: Path
) -> None:
    module = _app(tmp_path, _model(tmp_path / "big.onnx", 1_500_000, seed=1))  # 6 MB
    primary, secondary = pty.openpty()
    command = [sys.executable, "-m", "runtime.ops.cli", "deploy", str(module)]
    with subprocess.Popen(command, env=_env(settings), stdout=secondary, stderr=secondary,
                          cwd=tmp_path) as deploy:  # fmt: skip
        os.close(secondary)
        shown = b""
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # the terminal's other end closed
                break
            if not chunk:
                break
            shown += chunk
        assert deploy.wait(timeout=120) == 0, shown.decode(errors="replace")
    os.close(primary)
    text = shown.decode(errors="replace")
    assert "uploading bigmodel.run model big:" in text
    assert "(100%)" in text

    module = _app(tmp_path, _model(tmp_path / "big2.onnx", 1_500_000, seed=2))  # new bytes
    piped = subprocess.run([sys.executable, "-m", "runtime.ops.cli", "deploy", str(module)],
                           env=_env(settings), capture_output=True, text=True, timeout=120,
                           cwd=tmp_path)  # fmt: skip
    assert piped.returncode == 0, piped.stderr
    assert "uploading" not in piped.stdout + piped.stderr
