"""A multirun job that raises inside training is recorded as failed; the sweep and its report go on.

In-process, through the real Hydra entry point (`rnn_lab.app.main.main` with `-m` on sys.argv,
the basic launcher, the report callback), with the training function the task function calls
replaced by one that trains the seed=2 job part of the way and then raises. If a job's
exception reached Hydra, Hydra would end the sweep (SystemExit), skip `on_multirun_end` and so
never write report.md: every assertion below would then fail.
"""

from __future__ import annotations

import dataclasses
import logging
import sys

import pandas as pd
import pytest
from cli_helpers import TINY


@pytest.fixture
def hydra_state():
    """Put back what an in-process Hydra run leaves behind (global Hydra, HydraConfig, the
    root logger's handlers pointing into the job's train.log), so later tests start clean."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:], root.level = handlers, level
    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None


def test_a_job_raising_in_training_fails_alone_and_the_report_lists_it(
    tmp_path, monkeypatch, hydra_state
):
    import rnn_lab.app.main as app_main
    import rnn_lab.run.trainer as trainer

    real_train = trainer.train
    calls, stopped_at = [], []

    def train_that_breaks_seed_2(settings, run_dir, *args, **kwargs):
        calls.append(settings.seed)
        if settings.seed != 2:
            return real_train(settings, run_dir, *args, **kwargs)
        # Part of the training really happens (files on disk, a summary), then an error that
        # is not a config problem, as a bug deep in the engine would raise it.
        half = dataclasses.replace(settings, steps=settings.steps // 2)
        real_train(half, run_dir, *args, **kwargs)
        stopped_at.append(half.steps)
        raise RuntimeError("boom")

    # run() imports train from rnn_lab.run.trainer when it is called, so that is where it is
    # replaced; a module-level name in main.py (should run() come to import it at the top) too.
    monkeypatch.setattr(trainer, "train", train_that_breaks_seed_2)
    monkeypatch.setattr(app_main, "train", train_that_breaks_seed_2, raising=False)

    sweep = tmp_path / "sweep"
    monkeypatch.setattr(
        sys,
        "argv",
        ["rnn_lab", "-m", "seed=1,2,3", *TINY, "launcher=basic", f"hydra.sweep.dir={sweep}"],
    )
    try:
        app_main.main()
    except SystemExit as e:  # Hydra exits 1 when a job's exception reaches it
        pytest.fail(f"the sweep died (SystemExit {e.code}) instead of recording the failure")

    assert sorted(calls) == [1, 2, 3], "every job ran through the replaced training function"
    results = pd.read_csv(sweep / "results.csv")
    status = dict(zip(results["seed"], results["status"]))
    assert status == {1: "ok", 2: "failed", 3: "ok"}, results.to_string()
    error = results.loc[results["seed"] == 2, "error"].item()
    assert "RuntimeError: boom" in error

    # The part it trained before the error is kept: the run stopped mid-way, not at step 0.
    assert 0 < stopped_at[0] < 40
    assert results.loc[results["seed"] == 2, "steps_done"].item() == stopped_at[0]

    # The report lists the failed run, with its error, on one line of its table of runs that
    # did not finish ok (matched by content, not by the section's heading).
    report = (sweep / "report.md").read_text()
    listed = [
        line
        for line in report.splitlines()
        if "seed=2" in line and "failed" in line and "RuntimeError: boom" in line
    ]
    assert len(listed) == 1, report
