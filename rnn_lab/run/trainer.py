"""Truncated-BPTT training of one run: resume or start, loop, finish.

``train(settings, run_dir)`` builds the task and the parameters, walks the data in seq_len
chunks through :func:`rnn_lab.run.step.train_step` (h carries forward, the gradient does not),
and writes the run directory of docs/run_directory.md. What happens around the steps (plan,
start files, the per-step schedule, the end) is :mod:`rnn_lab.run.lifecycle`'s, shared with
the stacked trainer; this module keeps the single run's loop. It never sees a Hydra config:
:mod:`rnn_lab.app.main` turns the config into TrainSettings.

A directory is reused only by the run that owns it (same run identity: every result-changing
setting and the data's content hash); anything else is a :class:`~rnn_lab.run.rundir.RunConflict`
raised before any file is touched.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from rnn_lab.run import lifecycle, rundir
from rnn_lab.run.lifecycle import (
    LoopOutcome,
    RunTime,
    StopFlag,
    build_task,
    finish_run,
    loop_outcome,
    plan_run,
    run_id_of,
    start_run,
    with_budget,
    write_start_files,
)
from rnn_lab.run.settings import TrainSettings
from rnn_lab.run.state import TrainState
from rnn_lab.run.step import train_step

log = logging.getLogger("rnn_lab")


def train(settings: TrainSettings, run_dir: str | Path, *, task=None) -> dict:
    """Train one run into run_dir; return its summary (also written to summary.json).

    A diverging loss ends the run as "diverged"; SIGINT/SIGTERM/SIGUSR2 ends it as
    "interrupted" after a checkpoint. Unexpected errors propagate (rnn_lab.app.main records them).
    """
    s, run_dir = with_budget(settings), Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    task = build_task(s) if task is None else task
    run_id = run_id_of(s, task)
    with rundir.file_lock(run_dir / rundir.LOCK_FILE, "run directory"):
        plan = plan_run(s, run_dir, task)
        log.info("%s: %s", run_dir, plan.reason)
        if plan.complete is not None:
            return plan.complete
        state = start_run(s, run_dir, task, plan)
        write_start_files(s, run_dir, state, run_id)
        with lifecycle.diverging_quietly():
            loop = _loop(s, run_dir, state, run_id)
        return finish_run(s, run_dir, state, run_id, loop)


def _loop(s: TrainSettings, run_dir: Path, state: TrainState, run_id: str) -> LoopOutcome:
    stop = StopFlag()
    stop.install()
    diverged, signum, last_grads = None, None, None
    runtime, t0 = RunTime.of(state), time.perf_counter()
    try:
        while state.step < s.steps:
            result = train_step(state, state.task.next_batch(), s)
            if result.diverged is not None:
                diverged = result.diverged
                break
            last_grads = result.grads
            runtime.update(state, time.perf_counter() - t0)
            # (through the module: a test wraps lifecycle.after_step for both trainers)
            lifecycle.after_step(s, run_dir, state, result, run_id)
            if stop.signum is not None:
                signum = stop.signum
                break
    finally:
        stop.restore()
    elapsed = time.perf_counter() - t0
    return loop_outcome(s, state, runtime, elapsed, last_grads, signum, diverged)
