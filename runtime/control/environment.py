"""What a worker process is given: its environment, its settings, its NATS identity.

A worker gets the provider's settings (`Settings.to_env`), never those of its parent's
environment, without the HTTP bridge's and without a deploy key: only the public keys it
verifies with. An isolated worker gets nothing else of the provider's environment either.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Protocol

import msgspec

from runtime.core import FunctionSpec, HttpSettings, Settings

__all__ = ["WorkerAccess", "WorkerSecrets", "detect_gpus", "worker_env"]

# What an isolated worker keeps of the provider's environment.
_KEPT = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONPATH")


class WorkerAccess(Protocol):
    """How a provider gets a function's workers their own NATS identity."""

    async def worker_creds(self, spec: FunctionSpec) -> Path: ...


class WorkerSecrets(Protocol):
    """How a provider gets the secrets a function declares (`control.secrets`)."""

    async def secrets_for(self, spec: FunctionSpec) -> dict[str, str]: ...


def worker_env(
    settings: Settings,
    *,
    threads: int,
    device: int | tuple[int, ...] | None,
    creds: Path | None = None,
    isolated: bool = False,
    secrets: dict[str, str] | None = None,
) -> dict[str, str]:
    """A worker's environment: this process's, its settings replaced by the provider's
    (those given in code too), without the HTTP bridge's, and with no deploy key: only the
    public keys it verifies with; with the `secrets` its function declares, by name."""
    if isolated:
        inherited = {k: v for k, v in os.environ.items() if k in _KEPT}
        inherited["HOME"] = "/tmp"
    else:
        inherited = {k: v for k, v in os.environ.items() if not Settings.reads(k)}
    own = msgspec.structs.replace(
        settings,
        data_dir=settings.data_dir.resolve(),
        http=HttpSettings(),
        deploy_key=None,  # a worker verifies; it never signs
        deploy_key_file=None,
        trusted_keys=settings.trust().text(),
        nats_creds=creds or settings.nats_creds,
    )
    env = {**inherited, **own.to_env(), "ORT_DISABLE_TELEMETRY": "1"}
    env["OMP_NUM_THREADS"] = str(threads)
    if isinstance(device, tuple):
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, device))
    elif device is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(device)
    env.update(secrets or {})
    return env


def detect_gpus() -> list[int]:
    """GPU device ids on this host: from nvidia-smi when present, else none."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [i for i, line in enumerate(listing.stdout.splitlines()) if line.startswith("GPU ")]
