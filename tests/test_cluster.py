"""Studies on real clusters on this machine: a one-node SLURM (scripts/slurm-local) and a
two-node Ray. The same numbers as the joblib launcher; a SLURM job preempted (SIGUSR2) is
requeued and ends bit-identical to an uninterrupted run; a cancelled one is recorded as
interrupted and resumed by the next run of the study; a study goes on when its submitter is
gone; a Ray node lost mid-sweep costs nothing but time, and leaves no process behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from cli_helpers import cli_env, run_cli, sweep_logs
from clusters import alive_in_session, signal_session, stop_ray

from rnn_lab import PROJECT_ROOT
from rnn_lab.run import rundir

pytestmark = pytest.mark.cluster

# A tiny study: 20,000 steps of H=8 (~5 s a job alone: time to signal it mid-run), no
# analysis; checkpoints only at the end, so one in the middle can only be written at a signal.
JOB = [
    "steps=20000",
    "hidden_size=8",
    "seq_len=8",
    "data.num_sentences=60",
    "analyze=false",
    "checkpoint_interval=0",
    "init=orthogonal",
    "activation=tanh",
]
SEEDS = "1,2,3"
# Columns that say how a job ran, not what it computed (and study.slurm.*, its SLURM limits).
HOW_IT_RAN = ["launcher", "resume", "checkpoint_interval", "wall_time_s", "steps_per_s"]


def _study(sweep: Path, *extra: str, seeds: str = SEEDS) -> list[str]:
    return ["study", "demo", *JOB, f"seed={seeds}", f"hydra.sweep.dir={sweep}", *extra]


def _run_study(args: list[str], env: dict | None = None, timeout: float = 600):
    return run_cli(args, module="rnn_lab.app.cli", env=env, timeout=timeout)


@pytest.fixture(scope="module")
def joblib_reference(tmp_path_factory) -> Path:
    """The study's three seeds through launcher=joblib: the numbers every cluster must give."""
    sweep = tmp_path_factory.mktemp("reference") / "joblib"
    done = _run_study(_study(sweep, "launcher=joblib"))
    assert done.returncode == 0, done.stderr[-3000:]
    return sweep


def _results(sweep: Path, seeds=None) -> pd.DataFrame:
    df = pd.read_csv(sweep / rundir.RESULTS_CSV)
    df = df.drop(columns=[c for c in df.columns if c in HOW_IT_RAN or c.startswith("study.")])
    if seeds is not None:
        df = df[df["seed"].isin(seeds)]
    return df.sort_values("path").reset_index(drop=True)


def _assert_same_numbers(sweep: Path, reference: Path, seeds=(1, 2, 3)) -> None:
    got = _results(sweep)
    assert list(got["status"]) == ["ok"] * len(seeds), got[["path", "status", "error"]]
    pd.testing.assert_frame_equal(got, _results(reference, seeds), check_exact=True)


def _job_dir(sweep: Path, seed: int) -> Path:
    (found,) = sweep.glob(f"*/seed={seed}")
    return found


def _assert_same_weights(run: Path, reference: Path) -> None:
    assert (run / rundir.HISTORY_FILE).read_bytes() == (
        reference / rundir.HISTORY_FILE
    ).read_bytes()
    with (
        np.load(run / rundir.CHECKPOINT_FILE) as a,
        np.load(reference / rundir.CHECKPOINT_FILE) as b,
    ):
        assert a.files == b.files
        for key in set(a.files) - {"wall_time_s"}:  # weights, optimiser, h, RNG, data pointer
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.2)


def _status(run: Path) -> str | None:
    try:
        return json.loads((run / rundir.SUMMARY_FILE).read_text())["status"]
    except (OSError, ValueError, KeyError):
        return None


def _training(sweep: Path, seed: int):
    """The job's folder once its trainer is in its loop (summary says running), else None."""
    runs = list(sweep.glob(f"*/seed={seed}"))
    return runs[0] if runs and _status(runs[0]) == rundir.RUNNING else None


def _start_study(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    """The study in the background, in its own session (as from a terminal of its own)."""
    return subprocess.Popen(
        [sys.executable, "-m", "rnn_lab.app.cli", *args],
        cwd=PROJECT_ROOT,
        env=cli_env(env),
        start_new_session=True,
        stdout=log.with_suffix(".out").open("w"),
        stderr=log.with_suffix(".err").open("w"),
    )


def _slurm_job_of(sweep: Path, seed: int) -> str:
    """The SLURM job id (ARRAY_TASK) that runs the given seed: Hydra's hydra.job.id, which
    its submitit launcher sets from the job's environment."""
    hydra = yaml.safe_load(
        (_job_dir(sweep, seed) / rundir.HYDRA_DIR / rundir.HYDRA_HYDRA_FILE).read_text()
    )
    return str(hydra["hydra"]["job"]["id"])


# ---- SLURM -----------------------------------------------------------------------------------


def test_slurm_study_gives_the_joblib_numbers(slurm_cluster, joblib_reference, tmp_path):
    sweep = tmp_path / "slurm"
    done = _run_study(
        _study(
            sweep,
            "launcher=submitit_slurm",
            f"+study.slurm.partition={slurm_cluster.partition}",  # per study (its file or here)
            "+study.slurm.timeout_min=7",
        ),
        env=slurm_cluster.env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_same_numbers(sweep, joblib_reference)
    (batch,) = sweep.glob(".submitit/*/*_submission.sh")
    assert "#SBATCH --time=7" in batch.read_text()
    assert f"#SBATCH --partition={slurm_cluster.partition}" in batch.read_text()
    # Accounting is off here: no sacct, no warning about it on every poll.
    logged = done.stdout + done.stderr + sweep_logs(sweep)  # the launcher's lines: sweep.log
    assert "sacct error" not in logged
    assert "watching the jobs with squeue" in logged


def test_slurm_preempted_job_is_requeued_and_ends_bit_identical(
    slurm_cluster, joblib_reference, tmp_path
):
    """SIGUSR2 (what SLURM sends before a preemption or the time limit): the job writes a
    checkpoint at that step, submitit requeues it, SLURM holds it (BeginTime) and starts it
    again, and it resumes from that checkpoint although the study says resume=false."""
    sweep = tmp_path / "slurm"
    args = _study(sweep, "launcher=submitit_slurm", "resume=false", seeds="1")
    proc = _start_study(args, slurm_cluster.env, tmp_path / "study")
    run = _wait_for(lambda: _training(sweep, 1), 120, "the job to train")
    job = _slurm_job_of(sweep, 1)
    time.sleep(0.5)
    signalled = subprocess.run(
        ["scancel", "--signal=USR2", job], env=slurm_cluster.env, capture_output=True, text=True
    )
    assert signalled.returncode == 0, signalled.stderr
    summary = _wait_for(
        lambda: (
            _status(run) == rundir.INTERRUPTED
            and json.loads((run / rundir.SUMMARY_FILE).read_text())
        ),
        60,
        "the checkpoint at the signal",
    )
    cut = summary["steps_done"]
    assert summary["signal"] == signal.SIGUSR2 and 0 < cut < 20000, summary
    assert proc.wait(timeout=300) == 0, (tmp_path / "study.err").read_text()[-3000:]
    log = (run / rundir.LOG_FILE).read_text()
    assert f"stopped by SIGUSR2 at step {cut}" in log
    assert "Requeued job" in log
    assert "SLURM started this job again (SLURM_RESTART_COUNT=1)" in log
    assert f"resuming from the checkpoint at step {cut}" in log
    assert _status(run) == rundir.OK
    _assert_same_weights(run, _job_dir(joblib_reference, 1))
    _assert_same_numbers(sweep, joblib_reference, seeds=(1,))


def test_slurm_cancelled_jobs_are_recorded_and_the_next_run_resumes(
    slurm_cluster, joblib_reference, tmp_path
):
    """scancel on a running job (SIGTERM: checkpoint, interrupted) and on a queued one (never
    ran): the sweep still ends with its report, which shows both; the same command again
    finishes the study with the numbers of an uninterrupted one."""
    sweep = tmp_path / "slurm"
    args = _study(sweep, "launcher=submitit_slurm")
    proc = _start_study(args, slurm_cluster.env, tmp_path / "study")
    running = _wait_for(lambda: _training(sweep, 1), 120, "seed 1 to train")
    _wait_for(lambda: _training(sweep, 2), 60, "seed 2 to train")
    array = _slurm_job_of(sweep, 1).split("_")[0]
    jobs = slurm_cluster.jobs()
    queued = [j for j, state in jobs.items() if j.startswith(f"{array}_") and state == "PENDING"]
    assert len(queued) == 1, jobs  # two CPUs: the third job waits
    cancel = [_slurm_job_of(sweep, 1), queued[0]]
    subprocess.run(["scancel", *cancel], env=slurm_cluster.env, check=True)
    assert proc.wait(timeout=300) == 0, (tmp_path / "study.err").read_text()[-3000:]
    results = _results(sweep)
    assert sorted(results["status"]) == ["interrupted", "ok"], results[["path", "status"]]
    assert _status(running) == rundir.INTERRUPTED
    report = (sweep / rundir.REPORT_FILE).read_text()
    assert "stopped by SIGTERM" in report  # the cancelled run, with its step
    assert "1 of 3 declared cells" in report  # the job that never ran: a missing cell
    launcher_log = (tmp_path / "study.out").read_text() + (tmp_path / "study.err").read_text()
    assert "ended CANCELLED without a result" in launcher_log

    again = _run_study(args, env=slurm_cluster.env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resuming from the checkpoint at step" in (running / rundir.LOG_FILE).read_text()
    _assert_same_numbers(sweep, joblib_reference)
    _assert_same_weights(running, _job_dir(joblib_reference, 1))


def test_slurm_ctrl_c_stops_the_running_jobs_and_cancels_the_queued_one(slurm_cluster, tmp_path):
    sweep = tmp_path / "slurm"
    proc = _start_study(
        _study(sweep, "launcher=submitit_slurm"), slurm_cluster.env, tmp_path / "study"
    )
    _wait_for(lambda: _training(sweep, 1) and _training(sweep, 2), 120, "two jobs to train")
    queued = f"{_slurm_job_of(sweep, 1).split('_')[0]}_2"  # two CPUs: the third job waits
    assert slurm_cluster.jobs()[queued] == "PENDING"
    os.killpg(proc.pid, signal.SIGINT)  # the terminal's Ctrl-C
    assert proc.wait(timeout=120) == 128 + signal.SIGINT, (tmp_path / "study.err").read_text()
    assert [_status(_job_dir(sweep, s)) for s in (1, 2)] == [rundir.INTERRUPTED] * 2
    assert not list(sweep.glob("*/seed=3"))  # never started
    assert slurm_cluster.jobs()[queued] == "CANCELLED"
    assert "Partial report" in (sweep / rundir.REPORT_FILE).read_text()


def test_slurm_study_goes_on_after_its_submitter_is_gone(slurm_cluster, joblib_reference, tmp_path):
    """Submit, log out (the terminal's SIGHUP ends the submitting process), read the report
    later: the jobs are SLURM's and finish without it."""
    sweep = tmp_path / "slurm"
    proc = _start_study(
        _study(sweep, "launcher=submitit_slurm", seeds="1,2"), slurm_cluster.env, tmp_path / "s"
    )
    _wait_for(lambda: _training(sweep, 1) or _training(sweep, 2), 120, "a job to train")
    signal_session(proc.pid, signal.SIGHUP)  # the terminal hangs up
    proc.wait(timeout=30)
    assert not alive_in_session(proc.pid)
    _wait_for(
        lambda: all(_status(_job_dir(sweep, s)) == rundir.OK for s in (1, 2)),
        180,
        "the jobs to finish without their submitter",
    )
    report = run_cli(["report", str(sweep)], module="rnn_lab.app.cli", timeout=300)
    assert report.returncode == 0, report.stderr[-3000:]
    _assert_same_numbers(sweep, joblib_reference, seeds=(1, 2))


# ---- Ray ------------------------------------------------------------------------------------


def test_ray_cluster_study_gives_the_joblib_numbers(ray_cluster, joblib_reference, tmp_path):
    sweep = tmp_path / "ray"
    done = _run_study(
        _study(sweep, "launcher=ray", f"hydra.launcher.ray.init.address={ray_cluster.address}"),
        env=ray_cluster.env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_same_numbers(sweep, joblib_reference)
    # Both nodes trained: Ray marks each task a worker runs in its node's worker-*.out (the
    # jobs' own INFO lines go to their train.log, not to the worker's stdout).
    for node in ray_cluster.nodes():
        logs = "".join(p.read_text() for p in node.temp_dir.glob("session_2*/logs/worker-*.out"))
        assert ":task_name:_run_job" in logs, f"no job ran on the node in {node.temp_dir}"


def test_ray_node_lost_mid_sweep(ray_cluster, joblib_reference, tmp_path):
    """The second node is killed (every process of it, SIGKILL) while it trains a job: Ray
    retries that job on the head, which resumes from the job's checkpoint (resume=false: a
    retry is the same run); the sweep ends with every job ok and the joblib numbers; stopping
    the cluster leaves no process."""
    sweep = tmp_path / "ray"
    args = _study(
        sweep,
        "launcher=ray",
        f"hydra.launcher.ray.init.address={ray_cluster.address}",
        "resume=false",
        "checkpoint_interval=500",
    )
    proc = _start_study(args, ray_cluster.env, tmp_path / "study")
    # One CPU a node: two jobs train at once, one on each node; both have a checkpoint.
    _wait_for(
        lambda: len(list(sweep.glob(f"*/seed=*/{rundir.CHECKPOINT_FILE}"))) >= 2,
        120,
        "a checkpoint on each node",
    )
    signal_session(ray_cluster.worker.session, signal.SIGKILL)
    assert proc.wait(timeout=300) == 0, (tmp_path / "study.err").read_text()[-3000:]
    _assert_same_numbers(sweep, joblib_reference)
    retried = [
        log
        for log in (p.read_text() for p in sweep.glob(f"*/seed=*/{rundir.LOG_FILE}"))
        if "start 2 of this job in the same sweep" in log
    ]
    assert len(retried) == 1, "exactly the job on the lost node ran again"
    resumed = re.search(r"resuming from the checkpoint at step (\d+)", retried[0])
    assert resumed and int(resumed.group(1)) >= 500, retried[0][-2000:]
    assert not stop_ray(ray_cluster), "a process of the cluster outlived its stop"
