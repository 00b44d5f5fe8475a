"""What every figure of rnn_lab shares: one new-figure call, one PNG writer, one "no data".

A run's plots (rnn_lab.inspect.plots) and a study's report figures (rnn_lab.study.figures)
both draw with matplotlib's object API: a ``Figure`` is a plain object, never registered with
pyplot, so drawing holds no global state (safe in sweeps, threads and CI, nothing to close)
and needs no backend choice. This module imports neither the engine nor the run loaders, so
the study package can use it without importing them.
"""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.figure import Figure

from rnn_lab.run.rundir import atomic_write_bytes

DPI = 110


class PlotSkipped(Exception):
    """A figure whose data is absent; the message says which data, for the log or report."""


def new_figure(width: float, height: float) -> Figure:
    """A pyplot-free figure with constrained layout (room for titles, colorbars, legends)."""
    return Figure(figsize=(width, height), layout="constrained")


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Render to PNG in memory, then write atomically (a reader never sees half an image);
    the parent folder is created when missing."""
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return path
