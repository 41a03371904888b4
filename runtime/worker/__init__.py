"""The worker: the process that runs user code for one function version.

It verifies and loads the artifact (`loader`), builds its ONNX Runtime sessions, pulls
calls, runs them (`executor`) and settles each one (`batches`, `answers`, `packs`).
It never imports the client, the control plane or the gateway: a provider starts it
with the command line `core.WorkerLaunch` describes.
"""

from runtime.worker.main import main, run
from runtime.worker.worker import PIPELINE_DEPTH, Boot, Worker

__all__ = ["PIPELINE_DEPTH", "Boot", "Worker", "main", "run"]
