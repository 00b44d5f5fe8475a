"""A run directory you can trust: reused only by the run that owns it, one generation of files,
damage repaired on re-run, refusals that leave everything as it was, finite-but-absurd losses
ended as diverged; and resumes that end bit-identical for every optimiser and batch size."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from cli_helpers import TINY, run_cli

from rnn_lab.core import engine
from rnn_lab.core.losses import softmax_cross_entropy
from rnn_lab.core.optim import make_optimizer
from rnn_lab.inspect.analysis import analyze_run
from rnn_lab.run import rundir
from rnn_lab.run.lifecycle import build_params, build_task
from rnn_lab.run.rundir import RunConflict
from rnn_lab.run.settings import TrainSettings
from rnn_lab.run.trainer import train

NO_REPORT = "~hydra.callbacks.report"


def _files(run_dir):
    """Every file's bytes under run_dir (the lock's holder note aside)."""
    return {
        str(p.relative_to(run_dir)): p.read_bytes()
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.name != rundir.LOCK_FILE
    }


def _one_line_refusal(proc) -> str:
    assert proc.returncode == 2, proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("rnn_lab: error: "), proc.stderr
    return lines[0]


# ---- 1. stale results are never relabelled ------------------------------------------------


def test_finished_run_rerun_with_other_settings_is_refused_and_untouched(tmp_path):
    run_dir = tmp_path / "run"
    assert run_cli([*TINY, NO_REPORT, f"hydra.run.dir={run_dir}"]).returncode == 0
    before = _files(run_dir)
    proc = run_cli(
        [
            *TINY,
            NO_REPORT,
            "resume=true",
            "lr=0.5",
            "init=xavier",
            "activation=relu",
            f"hydra.run.dir={run_dir}",
        ]  # fmt: skip
    )
    line = _one_line_refusal(proc)
    for named in ("lr: 0.01 -> 0.5", "init.name: 'orthogonal' -> 'xavier'", "activation"):
        assert named in line.replace('"', "'"), line
    assert "Ways out" in line
    assert _files(run_dir) == before, ".hydra/ and every run file stay as they were"


def test_fewer_steps_than_done_is_refused(tmp_path, tiny_settings):
    train(tiny_settings(steps=40), tmp_path)
    with pytest.raises(RunConflict, match="trained for 40 steps; steps=20 asks for fewer"):
        train(tiny_settings(steps=20, resume=True), tmp_path)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["steps"] == 40 and summary["steps_done"] == 40


def test_more_steps_extend_a_finished_run_exactly(tmp_path, tiny_settings):
    straight = train(tiny_settings(steps=60), tmp_path / "straight")
    train(tiny_settings(steps=40), tmp_path / "extended")
    extended = train(tiny_settings(steps=60, resume=True), tmp_path / "extended")
    assert extended["steps_done"] == 60 and extended["final_loss"] == straight["final_loss"]
    a = rundir.read_checkpoint(tmp_path / "straight")
    b = rundir.read_checkpoint(tmp_path / "extended")
    for k in engine.PARAM_NAMES:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_diverged_run_rerun_with_a_fixed_lr_is_a_conflict_not_diverged_again(tmp_path):
    tiny = [*TINY, "clip=0", NO_REPORT]
    run_dir = tmp_path / "run"
    proc = run_cli([*tiny, "lr=1e6", f"hydra.run.dir={run_dir}"])
    assert proc.returncode == 0
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "diverged"
    line = _one_line_refusal(run_cli([*tiny, "lr=0.01", "resume=true", f"hydra.run.dir={run_dir}"]))
    assert "lr: 1000000.0 -> 0.01" in line


# ---- 2. no analysis of another run -------------------------------------------------------


def test_fresh_start_removes_the_previous_runs_analysis(tmp_path, tiny_settings):
    train(tiny_settings(), tmp_path)
    analyze_run(tmp_path, plots=False)
    assert "vocab_hit_rate" in json.loads((tmp_path / "summary.json").read_text())
    train(tiny_settings(analyze=False), tmp_path)  # the same run again, not analysed
    assert not (tmp_path / "analysis.json").exists()
    assert "vocab_hit_rate" not in json.loads((tmp_path / "summary.json").read_text())


def test_summary_merges_only_an_analysis_of_the_same_run_and_step(tmp_path, tiny_settings):
    summary = train(tiny_settings(), tmp_path)
    analyze_run(tmp_path, plots=False)
    analysis = json.loads((tmp_path / "analysis.json").read_text())
    assert analysis["run_id"] == summary["run_id"] and analysis["steps_done"] == 40
    for stale in ({"run_id": "0" * 16}, {"steps_done": 20}):
        rundir.atomic_write_json(tmp_path / "analysis.json", {**analysis, **stale})
        merged = rundir.write_summary(tmp_path, summary)
        assert "vocab_hit_rate" not in merged


# ---- 3. changed data is noticed ------------------------------------------------------------


@pytest.mark.parametrize("finished", [True, False])
def test_edited_text_is_a_conflict(tmp_path, tiny_settings, finished):
    text = tmp_path / "corpus.txt"
    text.write_text("the cat sees the dog " * 200)
    data = {"name": "text", "path": str(text), "normalize": True}
    run_dir = tmp_path / "run"
    train(tiny_settings(data=data), run_dir)
    if not finished:
        rundir.write_summary(run_dir, {**json.loads((run_dir / "summary.json").read_text()),
                                       "status": "interrupted", "steps_done": 40})  # fmt: skip
    text.write_text("the cat sees the bird " * 200)
    before = _files(run_dir)
    with pytest.raises(RunConflict, match="data_sha1"):
        train(tiny_settings(data=data, resume=True), run_dir)
    assert _files(run_dir) == before


# ---- 4. damage is repaired on re-run ------------------------------------------------------


def _truncate(path, keep: float = 0.5):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize(
    "damage",
    ["history.csv", "diagnostics.npz", "checkpoint.npz", "summary.json"],
)
def test_damaged_finished_run_is_retrained_to_the_same_result(tmp_path, tiny_settings, damage):
    straight = train(tiny_settings(), tmp_path / "straight")
    run_dir = tmp_path / "damaged"
    train(tiny_settings(), run_dir)
    if damage == "summary.json":
        (run_dir / damage).write_text("")
    elif damage == "diagnostics.npz":
        (run_dir / damage).write_bytes(b"garbage" * 50)
    else:
        _truncate(run_dir / damage)
    again = train(tiny_settings(resume=True), run_dir)
    assert again["status"] == "ok" and again["final_loss"] == straight["final_loss"]
    assert (run_dir / "history.csv").read_bytes() == (
        tmp_path / "straight/history.csv"
    ).read_bytes()
    a, b = rundir.read_checkpoint(run_dir), rundir.read_checkpoint(tmp_path / "straight")
    for k in engine.PARAM_NAMES:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    rundir.read_npz(run_dir / "diagnostics.npz")  # loads again


# ---- 5. refusals that leave everything as it was ------------------------------------------


def test_interrupted_run_resumed_with_other_settings_stays_interrupted(tmp_path):
    run_dir = tmp_path / "run"
    long = [t for t in TINY if not t.startswith("steps=")] + ["steps=40", NO_REPORT]
    assert run_cli([*long, f"hydra.run.dir={run_dir}"]).returncode == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    rundir.write_summary(run_dir, {**summary, "status": "interrupted", "signal": 2})
    before = _files(run_dir)
    _one_line_refusal(run_cli([*long, "resume=true", "hidden_size=16", f"hydra.run.dir={run_dir}"]))
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"
    assert _files(run_dir) == before


def test_non_finite_weights_file_is_refused_before_any_work(tmp_path):
    task = build_task(TrainSettings(data={"name": "elman", "seed": 42, "num_sentences": 60}))
    params = build_params(TrainSettings(hidden_size=8), task).arrays()
    params["W_hh"][0, 0] = np.nan
    weights = tmp_path / "nan.npz"
    np.savez(weights, **params)
    run_dir = tmp_path / "run"
    line = _one_line_refusal(
        run_cli([*TINY, "init=file", f"init.path={weights}", f"hydra.run.dir={run_dir}"])
    )
    assert "W_hh" in line and "non-finite" in line
    assert not run_dir.exists()


# ---- 8. finite but absurd is diverged --------------------------------------------------------


def test_absurd_finite_loss_ends_the_run_as_diverged_with_step_and_loss(tmp_path, tiny_settings):
    summary = train(tiny_settings(steps=300, lr=1000.0, clip=0.0), tmp_path)
    assert summary["status"] == "diverged"
    assert "diverge_factor" in summary["error"] and "at step" in summary["error"]
    step = int(summary["error"].rsplit("at step ", 1)[1])
    assert summary["steps_done"] == step - 1 < 300
    off = train(tiny_settings(steps=120, lr=1000.0, clip=0.0, diverge_factor=0.0), tmp_path / "b")
    assert off["status"] == "ok" and off["final_loss"] > 10 * math.log(24)  # 0 disables


# ---- resume matrix: optimisers x batch sizes, from an older periodic checkpoint -------------

OPTIMS = {
    "sgd": {"name": "sgd", "momentum": 0.9, "dampening": 0.9, "nesterov": False},
    "adagrad": {"name": "adagrad", "eps": 1e-10, "initial_accumulator_value": 0.0},
    "adam": {"name": "adam", "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
}


@pytest.mark.parametrize("batch_size", [1, 4])
@pytest.mark.parametrize("optim", sorted(OPTIMS))
def test_resume_from_an_older_checkpoint_is_bit_identical(
    tmp_path, tiny_settings, optim, batch_size
):
    def settings(steps, **kw):
        return tiny_settings(steps=steps, optim=OPTIMS[optim], batch_size=batch_size, seq_len=6,
                             lr=0.01 if optim != "adagrad" else 0.1, **kw)  # fmt: skip

    train(settings(60), tmp_path / "straight")
    cut = tmp_path / "cut"
    train(settings(40), cut)  # its checkpoint at step 40: a periodic one of the 60-step run
    older = (cut / "checkpoint.npz").read_bytes()
    train(settings(50, resume=True), cut)  # history and diagnostics now run ahead to 50
    (cut / "checkpoint.npz").write_bytes(older)  # as if killed after writing them
    summary = json.loads((cut / "summary.json").read_text())
    rundir.write_summary(cut, {**summary, "status": "running"})
    resumed = train(settings(60, resume=True), cut)
    assert resumed["status"] == "ok" and resumed["steps_done"] == 60
    assert (cut / "history.csv").read_bytes() == (tmp_path / "straight/history.csv").read_bytes()
    a, b = rundir.read_checkpoint(cut), rundir.read_checkpoint(tmp_path / "straight")
    for k in b:
        if k not in ("wall_time_s", "settings"):  # settings differ in resume=true only
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# ---- what the trainer passes to the engine ----------------------------------------------------


def test_clip_mode_value_trains_as_the_engine_clips_element_wise(tmp_path, tiny_settings):
    s = tiny_settings(steps=15, clip=0.05, clip_mode="value", val_interval=0, record=False)
    train(s, tmp_path)
    # An independent replica of the loop from the engine's pieces (no trainer code).
    task = build_task(s)
    params = engine.pack(build_params(s, task))
    opt = make_optimizer("sgd", momentum=0.9, dampening=0.9, nesterov=False)
    h = np.zeros((1, s.hidden_size))
    for _ in range(s.steps):
        batch = task.next_batch()
        h = np.zeros_like(h) if batch.reset_h else h
        cache = engine.forward(params, batch.inputs, h, "tanh")
        _, dlogits, _ = softmax_cross_entropy(cache.logits, batch.targets)
        grads = engine.backward(params, cache, dlogits, "tanh", clip=0.05, clip_mode="value")
        assert np.abs(grads.flat).max() <= 0.05
        opt.step({"flat": params.flat}, {"flat": grads.flat}, s.lr)
        h = cache.h_last
    saved = rundir.read_checkpoint(tmp_path)
    for k in engine.PARAM_NAMES:
        np.testing.assert_array_equal(saved[k], getattr(params, k), err_msg=k)


def test_float32_training_follows_float64(tmp_path, tiny_settings):
    a = train(tiny_settings(steps=100, dtype="float64"), tmp_path / "f64")
    b = train(tiny_settings(steps=100, dtype="float32"), tmp_path / "f32")
    assert b["status"] == "ok"
    assert abs(a["final_loss"] - b["final_loss"]) < 1e-3 * a["final_loss"]
    wa, wb = rundir.read_checkpoint(tmp_path / "f64"), rundir.read_checkpoint(tmp_path / "f32")
    assert wb["W_hh"].dtype == np.float32
    np.testing.assert_allclose(wb["W_hh"], wa["W_hh"], rtol=1e-3, atol=1e-4)


def test_lock_refuses_a_second_writer_and_is_free_after_the_holder_dies(tmp_path, tiny_settings):
    import subprocess
    import sys
    import time

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from rnn_lab.run import rundir\n"
         "with rundir.file_lock(sys.argv[1], 'run directory'):\n    print('held', flush=True); "
         "time.sleep(60)", str(tmp_path / "run.lock")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(rundir.LockHeld, match=f'"pid": {holder.pid}'):
        train(tiny_settings(), tmp_path)
    holder.kill()
    holder.wait()
    time.sleep(0.1)
    assert train(tiny_settings(), tmp_path)["status"] == "ok"  # the kernel dropped the lock
