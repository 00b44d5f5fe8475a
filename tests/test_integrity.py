"""verify_run_dir on fabricated run directories, each damaged with real files the way a full
disk, a cut-off copy or a stray older file damages them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fakeruns import fake_checkpoint, fake_config, fake_summary, make_fake_run  # noqa: E402

from rnn_lab.run.integrity import verify_run_dir  # noqa: E402


def run(tmp_path, status="ok", record=True, **summary_fields) -> Path:
    config = fake_config(record=record)
    summary = fake_summary(status=status, **summary_fields)
    return make_fake_run(tmp_path / "run", config, [], summary)


def cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def only(problems: list[str], file: str) -> str:
    assert len(problems) == 1, problems
    assert file in problems[0], problems
    return problems[0]


@pytest.mark.parametrize("status", ["ok", "diverged", "interrupted", "failed", "running"])
def test_sound_runs_have_no_problems(tmp_path, status):
    assert verify_run_dir(run(tmp_path, status)) == []


def test_record_false_run_needs_no_diagnostics(tmp_path):
    d = run(tmp_path, record=False)
    assert not (d / "diagnostics.npz").exists()
    assert verify_run_dir(d) == []


def test_truncated_checkpoint(tmp_path):
    d = run(tmp_path)
    cut_in_half(d / "checkpoint.npz")
    reason = only(verify_run_dir(d), "checkpoint.npz")
    assert "unreadable" in reason and len(reason) <= 200


def test_garbage_diagnostics(tmp_path):
    d = run(tmp_path)
    (d / "diagnostics.npz").write_bytes(b"\x00garbage, not a zip file" * 10)
    assert "unreadable" in only(verify_run_dir(d), "diagnostics.npz")


def test_history_cut_after_a_few_lines(tmp_path):
    d = run(tmp_path)
    lines = (d / "history.csv").read_text().splitlines(keepends=True)
    (d / "history.csv").write_text("".join(lines[:4]))  # header + steps 10, 20, 30
    reason = only(verify_run_dir(d), "history.csv")
    assert reason == "history.csv ends at step 30, summary.json says steps_done 200"


def test_history_cut_mid_line_or_mid_number(tmp_path):
    d = run(tmp_path)
    cut_in_half(d / "history.csv")  # the last line loses its tail: the run ends too early
    assert "history.csv ends at step" in only(verify_run_dir(d), "history.csv")
    (d / "history.csv").write_text("step,loss\n10,2.0\n20,1.5e-")  # cut inside a number
    assert "history.csv is unparseable" in only(verify_run_dir(d), "history.csv")


@pytest.mark.parametrize(
    "content, expected",
    [
        ("", "summary.json is empty"),
        ('{"status": "ok", "steps_do', "summary.json is unparseable"),
        ("[1, 2]", "summary.json is not a JSON object"),
    ],
)
def test_damaged_summary(tmp_path, content, expected):
    d = run(tmp_path)
    (d / "summary.json").write_text(content)
    assert only(verify_run_dir(d), "summary.json").startswith(expected)


def test_missing_summary(tmp_path):
    d = make_fake_run(tmp_path / "run", fake_config(), [], None)
    assert verify_run_dir(d) == ["summary.json is missing"]


def test_checkpoint_must_be_at_steps_done_for_a_finished_run(tmp_path):
    d = run(tmp_path)
    np.savez(d / "checkpoint.npz", **fake_checkpoint(150))  # an older checkpoint
    assert only(verify_run_dir(d), "checkpoint.npz") == (
        "checkpoint.npz is at step 150, summary.json says steps_done 200"
    )
    (d / "checkpoint.npz").unlink()
    assert only(verify_run_dir(d), "checkpoint.npz") == (
        "checkpoint.npz is missing (the run says ok)"
    )


def test_diverged_checkpoint_is_checked_too(tmp_path):
    d = run(tmp_path, "diverged")  # steps_done 100
    np.savez(d / "checkpoint.npz", **fake_checkpoint(60))
    assert "at step 60" in only(verify_run_dir(d), "checkpoint.npz")


def test_interrupted_checkpoint_may_lag_but_not_lead(tmp_path):
    d = run(tmp_path, "interrupted")  # steps_done 50
    np.savez(d / "checkpoint.npz", **fake_checkpoint(40))
    assert verify_run_dir(d) == []  # resuming from 40 redoes 10 steps, nothing is wrong
    np.savez(d / "checkpoint.npz", **fake_checkpoint(60))
    assert "beyond steps_done 50" in only(verify_run_dir(d), "checkpoint.npz")


def test_interrupted_history_must_not_go_beyond_steps_done(tmp_path):
    d = run(tmp_path, "interrupted")
    (d / "history.csv").write_text("step,loss\n10,2.0\n50,1.5\n")
    assert verify_run_dir(d) == []
    (d / "history.csv").write_text("step,loss\n10,2.0\n50,1.5\n80,1.2\n")
    assert "goes to step 80, beyond steps_done 50" in only(verify_run_dir(d), "history.csv")


def test_checkpoint_without_step(tmp_path):
    d = run(tmp_path)
    arrays = fake_checkpoint(200)
    del arrays["step"]
    np.savez(d / "checkpoint.npz", **arrays)
    assert only(verify_run_dir(d), "checkpoint.npz") == "checkpoint.npz has no step"


def test_failed_run_checkpoint_loads_when_present(tmp_path):
    d = run(tmp_path, "failed")
    assert verify_run_dir(d) == []  # failed before any checkpoint: nothing required
    np.savez(d / "checkpoint.npz", **fake_checkpoint(120))  # any step: failed runs go on
    assert verify_run_dir(d) == []
    cut_in_half(d / "checkpoint.npz")
    only(verify_run_dir(d), "checkpoint.npz")


def test_running_run_gets_loading_checks_only(tmp_path):
    d = run(tmp_path, "running")
    np.savez(d / "checkpoint.npz", **fake_checkpoint(150))  # ahead of the start summary
    assert verify_run_dir(d) == []
    cut_in_half(d / "checkpoint.npz")
    only(verify_run_dir(d), "checkpoint.npz")


def test_diagnostics_required_when_recorded_and_ok(tmp_path):
    d = run(tmp_path)
    (d / "diagnostics.npz").unlink()
    assert only(verify_run_dir(d), "diagnostics.npz") == (
        "diagnostics.npz is missing (settings.json says record: true)"
    )


def test_analysis_and_settings_must_parse(tmp_path):
    d = run(tmp_path)
    (d / "analysis.json").write_text('{"run_id": "0123456789abcdef", "vocab_hit')
    assert "analysis.json is unparseable" in only(verify_run_dir(d), "analysis.json")
    (d / "analysis.json").write_text(json.dumps({"run_id": "another-run", "steps_done": 5}))
    assert verify_run_dir(d) == []  # another run's analysis is not damage, just not merged
    (d / "settings.json").write_text("{")
    # record unknown, so diagnostics.npz is not required; the settings are the problem
    assert "settings.json is unparseable" in only(verify_run_dir(d), "settings.json")


def test_ok_summary_short_of_its_steps(tmp_path):
    d = run(tmp_path)
    summary = json.loads((d / "summary.json").read_text())
    summary["steps"] = 300
    (d / "summary.json").write_text(json.dumps(summary))
    assert verify_run_dir(d) == ["summary.json says ok after 200 of 300 steps"]


def test_every_problem_is_listed(tmp_path):
    d = run(tmp_path)
    cut_in_half(d / "checkpoint.npz")
    (d / "diagnostics.npz").write_bytes(b"junk")
    (d / "history.csv").write_text("step,loss\n10,2.0\n")
    problems = verify_run_dir(d)
    assert [p.split()[0] for p in problems] == ["checkpoint.npz", "diagnostics.npz", "history.csv"]
    assert verify_run_dir(tmp_path / "nowhere") == [f"{tmp_path / 'nowhere'} is not a directory"]


def test_integrity_is_numpy_and_stdlib_only():
    code = (
        "import sys, rnn_lab.run.integrity\n"
        "heavy = ('pandas', 'yaml', 'matplotlib', 'scipy', 'torch', 'rnn_lab.core',"
        " 'rnn_lab.run.trainer', 'rnn_lab.run.lifecycle', 'rnn_lab.run.settings')\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
