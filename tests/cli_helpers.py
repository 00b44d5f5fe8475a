"""Helpers for tests that run the CLI: a tiny run's overrides and a subprocess runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from rnn_lab import PROJECT_ROOT

# A run small enough for a test: seconds, not minutes.
TINY = [
    "steps=40",
    "hidden_size=8",
    "seq_len=8",
    "val_interval=20",
    "checkpoint_interval=20",
    "record_interval=10",
    "record_dense_until=0",
    "jacobian_interval=20",
    "jacobian_lags=4",
    "sample_interval=0",
    "sample_length=40",
    "log_interval=0",
    "analyze=false",
    "data.num_sentences=60",
]


def cli_env(extra: dict | None = None) -> dict:
    """The environment of a CLI subprocess: this one's, the project importable, plus extra."""
    env = {**os.environ, **(extra or {}), "PYTHONPATH": str(PROJECT_ROOT)}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def run_cli(
    args: list[str],
    cwd: Path | None = None,
    timeout: float = 300,
    module="rnn_lab.train",
    env: dict | None = None,
    **kwargs,
):
    """python -m MODULE ARGS in a subprocess (default: the train app), output captured; env:
    variables added to the subprocess's environment."""
    cmd = [sys.executable, "-m", module, *args]
    env = cli_env(env)
    return subprocess.run(
        cmd,
        cwd=cwd or PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        **kwargs,
    )


def sweep_logs(sweep: Path) -> str:
    """What a sweep logged below warnings, which its terminal no longer shows: the sweep's
    sweep.log (Hydra's job listing, the launcher) and every job's train.log."""
    from rnn_lab.run import rundir

    files = [Path(sweep) / rundir.SWEEP_LOG_FILE, *sorted(Path(sweep).rglob(rundir.LOG_FILE))]
    return "\n".join(p.read_text(errors="replace") for p in files if p.is_file())
