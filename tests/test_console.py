"""The terminal of a sweep talks like a tool: one line per finished run, warnings, the report's
path; each run's INFO lines (its analysis dump among them) go to its train.log and Hydra's job
listing to the sweep's sweep.log, shown with -v. A single run keeps its progress lines, with
its analysis in one short line (rnn_lab.app.console, conf/hydra/*_logging/rnn_lab.yaml)."""

from __future__ import annotations

import logging
import re

import pytest
from cli_helpers import run_cli

from rnn_lab.app.console import ConsoleFilter, SweepLogHandler, sweep_log_handler
from rnn_lab.run import rundir

PROGRESS = re.compile(r"^\[\d+/\d+\] ")
# A tiny demo: 3 inits x 2 learning rates, one seed; lr=1000 with relu and no clipping diverges.
TINY_STUDY = [
    "study",
    "demo",
    "steps=40",
    "hidden_size=8",
    "seq_len=8",
    "data.num_sentences=60",
    "jacobian_interval=20",
    "checkpoint_interval=20",
    "activation=relu",
    "clip=0",
    "lr=0.01,1000",
    "seed=1",
]
RUNS = 6
DIVERGING = 3


def _study(tmp_path, *extra):
    sweep = tmp_path / "sweep"
    proc = run_cli(
        [*TINY_STUDY, *extra, f"hydra.sweep.dir={sweep}"], module="rnn_lab.app.cli", timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep, proc.stdout + proc.stderr


def test_a_sweeps_terminal_has_progress_warnings_and_the_report_not_the_logs(tmp_path):
    sweep, terminal = _study(tmp_path)
    lines = terminal.splitlines()
    progress = [ln for ln in lines if PROGRESS.match(ln)]
    assert len(progress) == RUNS, terminal
    assert sum(" diverged " in ln for ln in progress) == DIVERGING, progress
    assert f"report: {sweep}/{rundir.REPORT_FILE}" in terminal
    # warnings still reach the terminal: each diverged run says so, naming its folder
    diverged = [ln for ln in lines if "[WARNING] - done: status=diverged " in ln]
    assert len(diverged) == DIVERGING and all(",lr=1000," in ln for ln in diverged)
    # no job listing, no launcher line, no per-run INFO line, no analysis dump
    for silenced in ("Stacked launcher", "#0 :", "[INFO]", "new run directory", "run_id="):
        assert silenced not in terminal, silenced

    # ... they are in the sweep's log files
    sweep_log = (sweep / rundir.SWEEP_LOG_FILE).read_text()
    assert f"Stacked launcher: {RUNS} jobs" in sweep_log
    assert len(re.findall(r"\t#\d+ : ", sweep_log)) == RUNS
    run_logs = sorted(sweep.rglob(rundir.LOG_FILE))
    assert len(run_logs) == RUNS
    analysed = 0
    for path in run_logs:
        text = path.read_text()
        assert "new run directory" in text and "done: status=" in text, path
        if "done: status=ok" in text:
            assert re.search(r"\[rnn_lab\.detail\]\[INFO\] - analysis of .* run_id=\w+ ", text)
            assert "[rnn_lab][INFO] - analysis (step 40): " in text
            analysed += 1
    assert analysed == RUNS - DIVERGING


def test_verbose_puts_the_logs_back_on_the_terminal(tmp_path):
    sweep, terminal = _study(tmp_path, "-v")
    assert f"[HYDRA] Stacked launcher: {RUNS} jobs" in terminal
    assert len(re.findall(r"\[HYDRA\] \t#\d+ : ", terminal)) == RUNS
    assert terminal.count("new run directory") == RUNS
    assert terminal.count("[rnn_lab.detail][INFO] - analysis of ") == RUNS - DIVERGING
    assert len([ln for ln in terminal.splitlines() if PROGRESS.match(ln)]) == RUNS
    assert f"Stacked launcher: {RUNS} jobs" in (sweep / rundir.SWEEP_LOG_FILE).read_text()


def test_a_single_run_shows_its_progress_and_one_analysis_line(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli(
        [
            "steps=40",
            "hidden_size=8",
            "seq_len=8",
            "data.num_sentences=60",
            "log_interval=20",
            "plots=false",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    terminal = proc.stdout + proc.stderr
    assert re.search(r"step +20/40 \| loss ", terminal) and "done: status=ok" in terminal
    analysis = [ln for ln in terminal.splitlines() if "analysis" in ln]
    assert len(analysis) == 1 and "[rnn_lab][INFO] - analysis (step 40): " in analysis[0]
    assert f"metrics in {run_dir}/{rundir.ANALYSIS_FILE}" in analysis[0]
    assert len(analysis[0]) < 250 and "run_id=" not in terminal
    log = (run_dir / rundir.LOG_FILE).read_text()
    assert re.search(r"\[rnn_lab\.detail\]\[INFO\] - analysis of .* run_id=\w+ ", log)
    # the launching process's sweep.log exists only for a sweep
    assert not list(tmp_path.rglob(rundir.SWEEP_LOG_FILE))


def _record(name: str, level: int) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, "message", None, None)


@pytest.mark.parametrize(
    "run_mode, verbose, name, level, shown",
    [
        ("MULTIRUN", False, "rnn_lab", logging.INFO, False),
        ("MULTIRUN", False, "hydra_plugins.x", logging.INFO, False),
        ("MULTIRUN", False, "rnn_lab", logging.WARNING, True),
        ("MULTIRUN", False, "rnn_lab", logging.ERROR, True),
        ("MULTIRUN", "rnn_lab", "rnn_lab", logging.INFO, True),
        ("MULTIRUN", ["rnn_lab", "hydra"], "hydra_plugins.x", logging.INFO, True),
        ("MULTIRUN", True, "rnn_lab.detail", logging.INFO, True),
        ("RUN", False, "rnn_lab", logging.INFO, True),
        ("RUN", False, "rnn_lab.detail", logging.INFO, False),
        ("RUN", False, "rnn_lab.details_other", logging.INFO, True),
        ("RUN", False, "rnn_lab.detail", logging.WARNING, True),
        ("RUN", True, "rnn_lab.detail", logging.INFO, True),
        (None, False, "rnn_lab", logging.INFO, True),
    ],
)
def test_console_filter(run_mode, verbose, name, level, shown):
    console = ConsoleFilter(run_mode=run_mode, verbose=verbose, file_only=["rnn_lab.detail"])
    assert console.filter(_record(name, level)) is shown


def test_sweep_log_handler_makes_its_folder_at_the_first_line_only(tmp_path):
    from hydra.types import RunMode

    assert isinstance(sweep_log_handler(str(tmp_path / "a"), RunMode.RUN), logging.NullHandler)
    handler = sweep_log_handler(str(tmp_path / "b" / "c"), RunMode.MULTIRUN)
    assert isinstance(handler, SweepLogHandler) and not (tmp_path / "b").exists()
    handler.emit(_record("x", logging.INFO))
    handler.close()
    assert (tmp_path / "b" / "c" / rundir.SWEEP_LOG_FILE).read_text() == "message\n"
