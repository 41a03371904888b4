"""Unpacking a zip of files (a function's dependency layer) into a folder, once, safely."""

from __future__ import annotations

import io
import os
import shutil
import zipfile
from pathlib import Path

from storage.errors import IntegrityError

__all__ = ["unpack_zip"]


def unpack_zip(data: bytes | Path, target: Path) -> None:
    """Unpack `data` (bytes, or a zip file) into `target`, unless it is there already.

    Atomic: it goes to a sibling folder first, renamed when complete, so a folder half
    unpacked is never seen. A member outside `target` (absolute, or with `..`) is refused
    (IntegrityError).
    """
    if target.is_dir():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(partial, ignore_errors=True)
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    with zipfile.ZipFile(source) as archive:
        for member in archive.namelist():
            if member.startswith("/") or ".." in Path(member).parts:
                raise IntegrityError(f"the zip holds the unsafe path {member!r}")
        archive.extractall(partial)
    try:
        partial.rename(target)
    except OSError:  # another process unpacked it meanwhile
        shutil.rmtree(partial, ignore_errors=True)
