"""The plots of one run, as PNG files in its run directory.

``plot_run(run_dir)`` draws every plot whose data the run has and returns the paths written.
Training-dynamics plots read history.csv and diagnostics.npz (absent with record=false, so
those plots are skipped: dynamics_plots); the analysis plots read analysis.json (see
rnn_lab.inspect.analysis: analysis_plots); plot_parts holds what they share.
Figures are built with matplotlib's object API (no pyplot, no global backend state), so
drawing is safe inside sweeps, threads and CI; each PNG is written atomically.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from rnn_lab.inspect.analysis_plots import (
    plot_hidden_trajectory,
    plot_memory_probe,
    plot_word_categories,
    plot_word_position,
)
from rnn_lab.inspect.dynamics_plots import (
    plot_gradient_profile,
    plot_jacobian,
    plot_loss,
    plot_saturation,
    plot_spectral,
)
from rnn_lab.inspect.figure_io import PlotSkipped
from rnn_lab.inspect.load import Run, load_run
from rnn_lab.inspect.run_end import READ_ANALYSIS

log = logging.getLogger("rnn_lab")

# (name, draw) in run_end.PLOT_NAMES's order (the training process lists them without this
# module; tests/test_analysis_pool.py checks the two agree).
PLOTS: list[tuple[str, Callable[[Run, Path], Path]]] = [
    ("loss.png", plot_loss),
    ("spectral.png", plot_spectral),
    ("gradient_profile.png", plot_gradient_profile),
    ("jacobian.png", plot_jacobian),
    ("saturation.png", plot_saturation),
    ("word_categories.png", plot_word_categories),
    ("memory_probe.png", plot_memory_probe),
    ("hidden_trajectory.png", plot_hidden_trajectory),
    ("word_position.png", plot_word_position),
]


def draw_plot(run: Run | str | Path, name: str, strict: bool = False) -> Path | None:
    """Draw the plot ``name`` of PLOTS into the run's directory (a Run, or its path: loaded
    here); its path, or None when it was skipped for lack of data or failed (both logged: one
    broken plot must not cost the others; strict=True raises the failure instead: for tests)."""
    try:
        run = run if isinstance(run, Run) else load_run(run)
        return dict(PLOTS)[name](run, run.path / name)
    except PlotSkipped as e:
        log.info("plot %s skipped: %s", name, e)
    except Exception as e:
        if strict:
            raise
        log.warning("plot %s failed: %s: %s", name, type(e).__name__, e)
    return None


def plot_run(run_dir: str | Path, strict: bool = False, analysis: bool = True) -> list[Path]:
    """Draw every plot the run has data for into run_dir; return the paths written.

    A plot without its data (record=false, no analysis.json, non-Elman text) is skipped
    and logged; an error while drawing one plot is logged and does not stop the others
    (strict=True raises it instead: for tests). analysis=False: not the READ_ANALYSIS ones.
    """
    run = load_run(run_dir)
    names = [name for name, _ in PLOTS if analysis or name not in READ_ANALYSIS]
    drawn = [draw_plot(run, name, strict) for name in names]
    return [path for path in drawn if path is not None]
