"""load_run reads back exactly what a real (short) trainer run recorded."""

from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pytest

import rnn_lab
from rnn_lab.core import engine
from rnn_lab.core.losses import get_loss
from rnn_lab.inspect.load import RunDirError, load_run
from rnn_lab.run.input_files import make_task
from rnn_lab.run.settings import TrainSettings
from rnn_lab.run.trainer import train

SHORT = dict(
    steps=120,
    hidden_size=12,
    seq_len=8,
    record_dense_until=40,
    record_dense_interval=10,
    record_interval=20,
    jacobian_interval=40,
    jacobian_lags=5,
    sample_interval=60,
    sample_length=30,
    val_interval=50,
    checkpoint_interval=0,
    log_interval=0,
    analyze=False,
)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("recorded")
    settings = TrainSettings(**SHORT)
    train(settings, run_dir)
    return run_dir, settings


@pytest.fixture(scope="module")
def unrecorded(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("unrecorded")
    train(TrainSettings(**{**SHORT, "record": False}), run_dir)
    return run_dir


def _csv_rows(path):
    """history.csv parsed by the csv module: the exact text the trainer wrote."""
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_json_files_read_back_unchanged(recorded):
    run_dir, settings = recorded
    run = load_run(run_dir)
    assert run.summary == json.loads((run_dir / "summary.json").read_text())
    assert run.summary["status"] == "ok" and run.summary["steps_done"] == settings.steps
    assert run.settings == json.loads((run_dir / "settings.json").read_text())
    assert run.settings["hidden_size"] == settings.hidden_size
    assert run.vocab == json.loads((run_dir / "vocab.json").read_text())["chars"]
    assert run.analysis is None  # analyze=False: no analysis.json
    assert run.path == run_dir
    assert run.activation == "tanh"


def test_history_is_the_csv_bit_for_bit(recorded):
    run_dir, _ = recorded
    history = load_run(run_dir).history
    rows = _csv_rows(run_dir / "history.csv")
    assert list(history.columns) == list(rows[0].keys())
    assert len(history) == len(rows)
    for column in history.columns:
        written = [r[column] for r in rows]
        read = history[column].tolist()
        for w, r in zip(written, read):
            if w == "":
                assert pd.isna(r), column
            else:
                # exact: float(text) is the correctly rounded value the trainer wrote
                assert float(w) == r, (column, w, r)
    assert history["step"].iloc[-1] == SHORT["steps"]
    assert history["val_loss"].notna().sum() >= 2  # steps 50, 100 and the end


def test_diagnostics_are_the_npz_arrays(recorded):
    run_dir, settings = recorded
    run = load_run(run_dir)
    with np.load(run_dir / "diagnostics.npz") as z:
        assert set(run.diagnostics) == set(z.files)
        for key in z.files:
            assert run.diagnostics[key].dtype == z[key].dtype, key
            np.testing.assert_array_equal(run.diagnostics[key], z[key], err_msg=key)
    steps = run.diagnostics["record_step"]
    assert steps[0] == 1 and steps[-1] == settings.steps
    assert run.diagnostics["eigenvalues"].shape == (len(steps), settings.hidden_size)
    # every jacobian_interval steps, and at the first and the last step
    np.testing.assert_array_equal(run.diagnostics["jacobian_step"], [1, 40, 80, 120])


def test_params_are_the_final_weights(recorded):
    run_dir, settings = recorded
    run = load_run(run_dir)
    params = run.params()
    with np.load(run_dir / "checkpoint.npz") as z:
        for name in engine.PARAM_NAMES:
            np.testing.assert_array_equal(getattr(params, name), z[name])
    assert params.E is None
    assert run.checkpoint_step() == settings.steps
    # The weights reproduce the validation loss the trainer computed at the end.
    task = make_task(settings.data, settings.seq_len, 1, settings.val_fraction)
    batch = task.validation_batch()
    cache = engine.forward(params, batch.inputs, np.zeros((1, params.hidden_size)), "tanh")
    loss, _, n = get_loss("cross_entropy")(cache.logits, batch.targets, None)
    assert loss / n == pytest.approx(run.summary["val_loss"], rel=1e-12)
    assert engine.spectral_radius(params.W_hh) == pytest.approx(
        run.summary["spectral_radius"], rel=1e-12
    )


def test_eigenvalues_frame(recorded):
    run_dir, settings = recorded
    run = load_run(run_dir)
    frame = run.eigenvalues_frame()
    eig = run.diagnostics["eigenvalues"]
    H = settings.hidden_size
    assert list(frame.columns) == ["step", "index", "real", "imag", "abs"]
    assert len(frame) == eig.size
    last = frame[frame["step"] == settings.steps].sort_values("index")
    np.testing.assert_array_equal(last["index"], np.arange(H))
    np.testing.assert_array_equal(last["real"], eig[-1].real)
    np.testing.assert_array_equal(last["imag"], eig[-1].imag)
    assert last["abs"].max() == pytest.approx(run.history["spectral_radius"].iloc[-1])


def test_profile_frames(recorded):
    run_dir, settings = recorded
    run = load_run(run_dir)
    for kind in ("last_loss_grad_norm", "per_step_grad_norm", "position_accuracy"):
        frame = run.profile_frame(kind)
        assert frame.index.name == "step" and frame.columns.name == "position"
        np.testing.assert_array_equal(frame.index, run.diagnostics["record_step"])
        np.testing.assert_array_equal(frame.columns, np.arange(1, settings.seq_len + 1))
        np.testing.assert_array_equal(frame.to_numpy(), run.diagnostics[kind])
    with pytest.raises(ValueError, match="kind"):
        run.profile_frame("nonsense")


def test_jacobian_frame(recorded):
    run_dir, _ = recorded
    run = load_run(run_dir)
    frame = run.jacobian_frame()
    assert list(frame.columns) == ["step", "lag", "step_norm", "product_norm", "product_radius"]
    at_80 = frame[frame["step"] == 80]
    np.testing.assert_array_equal(at_80["lag"], np.arange(1, 6))
    np.testing.assert_array_equal(
        at_80["product_norm"], run.diagnostics["jacobian_product_norm"][2]
    )
    np.testing.assert_array_equal(at_80["step_norm"], run.diagnostics["jacobian_step_norm"][2])
    np.testing.assert_array_equal(
        at_80["product_radius"], run.diagnostics["jacobian_product_radius"][2]
    )
    # lag 1: the product is the one-step Jacobian itself
    np.testing.assert_allclose(at_80["product_norm"].iloc[0], at_80["step_norm"].iloc[0])


def test_samples_frame(recorded):
    run = load_run(recorded[0])
    samples = run.samples_frame()
    assert samples["step"].tolist() == [60, 120]
    assert all(len(t) == SHORT["sample_length"] for t in samples["text"])


def test_run_without_diagnostics(unrecorded):
    run = load_run(unrecorded)
    assert run.diagnostics == {}
    assert "saturation" not in run.history.columns
    assert run.eigenvalues_frame().empty
    assert run.profile_frame().empty
    assert run.jacobian_frame().empty
    assert run.samples_frame().empty
    assert run.params().W_hh.shape == (SHORT["hidden_size"], SHORT["hidden_size"])


def test_package_level_load_run(recorded):
    run = rnn_lab.load_run(recorded[0])
    assert run.summary == load_run(recorded[0]).summary


def test_not_a_run_directory(tmp_path):
    with pytest.raises(RunDirError, match="not a directory"):
        load_run(tmp_path / "missing")
    with pytest.raises(RunDirError, match="not a run directory"):
        load_run(tmp_path)


def test_params_without_checkpoint(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps({"status": "failed"}))
    run = load_run(tmp_path)
    assert run.history.empty and run.vocab == []
    with pytest.raises(RunDirError, match="checkpoint"):
        run.params()
    assert run.checkpoint_step() is None
