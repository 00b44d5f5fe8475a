"""What the end of a training run names and logs, light enough for the training process (no
pandas, no matplotlib: the analysis pool's scheduler runs there): the plots' file names, which
of them read analysis.json, and the lines logged for a failed analysis and for the plots
written. The analysis (rnn_lab.inspect.analysis) and the plots (rnn_lab.inspect.plots) use the
same names and lines.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("rnn_lab")

# The run's plots, in the order they are drawn and listed (plots.PLOTS draws them).
PLOT_NAMES = (
    "loss.png",
    "spectral.png",
    "gradient_profile.png",
    "jacobian.png",
    "saturation.png",
    "word_categories.png",
    "memory_probe.png",
    "hidden_trajectory.png",
    "word_position.png",
)
# The plots drawn from analysis.json (the others read history.csv and diagnostics.npz): drawn
# after the analysis, and not at all when it failed (an analysis.json left from an earlier
# step would be drawn as this one).
READ_ANALYSIS = frozenset(
    ("word_categories.png", "memory_probe.png", "hidden_trajectory.png", "word_position.png")
)


def log_failed_analysis(run_dir: str | Path, error: BaseException) -> None:
    """A failed analysis at the end of training: a warning; the run itself is not failed."""
    log.warning("analysis of %s failed: %s: %s", run_dir, type(error).__name__, error)


def log_written(written: list[Path]) -> None:
    log.info("plots: %s", ", ".join(p.name for p in written))
