"""Sweep-wide state shared by the launching process and its jobs.

The launching process marks a sweep as stopping (Ctrl-C / SIGTERM) in the sweep folder; a job
that starts after that does no work.
"""

from __future__ import annotations

from pathlib import Path

from rnn_lab.run import rundir


def interrupted_marker(sweep_dir: str | Path) -> Path:
    return rundir.sweep_state_dir(sweep_dir) / rundir.SWEEP_INTERRUPTED_FILE


def stop_requested(sweep_dir: str | Path) -> bool:
    """True when the sweep writing into sweep_dir was told to stop."""
    return interrupted_marker(sweep_dir).exists()
