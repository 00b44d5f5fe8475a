"""Stopping a sweep, with real processes and real signals: Ctrl-C (SIGINT to the whole
process group, as a terminal sends it) and SIGTERM to the launching process alone (as
`timeout` sends it) checkpoint the running jobs, skip the others, build the report, exit
128+signal and leave no process behind; the same command then finishes the study. One sweep
writes into a folder at a time; a folder left by a killed (SIGKILL) sweep is taken over."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from cli_helpers import sweep_logs

from rnn_lab import PROJECT_ROOT
from rnn_lab.run import rundir

STEPS = 5000  # ~4 s of training a job: long enough to be cut, short enough to finish on resume


def _study(sweep: Path, launcher: str, seeds: str = "1,2,3", steps: int = STEPS) -> list[str]:
    return [
        sys.executable,
        "-m",
        "rnn_lab.app.cli",
        "study",
        "demo",
        f"steps={steps}",
        "hidden_size=8",
        "seq_len=8",
        "data.num_sentences=60",
        "analyze=false",
        "checkpoint_interval=100",
        "init=orthogonal",
        "activation=tanh",
        f"seed={seeds}",
        f"launcher={launcher}",
        f"hydra.sweep.dir={sweep}",
    ]


def _env() -> dict:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    """The command in its own session (its pid is the session id), output to log.*"""
    return subprocess.Popen(
        cmd,
        cwd=PROJECT_ROOT,
        env=_env(),
        start_new_session=True,
        stdout=log.with_suffix(".out").open("w"),
        stderr=log.with_suffix(".err").open("w"),
    )


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _checkpoint_written(sweep: Path):
    return lambda: any(sweep.rglob(rundir.CHECKPOINT_FILE))


def _alive_in_session(sid: int) -> list[str]:
    """The live (not zombie) processes of a session, as 'pid cmdline'."""
    alive = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
        except (OSError, ValueError):
            continue  # it ended while we looked
        if int(fields[3]) == sid and fields[0] != "Z":
            alive.append(f"{proc.name} {cmdline}")
    return alive


def _assert_session_ends(sid: int, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while _alive_in_session(sid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive_in_session(sid), f"left behind: {_alive_in_session(sid)}"


def _top_files(sweep: Path) -> dict:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sweep.iterdir() if p.is_file()}


def _statuses(sweep: Path) -> dict[str, str]:
    return {
        str(p.parent.relative_to(sweep)): json.loads(p.read_text())["status"]
        for p in sweep.rglob(rundir.SUMMARY_FILE)
    }


def _assert_stopped_cleanly(sweep: Path, proc: subprocess.Popen, signum: int) -> None:
    """Exit 128+signum, no job left `running`, the cut ones resumable, report and marker."""
    err = sweep.with_suffix(".err")  # the launcher's stderr (see _start)
    assert proc.wait(timeout=120) == 128 + signum, err.read_text()[-3000:]
    statuses = _statuses(sweep)
    assert set(statuses.values()) <= {rundir.OK, rundir.INTERRUPTED}, statuses
    assert rundir.INTERRUPTED in statuses.values(), statuses
    for job, status in statuses.items():
        if status == rundir.INTERRUPTED:
            assert (sweep / job / rundir.CHECKPOINT_FILE).exists(), job
    assert (sweep / rundir.REPORT_FILE).exists()
    marker = json.loads((rundir.sweep_state_dir(sweep) / rundir.SWEEP_INTERRUPTED_FILE).read_text())
    assert marker["signal"] == signum and marker["pid"] == proc.pid and "T" in marker["time"]
    _assert_session_ends(proc.pid)


def _assert_resumes(sweep: Path, cmd: list[str], jobs: int) -> subprocess.CompletedProcess:
    """The same command again finishes every job."""
    done = subprocess.run(
        cmd, cwd=PROJECT_ROOT, env=_env(), capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    statuses = _statuses(sweep)
    assert len(statuses) == jobs and set(statuses.values()) == {rundir.OK}, statuses
    assert not (rundir.sweep_state_dir(sweep) / rundir.SWEEP_INTERRUPTED_FILE).exists()
    return done


def _ctrl_c(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGINT)  # the terminal signals the whole foreground group


def _timeout(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)  # `timeout` signals the launching process alone


def test_ctrl_c_on_a_joblib_study_checkpoints_reports_and_resumes(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = _study(sweep, "joblib")  # on 2 cores the third job has not started at Ctrl-C
    proc = _start(cmd, sweep)
    _wait_for(_checkpoint_written(sweep), 90, "a first checkpoint")
    _ctrl_c(proc)
    _assert_stopped_cleanly(sweep, proc, signal.SIGINT)
    assert "stopping the sweep" in sweep.with_suffix(".err").read_text()
    assert "partial" in sweep.with_suffix(".out").read_text()
    _assert_resumes(sweep, cmd, jobs=3)
    assert "resuming from the checkpoint" in sweep_logs(sweep)


def test_one_sweep_per_folder_and_a_killed_sweeps_folder_is_taken_over(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = _study(sweep, "joblib", seeds="1,2", steps=3 * STEPS)  # still training at the kill
    first = _start(cmd, tmp_path / "first")
    _wait_for(_checkpoint_written(sweep), 90, "a first checkpoint")
    top = _top_files(sweep)
    lock = rundir.sweep_state_dir(sweep) / rundir.SWEEP_LOCK_FILE
    note = lock.read_bytes()

    second = subprocess.run(
        cmd, cwd=PROJECT_ROOT, env=_env(), capture_output=True, text=True, timeout=60
    )
    assert second.returncode == 2
    assert second.stderr.count("\n") == 1 and second.stderr.startswith("rnn_lab: error: ")
    assert f"pid {first.pid} on host " in second.stderr and "since" in second.stderr
    assert _top_files(sweep) == top
    assert lock.read_bytes() == note

    first.kill()  # kill -9 of the launcher alone: its workers are orphaned
    first.wait(timeout=30)
    _assert_session_ends(first.pid)  # they checkpoint and leave on their own
    assert set(_statuses(sweep).values()) == {rundir.INTERRUPTED}, _statuses(sweep)

    done = _assert_resumes(sweep, cmd, jobs=2)
    assert f"took over the sweep folder from a sweep that was killed (pid {first.pid}" in (
        done.stdout + done.stderr
    )


@pytest.mark.slow
def test_sigterm_to_a_joblib_launcher_alone_stops_its_workers(tmp_path):
    sweep = tmp_path / "sweep"
    cmd = _study(sweep, "joblib")
    proc = _start(cmd, sweep)
    _wait_for(_checkpoint_written(sweep), 90, "a first checkpoint")
    _timeout(proc)
    _assert_stopped_cleanly(sweep, proc, signal.SIGTERM)
    _assert_resumes(sweep, cmd, jobs=3)


@pytest.mark.slow
@pytest.mark.parametrize("stop", [_ctrl_c, _timeout], ids=["ctrl-c", "sigterm"])
def test_basic_launcher_stops_after_the_running_job(tmp_path, stop):
    sweep = tmp_path / "sweep"
    cmd = _study(sweep, "basic")
    proc = _start(cmd, sweep)
    _wait_for(_checkpoint_written(sweep), 90, "a first checkpoint")
    stop(proc)
    signum = signal.SIGINT if stop is _ctrl_c else signal.SIGTERM
    _assert_stopped_cleanly(sweep, proc, signum)
    assert len(_statuses(sweep)) == 1  # the jobs after the stopped one never started
    _assert_resumes(sweep, cmd, jobs=3)


@pytest.mark.slow
@pytest.mark.parametrize("stop", [_ctrl_c, _timeout], ids=["ctrl-c", "sigterm"])
def test_ray_launcher_stops_cleanly(stop):
    pytest.importorskip("ray")
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    # A short base path: Ray's unix sockets live under its temp dir (107-byte limit).
    base = Path(tempfile.mkdtemp(prefix="rl", dir="/tmp"))
    try:
        sweep = base / "s"
        proc = _start(_study(sweep, "ray", seeds="1,2"), sweep)
        _wait_for(_checkpoint_written(sweep), 120, "a first checkpoint")
        stop(proc)
        signum = signal.SIGINT if stop is _ctrl_c else signal.SIGTERM
        _assert_stopped_cleanly(sweep, proc, signum)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_submitit_local_launcher_stops_cleanly_on_ctrl_c(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    proc = _start(_study(sweep, "submitit_local", seeds="1,2"), sweep)
    _wait_for(_checkpoint_written(sweep), 120, "a first checkpoint")
    _ctrl_c(proc)
    _assert_stopped_cleanly(sweep, proc, signal.SIGINT)
    assert "Traceback" not in sweep.with_suffix(".err").read_text()


def test_actions_before_a_stop_run_before_any_job_can_see_it(tmp_path):
    """The SLURM launcher cancels its queued jobs in a before_stop action: it must run while
    the marker the jobs stop on is not yet written (else a stopping job frees its CPU and a
    queued one starts in it), and a failing action must not keep the jobs from stopping."""
    from rnn_lab.app import sweep

    seen = []

    def cancel_queued():
        seen.append(sweep.stop_requested(tmp_path))

    def broken():
        raise RuntimeError("scancel is gone")

    signals = sweep.LauncherSignals(tmp_path)
    with sweep.before_stop(broken), sweep.before_stop(cancel_queued):
        assert signals.stop(signal.SIGINT)
        assert not signals.stop(signal.SIGINT)  # a second Ctrl-C does not run them again
    assert seen == [False]
    assert sweep.read_interrupted(tmp_path)["signal"] == signal.SIGINT
    assert not sweep._BEFORE_STOP  # gone with the launcher's wait
