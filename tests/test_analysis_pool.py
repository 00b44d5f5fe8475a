"""A single run's analysis and plots on worker processes (rnn_lab.inspect.analysis_pool): the
same files, byte for byte, as in the training process; a failure in a worker reaches the
training process's log; a worker that dies costs nothing but time; no process is left behind,
whether the run ends, is stopped with Ctrl-C or is killed."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from rnn_lab import PROJECT_ROOT
from rnn_lab.inspect.analysis import analyze_and_plot
from rnn_lab.inspect.analysis_pool import HEAVIEST_FIRST, AnalysisPool, open_pool
from rnn_lab.inspect.plots import PLOTS
from rnn_lab.inspect.run_end import PLOT_NAMES, READ_ANALYSIS
from rnn_lab.run.rundir import VOCAB_FILE, read_json
from rnn_lab.run.trainer import train

ALL_PLOTS = {name for name, _ in PLOTS}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A short run with every plot's data, not yet analysed."""
    from rnn_lab.run.settings import TrainSettings

    run_dir = tmp_path_factory.mktemp("trained") / "run"
    settings = TrainSettings(
        steps=400, hidden_size=16, seq_len=10, record_dense_until=100, record_interval=20,
        jacobian_interval=100, jacobian_lags=5, val_interval=200, checkpoint_interval=0,
        sample_interval=0, log_interval=0, analyze=False,
    )  # fmt: skip
    assert train(settings, run_dir)["status"] == "ok"
    return run_dir


def twins(trained: Path, tmp_path: Path) -> tuple[Path, Path]:
    """Two copies of the run whose figures carry the same title (it names the last two parts
    of the run's path)."""
    a, b = tmp_path / "a" / "same" / "run", tmp_path / "b" / "same" / "run"
    for d in (a, b):
        shutil.copytree(trained, d)
    return a, b


def files(run_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir()) if p.is_file()}


def test_the_workers_write_the_same_files_as_the_training_process(trained, tmp_path):
    here, there = twins(trained, tmp_path)
    summary_here = analyze_and_plot(here)
    with AnalysisPool(2) as pool:
        summary_there = pool.analyze_and_plot(there)
    assert summary_here == summary_there
    assert ALL_PLOTS <= set(files(there)), sorted(files(there))
    assert files(here).keys() == files(there).keys()
    for name, data in files(here).items():
        assert files(there)[name] == data, name


def test_a_figure_failing_in_a_worker_is_logged_by_the_training_process(trained, tmp_path, caplog):
    _, there = twins(trained, tmp_path)
    (there / "loss.png").mkdir()  # the worker cannot write the figure there
    caplog.set_level(logging.INFO, logger="rnn_lab")
    with AnalysisPool(2) as pool:
        worker_pids = set(pool.pids)
        assert pool.analyze_and_plot(there)["status"] == "ok"
    failed = [r for r in caplog.records if r.getMessage().startswith("plot loss.png failed")]
    assert len(failed) == 1 and failed[0].levelno == logging.WARNING, caplog.text
    assert "IsADirectoryError" in failed[0].getMessage()
    assert failed[0].process in worker_pids  # drawn in a worker, logged here
    assert (ALL_PLOTS - {"loss.png"}) <= set(files(there))  # the others are drawn
    written = [r.getMessage() for r in caplog.records if r.getMessage().startswith("plots: ")]
    assert written and "loss.png" not in written[0]


def test_a_failed_analysis_leaves_the_same_files_either_way(trained, tmp_path, caplog):
    """The analysis fails (the text is not the one trained on): logged; the training-dynamics
    plots are drawn, the ones read from analysis.json are not."""
    here, there = twins(trained, tmp_path)
    for d in (here, there):
        vocab = read_json(d / VOCAB_FILE)
        (d / VOCAB_FILE).write_text(json.dumps({**vocab, "text_sha1": "0" * 40}), encoding="utf-8")
    caplog.set_level(logging.INFO, logger="rnn_lab")
    assert analyze_and_plot(here) is None
    with AnalysisPool(2) as pool:
        assert pool.analyze_and_plot(there) is None
    failed = [r.getMessage() for r in caplog.records if "failed: RunDirError" in r.getMessage()]
    assert len(failed) == 2, caplog.text
    assert files(here).keys() == files(there).keys()
    assert set(files(there)) & ALL_PLOTS == ALL_PLOTS - READ_ANALYSIS
    for name, data in files(here).items():
        assert files(there)[name] == data, name


@pytest.mark.parametrize("killed", [1, 2])
def test_a_worker_that_dies_costs_nothing_but_time(trained, tmp_path, caplog, killed):
    here, there = twins(trained, tmp_path)
    analyze_and_plot(here)
    caplog.set_level(logging.INFO, logger="rnn_lab")
    with AnalysisPool(2) as pool:
        for pid in pool.pids[:killed]:
            os.kill(pid, signal.SIGKILL)
        assert pool.analyze_and_plot(there)["status"] == "ok"
    ended = [r for r in caplog.records if r.getMessage().startswith("analysis worker ")]
    assert len(ended) == killed, caplog.text
    for name, data in files(here).items():
        assert files(there)[name] == data, name


def test_the_training_process_names_the_plots_as_the_plots_module_draws_them():
    """The pool's scheduler knows the plots by name (run_end) without importing matplotlib:
    the same names, in the same order, each with its drawing time measured."""
    assert [name for name, _ in PLOTS] == list(PLOT_NAMES)
    assert sorted(HEAVIEST_FIRST) == sorted(PLOT_NAMES) and READ_ANALYSIS < set(PLOT_NAMES)
    code = (
        "import sys, rnn_lab.app.main, rnn_lab.inspect.analysis_pool;"
        "print(sorted(m for m in ('pandas', 'matplotlib', 'scipy', 'torch') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "[]", proc.stderr  # nothing heavy before the fork


def test_no_pool_for_zero_workers():
    assert open_pool(0) is None


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity")
def test_no_pool_on_one_cpu_and_no_more_workers_than_cpus():
    """On one usable CPU (a SLURM job's or a container's share) the workers would take the
    training's core; on two, a third worker would only wait."""
    code = (
        "import os, sys; cpus = sorted(os.sched_getaffinity(0))[: int(sys.argv[1])];"
        "os.sched_setaffinity(0, cpus);"
        "from rnn_lab.inspect.analysis_pool import open_pool; pool = open_pool(3);"
        "print(None if pool is None else len(pool.pids)); pool and pool.close()"
    )
    cpus = len(os.sched_getaffinity(0))
    for allowed, expected in [(1, "None"), (2, "2")][:cpus]:
        proc = subprocess.run(
            [sys.executable, "-c", code, str(allowed)], capture_output=True, text=True
        )
        assert proc.stdout.strip() == expected, proc.stderr


# ---- the command line: no process left behind ------------------------------------------------


def processes_with(marker: str) -> list[int]:
    """The live processes whose environment holds marker (the run and its workers inherit it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker.encode() in (entry / "environ").read_bytes():
                    status = (entry / "status").read_text()
                    if "State:\tZ" not in status:  # a zombie has ended
                        found.append(int(entry.name))
            except OSError:
                continue
    return found


def gone(marker: str, seconds: float = 15.0) -> list[int]:
    """The marked processes still alive after `seconds` (killed then, for the next tests)."""
    deadline = time.monotonic() + seconds
    while (left := processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return left


def start_run(tmp_path: Path, marker: str, *overrides: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "RNN_LAB_TEST_MARKER": marker}
    cmd = [sys.executable, "-m", "rnn_lab.train", "hidden_size=16", "log_interval=100",
           f"hydra.run.dir={tmp_path / 'run'}", *overrides]  # fmt: skip
    return subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,  # its own process group: Ctrl-C goes to the run and its workers
    )  # fmt: skip


def wait_for_line(proc: subprocess.Popen, needle: str) -> None:
    for line in proc.stdout:
        if needle in line:
            return
    raise AssertionError(f"no {needle!r} line; exit code {proc.wait()}")


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_a_run_leaves_no_worker_behind(tmp_path):
    marker = uuid.uuid4().hex
    proc = start_run(tmp_path, marker, "steps=300")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "plots: loss.png" in out and "analysis (step 300)" in out
    assert gone(marker) == []


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
@pytest.mark.parametrize("how", ["ctrl_c", "sigkill"])
def test_a_stopped_or_killed_run_leaves_no_worker_behind(tmp_path, how):
    marker = uuid.uuid4().hex
    proc = start_run(tmp_path, marker, "steps=200000")
    wait_for_line(proc, "/200000 |")
    deadline = time.monotonic() + 60  # the second worker is forked once the first is warm
    while len(processes_with(marker)) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(processes_with(marker)) == 3  # the run and its two workers
    if how == "ctrl_c":  # the terminal sends SIGINT to the whole foreground group
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=120) == 130
    else:  # the run only: its workers see their pipes close
        proc.kill()
        proc.wait(timeout=60)
    proc.stdout.close()
    assert gone(marker) == []
