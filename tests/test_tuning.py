"""Tuning studies (Hydra's Optuna sweeper): a fixed budget of trials that survives a stop,
and a report made for a search space rather than a grid."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from cli_helpers import run_cli
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from rnn_lab import EXPERIMENTS_DIR, PROJECT_ROOT

optuna = pytest.importorskip("optuna")
pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")

from rnn_lab.app import tuning  # noqa: E402

TUNING_STUDIES = sorted(
    p.stem for p in EXPERIMENTS_DIR.glob("*.yaml") if "sweeper: optuna" in p.read_text()
)
STUDY = "tune_lr_clip_hidden"
# Jobs of a second or less; the search space is the study's own.
SHRINK = ["steps=30", "data.num_sentences=40", "analyze=false", "launcher=basic"]


def _trials(sweep: Path, name: str = STUDY) -> list:
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{sweep / 'optuna.db'}")
    return study.get_trials(deepcopy=False)


def _states(trials) -> dict[str, int]:
    out: dict[str, int] = {}
    for t in trials:
        out[t.state.name] = out.get(t.state.name, 0) + 1
    return out


# --------------------------------------------------------------------------- the studies


@pytest.mark.parametrize("study", TUNING_STUDIES)
def test_tuning_study_composes(compose, study):
    from rnn_lab.study.stats import METRIC_DIRECTION

    text = (EXPERIMENTS_DIR / f"{study}.yaml").read_text()
    assert "- /study_preset/default" in text
    cfg = compose([f"study={study}"], return_hydra_config=True)
    assert cfg.study.name == study and str(cfg.study.question).strip()
    assert set(cfg.study.metrics) <= set(METRIC_DIRECTION)
    sweeper = cfg.hydra.sweeper
    assert "optuna" in sweeper._target_ and sweeper.direction == "minimize"
    assert cfg.optimized_metric == "val_loss" and sweeper.n_trials > 0
    assert cfg.resume is True and cfg.hydra.launcher._target_.endswith("StackedLauncher")
    assert "seed" not in sweeper.params  # one seed: the sampler would tune a seed list
    for key in sweeper.params:  # every tuned key is a config key
        assert OmegaConf.select(cfg, key, default="missing") != "missing", key
    # The storage is in the sweep folder (a re-run continues it) and the callback runs.
    assert sweeper.storage == f"sqlite:///{cfg.hydra.sweep.dir}/optuna.db"
    assert cfg.hydra.sweep.dir == f"multirun/{study}"
    targets = [c._target_ for c in cfg.hydra.callbacks.values()]
    assert "rnn_lab.app.tuning.TuningCallback" in targets


@pytest.mark.parametrize("study", TUNING_STUDIES)
def test_tuning_study_runs_tiny_and_reports(tmp_path, study):
    sweep = tmp_path / study
    args = ["study", study, *SHRINK, "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={sweep}"]
    proc = run_cli(args, module="rnn_lab.app.cli", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = _trials(sweep, study)
    assert _states(trials) == {"COMPLETE": 3}
    results = pd.read_csv(sweep / "results.csv")
    assert len(results) == 3 and set(results["status"]) == {"ok"}
    # Every trial's value is its run's val_loss (the task function's return).
    values = sorted(t.value for t in trials)
    assert values == pytest.approx(sorted(results["val_loss"]), rel=1e-12)
    report = (sweep / "report.md").read_text()
    assert "## Tuning (Optuna)" in report and "**3 of 3 trials complete**" in report
    assert "Does not apply to a tuning sweep" in report.split("## Comparisons", 1)[1]
    assert "Does not apply to a tuning sweep" in report.split("## Grid ledger", 1)[1]
    for plot in ("tuning_objective.png", "tuning_params.png"):
        assert f"(plots/{plot})" in report and (sweep / "plots" / plot).stat().st_size > 1000
    table = pd.read_csv(sweep / "tuning_trials.csv")
    assert list(table["trial"]) == [0, 1, 2] and set(table["run_status"]) == {"ok"}
    assert (sweep / "multirun.yaml").is_file()


def test_diverged_trials_are_results_at_plus_inf(tmp_path):
    # lr 1e5..1e6 diverges whatever the clip: each trial completes with +inf, the worst value.
    sweep = tmp_path / "diverging"
    space = "lr=tag(log, interval(1e5, 1e6))"  # the command line replaces the study's range
    args = ["study", STUDY, *SHRINK, space, "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={sweep}"]
    proc = run_cli(args, module="rnn_lab.app.cli", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = _trials(sweep)
    assert _states(trials) == {"COMPLETE": 2} and all(t.value == math.inf for t in trials)
    assert set(pd.read_csv(sweep / "results.csv")["status"]) == {"diverged"}
    report = (sweep / "report.md").read_text()
    assert "**2 of 2 trials complete**" in report and "+inf" in report


# --------------------------------------------------------------------------- a stopped study


def _wait_for_a_running_trial(sweep: Path, proc: subprocess.Popen, finished: int) -> None:
    """Until `finished` runs ended ok and another one trains."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        statuses = []
        for path in sweep.glob("*/*/summary.json"):
            try:
                statuses.append(json.loads(path.read_text())["status"])
            except (OSError, ValueError, KeyError):
                continue
        if statuses.count("ok") >= finished and "running" in statuses:
            return
        time.sleep(0.2)
    raise AssertionError("no trial was running in time")


@pytest.mark.parametrize(
    "signum",
    [signal.SIGTERM, pytest.param(signal.SIGKILL, marks=pytest.mark.slow)],
    ids=["SIGTERM", "SIGKILL"],
)
def test_a_stopped_study_continues_to_its_budget(tmp_path, signum):
    sweep = tmp_path / "tuning"
    # Runs of a few seconds, so one is surely training when the signal comes.
    args = ["study", STUDY, "steps=800", *SHRINK[1:], "hydra.sweeper.n_trials=6"]
    args.append(f"hydra.sweep.dir={sweep}")
    cmd = [sys.executable, "-m", "rnn_lab.app.cli", *args]
    proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for_a_running_trial(sweep, proc, finished=2)
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == (143 if signum == signal.SIGTERM else -signal.SIGKILL)
    stopped = _trials(sweep)
    assert _states(stopped).get("COMPLETE", 0) >= 2
    if signum == signal.SIGTERM:  # a clean stop: a partial report, no trial left running
        assert "RUNNING" not in _states(stopped)
        assert "Partial report" in (sweep / "report.md").read_text()
    else:
        assert _states(stopped).get("RUNNING", 0) >= 1  # its batch: killed while it ran

    proc = run_cli(args, module="rnn_lab.app.cli", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    states = _states(_trials(sweep))
    assert states["COMPLETE"] == 6 and "RUNNING" not in states, states
    # The run that was cut off resumed in its own folder: one folder per finished trial.
    results = pd.read_csv(sweep / "results.csv")
    assert len(results) == 6 and set(results["status"]) == {"ok"}, results[["path", "status"]]
    report = (sweep / "report.md").read_text()
    assert "**6 of 6 trials complete**" in report and "Partial report" not in report
    params = yaml.safe_load((sweep / "multirun.yaml").read_text())["hydra"]["sweeper"]
    assert params["n_trials"] == 6  # the budget as configured, not what was left


# --------------------------------------------------------------------------- the pieces


def test_storage_works_with_this_optuna_and_sqlalchemy(tmp_path):
    url = f"sqlite:///{tmp_path / 'sub' / 'optuna.db'}"
    tuning.prepare_storage(url)  # makes the folder; stamps Optuna 2 schemas under SQLAlchemy 2
    study = optuna.create_study(study_name="s", storage=url)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert len(optuna.load_study(study_name="s", storage=url).trials) == 2
    assert tuning.resume_study(url, "nothing here") == (0, 0)


def test_resume_fails_stale_trials_and_queues_their_parameters(tmp_path):
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    tuning.prepare_storage(url)
    study = optuna.create_study(study_name="s", storage=url)
    dist = optuna.distributions.UniformDistribution(0, 1)
    done = study.ask({"x": dist})
    study.tell(done, 0.5)
    killed = study.ask({"x": dist})  # left RUNNING by a killed sweep
    stopped = study.ask({"x": dist})
    study.tell(stopped, state=optuna.trial.TrialState.FAIL)
    assert tuning.resume_study(url, "s") == (1, 3)
    trials = optuna.load_study(study_name="s", storage=url).get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "FAIL", "WAITING", "WAITING"]
    queued = [t.system_attrs["fixed_params"]["x"] for t in trials[3:]]
    assert queued == [killed.params["x"], stopped.params["x"]]
    assert tuning.resume_study(url, "s") == (1, 5)  # queued once, not again
    assert len(optuna.load_study(study_name="s", storage=url).trials) == 5


@pytest.mark.parametrize(
    "status, is_result",
    [("ok", True), ("diverged", True), ("failed", True), ("interrupted", False), (None, False)],
)
def test_a_run_that_did_not_end_is_not_a_result(tmp_path, status, is_result):
    if status is not None:
        (tmp_path / "summary.json").write_text(json.dumps({"status": status}))
    ret = JobReturn(status=JobStatus.COMPLETED, overrides=["lr=0.1"])
    ret.hydra_cfg = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(tmp_path)}}})
    ret.return_value = 1.5 if status == "ok" else math.inf
    value = tuning.job_result(ret).return_value
    if is_result:
        assert float(value) in (1.5, math.inf)
    else:  # the sweeper cannot make a number of it: Optuna records a failed trial
        with pytest.raises(ValueError):
            float(value)
        assert "re-run the study" in str(value)
