"""Sweeps through the real CLI: a tiny multirun on each launcher, failures recorded not
dropped, results identical whichever launcher ran them, and an interrupted study resumed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from cli_helpers import TINY, run_cli, sweep_logs

from rnn_lab import PROJECT_ROOT

GRID = ["init=orthogonal,random", "activation=tanh,relu"]


def _job_dirs(sweep: Path) -> dict[str, Path]:
    return {str(p.parent.relative_to(sweep)): p.parent for p in sweep.rglob("summary.json")}


def _sweep(tmp_path: Path, name: str, extra: list[str]) -> tuple[Path, object]:
    """A tiny real study: `rnn-lab study demo` with its grid narrowed and its runs shrunk."""
    sweep = tmp_path / name
    proc = run_cli(
        ["study", "demo", *GRID, "seed=1", *TINY, f"hydra.sweep.dir={sweep}", *extra],
        module="rnn_lab.app.cli",
        timeout=600,
    )
    return sweep, proc


@pytest.fixture(scope="module")
def basic_and_joblib(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweeps")
    basic = _sweep(tmp, "basic", ["launcher=basic"])
    joblib = _sweep(tmp, "joblib", ["launcher=joblib"])
    return basic, joblib


@pytest.mark.parametrize("which", [0, 1], ids=["basic", "joblib"])
def test_tiny_multirun_completes_with_report(basic_and_joblib, which):
    sweep, proc = basic_and_joblib[which]
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = _job_dirs(sweep)
    assert len(jobs) == 4
    # The job directory name shows its overrides; the seed is its own level.
    names = [k for k in jobs if k.startswith("activation=relu,") and ",init=random," in k]
    assert len(names) == 1 and names[0].endswith("/seed=1"), sorted(jobs)
    for job in jobs.values():
        assert json.loads((job / "summary.json").read_text())["status"] == "ok"
    results = pd.read_csv(sweep / "results.csv")
    assert len(results) == 4 and set(results["status"]) == {"ok"}
    assert {"init.name", "activation.name", "seed", "val_loss", "path"} <= set(results.columns)
    report = (sweep / "report.md").read_text()
    assert "Which W_hh init" in report  # the study's question
    assert "rnn-lab study demo" in report  # the command that reproduces it
    plots = sorted(p.name for p in (sweep / "plots").glob("*.png"))
    assert {"loss_curves.png", "final_metrics.png", "heatmap.png"} <= set(plots), plots
    assert f"report: {sweep}/report.md" in proc.stdout


def test_results_identical_whichever_launcher(basic_and_joblib):
    (basic, _), (joblib, _) = basic_and_joblib
    a, b = _job_dirs(basic), _job_dirs(joblib)
    assert a.keys() == b.keys()
    for name in a:
        assert (a[name] / "history.csv").read_bytes() == (b[name] / "history.csv").read_bytes()
        with np.load(a[name] / "checkpoint.npz") as x, np.load(b[name] / "checkpoint.npz") as y:
            for k in ("W_xh", "W_hh", "W_hy", "b_h", "b_y", "h"):
                np.testing.assert_array_equal(x[k], y[k])


def test_failing_and_diverging_jobs_are_recorded_and_sweep_finishes(tmp_path):
    sweep = tmp_path / "sweep"
    # seq_len=0 is rejected (failed); lr=10 without clipping on relu/identity*2 diverges.
    proc = run_cli(
        [
            "-m",
            "seq_len=0,40",
            "lr=0.01,10",
            "clip=0",
            "activation=relu",
            "init=identity",
            "init.scale=2",
            *[o for o in TINY if not o.startswith("seq_len")],
            f"hydra.sweep.dir={sweep}",
        ],
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    cells = {}
    for d in _job_dirs(sweep).values():
        overrides = yaml.safe_load((d / ".hydra/overrides.yaml").read_text())
        cell = tuple(o for o in overrides if o.split("=")[0] in ("seq_len", "lr"))
        cells[cell] = json.loads((d / "summary.json").read_text())["status"]
        assert len(d.parent.name) <= 200  # long override lists are shortened, not fatal
    assert len(cells) == 4
    assert cells[("seq_len=0", "lr=0.01")] == "failed"
    assert cells[("seq_len=40", "lr=10")] == "diverged"
    # Every job's status as the collector wrote it (not words every report contains).
    results = pd.read_csv(sweep / "results.csv")
    by_cell = {
        (f"seq_len={int(r.seq_len)}", f"lr={r.lr:g}"): r.status for r in results.itertuples()
    }
    assert by_cell == cells, (by_cell, cells)
    report = (sweep / "report.md").read_text()
    assert "seq_len=0" in report


def test_interrupted_study_rerun_completes_only_what_is_missing(tmp_path):
    """A study with one job finished, one cut off mid-way by SIGTERM (checkpoint, status
    interrupted), one never started: re-running the same command finishes the study without
    redoing the finished job, and every job ends as if never interrupted."""
    sweep = tmp_path / "study"
    job_overrides = [
        "steps=12000",
        "hidden_size=8",
        "seq_len=8",
        "checkpoint_interval=200",
        "data.num_sentences=60",
        "analyze=false",
    ]
    args = [
        "study",
        "demo",
        *job_overrides,
        "launcher=basic",
        # Command-line sweeps take precedence over the study's own grid for those keys.
        "init=orthogonal",
        "activation=tanh",
        "seed=1,2,3",
        f"hydra.sweep.dir={sweep}",
    ]
    proc = run_cli(args, module="rnn_lab.app.cli", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = _job_dirs(sweep)
    assert sorted(k.rsplit("/", 1)[1] for k in jobs) == ["seed=1", "seed=2", "seed=3"]
    reference = {k: (d / "history.csv").read_bytes() for k, d in jobs.items()}
    done, cut, fresh = (jobs[k] for k in sorted(jobs))

    # Job seed=2: start it again from nothing and stop it with SIGTERM after a checkpoint.
    shutil.rmtree(cut)
    shutil.rmtree(fresh)
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rnn_lab.train",
            "study=demo",
            *job_overrides,
            # Quoted: the job's folder name holds "," and "=", which Hydra would parse.
            "init=orthogonal",
            "activation=tanh",
            "seed=2",
            f"hydra.run.dir='{cut}'",
        ],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not (cut / "checkpoint.npz").exists() and time.time() < deadline:
        time.sleep(0.02)
    child.send_signal(signal.SIGTERM)
    child.communicate(timeout=120)
    cut_summary = json.loads((cut / "summary.json").read_text())
    assert cut_summary["status"] == "interrupted" and cut_summary["steps_done"] < 12000
    done_mtime = os.stat(done / "history.csv").st_mtime_ns

    proc = run_cli(args, module="rnn_lab.app.cli", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert os.stat(done / "history.csv").st_mtime_ns == done_mtime, "finished job was re-run"
    log = sweep_logs(sweep)
    assert "already complete" in log
    assert f"resuming from the checkpoint at step {cut_summary['steps_done']}" in log
    for k, d in _job_dirs(sweep).items():
        assert json.loads((d / "summary.json").read_text())["status"] == "ok"
        assert (d / "history.csv").read_bytes() == reference[k], k


def test_ray_gets_an_absolute_temp_dir_inside_a_relative_sweep_folder(compose):
    """`rnn-lab study NAME launcher=ray` sweeps into multirun/NAME (relative); Ray refuses a
    relative temp dir ("temp_dir must be absolute path or None")."""
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    cfg = compose(["launcher=ray", "hydra.sweep.dir=multirun/demo"], return_hydra_config=True)
    temp_dir = cfg.hydra.launcher.ray.init._temp_dir
    assert temp_dir == str(Path.cwd() / "multirun" / "demo" / ".ray_tmp")


@pytest.mark.slow
def test_ray_launcher_gives_identical_results(basic_and_joblib):
    pytest.importorskip("ray")
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    import tempfile

    # A short base path: Ray's unix sockets live under its temp dir (107-byte limit).
    base = Path(tempfile.mkdtemp(prefix="rl", dir="/tmp"))
    try:
        sweep, proc = _sweep(base, "ray", ["launcher=ray"])
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert (sweep / ".ray_tmp").is_dir(), "Ray's temp files stay inside the sweep"
        (basic, _), _ = basic_and_joblib
        a, b = _job_dirs(basic), _job_dirs(sweep)
        assert a.keys() == b.keys()
        for name in a:
            assert (a[name] / "history.csv").read_bytes() == (b[name] / "history.csv").read_bytes()
        assert (sweep / "report.md").exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_submitit_local_launcher_gives_identical_results(basic_and_joblib, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep, proc = _sweep(tmp_path, "submitit", ["launcher=submitit_local"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    (basic, _), _ = basic_and_joblib
    a, b = _job_dirs(basic), _job_dirs(sweep)
    assert a.keys() == b.keys()
    for name in a:
        assert (a[name] / "history.csv").read_bytes() == (b[name] / "history.csv").read_bytes()
