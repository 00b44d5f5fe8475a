"""A sweep's progress lines in the launching terminal (rnn_lab.app.progress)."""

from __future__ import annotations

import json
import math
import os
import re
import time
from types import SimpleNamespace

import pytest
from cli_helpers import run_cli
from hydra.core.utils import JobStatus
from omegaconf import OmegaConf

from rnn_lab.app.progress import (
    JobEnd,
    ProgressWatcher,
    eta_seconds,
    format_duration,
    format_line,
    job_outcome,
    planned_jobs,
    write_job_end,
)

LINE = re.compile(
    r"^\[(\d+)/(\d+)\] (\S+) seed=(\d+) (\w+) val_loss (\S+) \((\d+\.\d) s\) \| "
    r"elapsed (\S+?)(?:, ETA (\S+)|, all done)$"
)


def _seconds(text: str) -> int:
    """ "1m40s" -> 100, "2h05m" -> 7500, "42s" -> 42."""
    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text)
    assert m and text, text
    h, mi, s = (int(g or 0) for g in m.groups())
    return 3600 * h + 60 * mi + s


# --------------------------------------------------------------------------- formatting


def test_durations():
    assert [format_duration(s) for s in (0, 0.4, 42, 59.6, 100, 190, 3599, 3600, 7530)] == [
        "0s",
        "0s",
        "42s",
        "1m00s",
        "1m40s",
        "3m10s",
        "59m59s",
        "1h00m",
        "2h05m",
    ]
    for s in (5, 100, 3599, 5000):
        assert abs(_seconds(format_duration(s)) - s) < 60


def test_eta_is_elapsed_per_finished_job_times_the_jobs_left():
    assert eta_seconds(100.0, 12, 36) == pytest.approx(100.0 / 12 * 24)
    assert eta_seconds(100.0, 36, 36) == 0
    assert eta_seconds(5.0, 0, 36) is None and eta_seconds(5.0, 3, None) is None
    job = JobEnd(
        ["init=xavier", "activation=relu", "seed=2", "steps=30"], 2, "ok", "val_loss", 1.0497, 7.94
    )
    swept = ["init", "activation", "seed"]
    assert format_line(job, 12, 36, 100.0, swept) == (
        "[12/36] init=xavier,activation=relu seed=2 ok val_loss 1.05 (7.9 s) | "
        "elapsed 1m40s, ETA 3m20s"
    )
    # 95 s for 19 of 36 jobs: 5 s a job, 17 left -> 85 s
    assert format_line(job, 19, 36, 95.0, swept).endswith("| elapsed 1m35s, ETA 1m25s")
    assert format_line(job, 36, 36, 300.0, swept).endswith("| elapsed 5m00s, all done")
    assert format_line(job, 3, None, 10.0, swept).startswith("[3/?] ")
    assert format_line(job, 3, None, 10.0, swept).endswith("| elapsed 10s")


def test_line_of_a_job_that_did_not_end_ok():
    job = JobEnd(["init=random"], 1, "diverged", "val_loss", None, 2.0, "loss is nan at step 57")
    line = format_line(job, 2, 4, 10.0, ["init"])
    assert line == (
        "[2/4] init=random seed=1 diverged - loss is nan at step 57 (2.0 s) | elapsed 10s, ETA 10s"
    )
    assert "val_loss" not in line
    job = JobEnd(["init=random"], 1, "ok", "val_loss", 3.0, 0.1, "already done, not retrained")
    assert "ok val_loss 3.00 (already done, not retrained) (0.1 s)" in format_line(
        job, 1, 1, 1.0, ["init"]
    )


# --------------------------------------------------------------------------- the job count


def _sweep_config(params: dict, task: list[str], **sweeper) -> OmegaConf:
    target = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
    return OmegaConf.create(
        {
            "hydra": {
                "sweeper": {"_target_": target, "params": params, **sweeper},
                "overrides": {"task": task},
            }
        }
    )


def test_planned_jobs_expand_the_grid_as_hydra_does(compose):
    params = {"init": "orthogonal,xavier,random", "activation": "tanh,relu", "seed": "1,2,3"}
    assert planned_jobs(_sweep_config(params, [])) == (18, ["init", "activation", "seed"])
    # the command line replaces the config's grid for a key, and adds its own sweeps
    cfg = _sweep_config(params, ["seed=1,2", "steps=30", "seq_len=range(5,25,5)"])
    assert planned_jobs(cfg) == (3 * 2 * 2 * 4, ["init", "activation", "seed", "seq_len"])
    assert planned_jobs(_sweep_config(params, ["init=xavier"])) == (6, ["activation", "seed"])
    assert planned_jobs(_sweep_config({}, [])) == (1, [])
    optuna = _sweep_config({"lr": "tag(log, interval(1e-4, 1e-1))"}, [], n_trials=7)
    optuna.hydra.sweeper._target_ = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.X"
    assert planned_jobs(optuna) == (7, ["lr"])
    # a study's grid, composed from experiments/ like `rnn-lab study demo`
    demo = compose(["study=demo"], return_hydra_config=True)
    assert planned_jobs(demo) == (18, ["init", "activation", "seed"])


# --------------------------------------------------------------------------- job side


def _summary(path, **fields):
    (path / "summary.json").write_text(json.dumps(fields))


def test_job_outcome_reads_the_jobs_summary(tmp_path):
    done = SimpleNamespace(status=JobStatus.COMPLETED, _return_value=2.5)
    inf = SimpleNamespace(status=JobStatus.COMPLETED, _return_value=math.inf)
    started = time.time()
    _summary(tmp_path, status="ok", val_loss=2.5)
    job = job_outcome(tmp_path, started, done, "val_loss")
    assert (job.status, job.value, job.note) == ("ok", 2.5, "")
    old = started - 3600
    os.utime(tmp_path / "summary.json", (old, old))  # written by an earlier sweep
    assert job_outcome(tmp_path, started, done, "val_loss").note == "already done, not retrained"
    assert job_outcome(tmp_path, started, inf, "val_loss").status == "conflict"
    _summary(tmp_path, status="failed", error="config error:\n  seq_len=0")
    job = job_outcome(tmp_path, started, inf, "val_loss")
    assert (job.status, job.value, job.note) == ("failed", None, "config error: seq_len=0")
    crashed = SimpleNamespace(status=JobStatus.FAILED, _return_value=RuntimeError("boom"))
    assert job_outcome(tmp_path, started, crashed, "val_loss").status == "error"
    skipped = job_outcome(tmp_path / "nope", started, inf, "val_loss", stopped=True)
    assert (skipped.status, skipped.note) == ("skipped", "the sweep was stopped before it started")


def test_watcher_prints_each_job_once_in_the_order_they_ended(tmp_path):
    printed = []
    watcher = ProgressWatcher(
        tmp_path, 3, ["init"], printer=lambda text, **kw: printed.append((text, kw))
    )
    for num, init in ((2, "xavier"), (0, "orthogonal")):
        write_job_end(tmp_path, num, JobEnd([f"init={init}"], 1, "ok", "val_loss", 1.0, 0.5))
        time.sleep(0.02)  # distinct modification times
    (tmp_path / ".000009.json.x.tmp").write_text("half written")  # an atomic write in flight
    watcher.drain()
    watcher.drain()
    assert [t.split(" ")[:2] for t, _ in printed] == [
        ["[1/3]", "init=xavier"],
        ["[2/3]", "init=orthogonal"],
    ]
    assert all(t.endswith("\n") and t.count("\n") == 1 for t, _ in printed)
    assert all(kw == {"end": "", "flush": True} for _, kw in printed)  # one write per line
    watcher.stop()
    assert printed[-1][0].startswith("[2/3] jobs reported after ")


# --------------------------------------------------------------------------- a real sweep


def test_progress_lines_of_a_real_joblib_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    args = [
        "study",
        "demo",
        "steps=30",
        "hidden_size=8",
        "data.num_sentences=40",
        "analyze=false",
        "init=orthogonal,random",
        "seed=1,2",
        "launcher=joblib",
        f"hydra.sweep.dir={sweep}",
    ]
    proc = run_cli(args, module="rnn_lab.app.cli", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    n = 2 * 2 * 2  # init x activation x seed
    lines = [ln for ln in proc.stdout.splitlines() if re.match(r"^\[\d+/", ln)]
    assert len(lines) == n, proc.stdout
    seen = set()
    for i, line in enumerate(lines, 1):
        m = LINE.match(line)
        assert m, line
        done, total, label, seed, status = m.group(1, 2, 3, 4, 5)
        assert (int(done), int(total), status) == (i, n, "ok"), line
        assert re.fullmatch(r"init=(orthogonal|random),activation=(tanh|relu)", label), line
        seen.add((label, seed))
        elapsed, eta = _seconds(m.group(8)), m.group(9)
        if i < n:
            # printed values are rounded to whole seconds: elapsed by up to 0.5 s
            want = (elapsed / i) * (n - i)
            slack = 0.5 * (n - i) / i + 0.5
            assert abs(_seconds(eta) - want) <= slack + 1e-9, line
        else:
            assert eta is None and line.endswith("all done"), line
    assert len(seen) == n  # every job once
    assert lines[-1].startswith(f"[{n}/{n}] ")
    # the lines come before the report is built, and every output line is whole
    assert proc.stdout.index(lines[-1]) < proc.stdout.index("sweep report:")
    # ... then `rnn-lab study` prints the report's Answer block and the report's path
    head, _, answer = proc.stdout.partition("\n## Answer\n")
    assert answer, proc.stdout
    last = answer.rstrip().splitlines()[-1]
    assert last.startswith("report: ")
    for line in [*head.splitlines(), last]:
        assert re.match(
            r"^(\[\d{4}-\d\d-\d\d [\d:,]+\]\[|\[\d+/\d+\] |rnn-lab study |sweep report|report: )",
            line,
        ), line

    # the same command again: every job is already done, and says so
    again = run_cli([*args[:-2], "launcher=basic", args[-1]], module="rnn_lab.app.cli", timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    lines = [ln for ln in again.stdout.splitlines() if re.match(r"^\[\d+/", ln)]
    assert len(lines) == n and lines[-1].startswith(f"[{n}/{n}] ")
    assert all("(already done, not retrained)" in ln for ln in lines), lines


def test_a_resumed_tuning_sweep_counts_from_its_earlier_trials():
    from rnn_lab.app.progress import JobEnd, format_line

    job = JobEnd(overrides=["lr=0.01"], seed=None, status="ok", metric="val_loss", value=0.5,
                 note="", seconds=10.0)  # fmt: skip
    # 4 of 6 trials finished in an earlier session; this session's first took 10 s
    line = format_line(job, 5, 6, 10.0, [], already=4)
    assert line.startswith("[5/6]") and line.endswith("ETA 10s"), line
