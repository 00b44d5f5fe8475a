"""What every figure of rnn_lab shares: one new-figure call, one PNG writer, one "no data".

A run's plots (rnn_lab.inspect.plots) and a study's report figures (rnn_lab.study.figures)
both draw with matplotlib's object API: a ``Figure`` is a plain object, never registered with
pyplot, so drawing holds no global state (safe in sweeps, threads and CI, nothing to close)
and needs no backend choice. This module imports neither the engine nor the run loaders, so
the study package can use it without importing them.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from rnn_lab.run.rundir import atomic_write_bytes

DPI = 110


class PlotSkipped(Exception):
    """A figure whose data is absent; the message says which data, for the log or report."""


@dataclass(frozen=True)
class Margins:
    """A fixed layout, in inches: the room around the grid of axes (left, right, bottom, top:
    tick labels, axis labels, the two-line title) and between its cells (wspace, hspace), for
    a grid of ``rows`` x ``cols`` axes."""

    left: float
    right: float
    bottom: float
    top: float
    wspace: float = 0.0
    hspace: float = 0.0
    cols: int = 1
    rows: int = 1

    def fractions(self, width: float, height: float) -> dict[str, float]:
        """Figure.subplots_adjust's arguments (fractions of the figure, gaps as fractions of
        the average axes' width or height)."""
        free_w = width - self.left - self.right - (self.cols - 1) * self.wspace
        free_h = height - self.bottom - self.top - (self.rows - 1) * self.hspace
        return {
            "left": self.left / width,
            "right": 1 - self.right / width,
            "bottom": self.bottom / height,
            "top": 1 - self.top / height,
            "wspace": self.wspace / (free_w / self.cols),
            "hspace": self.hspace / (free_h / self.rows),
        }


# One axes under a run plot's two-line title (tick labels, axis labels, a legend inside).
ONE_AXES = Margins(left=0.75, right=0.2, bottom=0.55, top=0.85)


def new_figure(width: float, height: float, margins: Margins | None = None) -> Figure:
    """A pyplot-free figure: with ``margins``, laid out by them; else with constrained layout
    (room for titles, colorbars, legends, found by measuring every label: a third of a run
    plot's drawing time, so a run's own plots give their margins)."""
    if margins is None:
        return Figure(figsize=(width, height), layout="constrained")
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(**margins.fractions(width, height))
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Render to PNG in memory, then write atomically (a reader never sees half an image);
    the parent folder is created when missing."""
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return path


def layout_problems(fig: Figure) -> list[str]:
    """What a layout got wrong, measured as constrained layout would: an axes' decorations
    (tick labels, axis labels, title, legend) or the figure's title outside the figure, or two
    of them overlapping (a fixed layout's margins that a long label outgrew). For tests."""
    from itertools import combinations

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    boxes = [
        (f"axes {i} ({ax.get_title()[:30]!r})", ax.get_tightbbox(renderer))
        for i, ax in enumerate(fig.axes)
        if ax.get_visible()
    ]
    title = fig._suptitle  # matplotlib keeps no public handle to the Text
    if title is not None:
        boxes.append(("the figure's title", title.get_window_extent(renderer)))
    width, height, px = fig.bbox.width, fig.bbox.height, 1.0  # a pixel's tolerance
    problems = [
        f"{name} outside the figure ({box.x0:.0f}-{box.x1:.0f} of {width:.0f} px wide, "
        f"{box.y0:.0f}-{box.y1:.0f} of {height:.0f} px high)"
        for name, box in boxes
        if box.x0 < -px or box.y0 < -px or box.x1 > width + px or box.y1 > height + px
    ]
    for (name_a, a), (name_b, b) in combinations(boxes, 2):
        wide, high = min(a.x1, b.x1) - max(a.x0, b.x0), min(a.y1, b.y1) - max(a.y0, b.y0)
        if wide > px and high > px:
            problems.append(f"{name_a} overlaps {name_b} ({wide:.0f} x {high:.0f} px)")
    return problems
