"""Writing a file so that a reader, or a run killed half-way, finds the old file or the new one
whole, never part of one: cached models, bench points, shadow scores, the signing key's name."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write `data` under a temporary name beside `path`, then rename it over `path` (atomic on
    one filesystem). The temporary name is per process: concurrent writers never share one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a failed write leaves nothing behind; a kill leaves a .tmp
        raise
