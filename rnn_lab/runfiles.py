"""Atomic file writes and small readers shared by the trainer, analysis and tools.

Every file of a run directory is written to a temporary file in the same directory and then
renamed over the target (``os.replace`` is atomic on POSIX), so a reader never sees half a
file and an interrupted write leaves the previous version intact.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _finite_or_none(o):
    """JSON has no NaN: write null for NaN/inf so every reader can parse the file."""
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _finite_or_none(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_finite_or_none(v) for v in o]
    return o


def atomic_write_json(path: str | Path, obj) -> None:
    text = json.dumps(_finite_or_none(obj), indent=2, default=_json_default, allow_nan=False)
    atomic_write_text(path, text + "\n")


def atomic_write_npz(
    path: str | Path, arrays: dict[str, np.ndarray], compress: bool = True
) -> None:
    buf = io.BytesIO()
    (np.savez_compressed if compress else np.savez)(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def atomic_write_csv(path: str | Path, rows: list[dict], columns: list[str]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: _csv_value(row.get(k)) for k in columns})
    atomic_write_text(path, buf.getvalue())


def _csv_value(v):
    if v is None:
        return ""
    if isinstance(v, bool | np.bool_):
        return int(v)
    if isinstance(v, float | np.floating):
        # repr keeps every bit, so a history read back is the history written.
        return repr(float(v))
    return v


def read_json(path: str | Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))
