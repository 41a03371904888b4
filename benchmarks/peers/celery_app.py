"""The Celery side of `benchmarks.peers`: its app and tasks, as its worker imports them.

Tuned as Celery's optimizing guide advises for many short tasks: a prefork pool of one
process per core, a prefetch multiplier above 1, results in Redis kept briefly, pickle so
that numpy rows travel as they are.
"""

from __future__ import annotations

import os

os.environ["ORT_DISABLE_TELEMETRY"] = "1"

from typing import Any

from celery import Celery

URL = os.environ.get("PEERS_REDIS_URL", "redis://127.0.0.1:6379/0")

app = Celery("peers", broker=URL, backend=URL)
app.conf.update(
    task_serializer="pickle",
    result_serializer="pickle",
    accept_content=["pickle"],
    worker_prefetch_multiplier=8,
    result_expires=600,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

_session: Any = None


@app.task  # type: ignore[untyped-decorator]
def echo(value: Any) -> Any:
    return value


@app.task  # type: ignore[untyped-decorator]
def mlp(rows: Any) -> Any:
    """A chunk of rows through the MLP (Celery has no batching of its own: the caller
    sends rows in chunks of 32, as its docs' `chunks` advise for many small tasks)."""
    global _session
    if _session is None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        _session = ort.InferenceSession(os.environ["PEERS_MLP"], options)
    import numpy as np

    return list(_session.run(None, {"x": np.stack(rows)})[0])
