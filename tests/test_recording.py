"""What the trainer records equals what the engine computes for the same weights and chunk."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rnn_lab.core import engine
from rnn_lab.core.losses import softmax_cross_entropy
from rnn_lab.run.lifecycle import build_params, build_task
from rnn_lab.run.schedule import is_record_step
from rnn_lab.run.trainer import train


def test_recorded_step_one_equals_direct_bptt(tmp_path, tiny_settings):
    """Step 1 is recorded with the initial weights on the first chunk from h = 0: recompute
    both from scratch and compare every recorded quantity."""
    s = tiny_settings(steps=1, jacobian_interval=1, jacobian_lags=5, record_weights=True)
    train(s, tmp_path)
    task = build_task(s)
    params = engine.pack(build_params(s, task))
    batch = task.next_batch()
    h0 = np.zeros((1, s.hidden_size))
    cache = engine.forward(params, batch.inputs, h0, s.activation)
    _, dlogits, _ = softmax_cross_entropy(cache.logits, batch.targets)
    grads = engine.backward(params, cache, dlogits, s.activation, clip=s.clip, profile=True)

    with np.load(tmp_path / "diagnostics.npz") as d:
        assert list(d["record_step"]) == [1]
        np.testing.assert_array_equal(d["per_step_grad_norm"][0], grads.per_step_grad_norm)
        np.testing.assert_array_equal(d["last_loss_grad_norm"][0], grads.last_loss_grad_norm)
        np.testing.assert_allclose(
            np.sort_complex(d["eigenvalues"][0]), np.sort_complex(np.linalg.eigvals(params.W_hh))
        )
        jac = engine.jacobian_products(params, cache.hs, s.activation, 5)
        for key, values in jac.items():
            np.testing.assert_array_equal(d[key][0], values, err_msg=key)
        np.testing.assert_array_equal(d["W_hh_snapshots"][0], params.W_hh)
        accuracy = (cache.logits.argmax(-1) == batch.targets).mean(axis=1)
        np.testing.assert_array_equal(d["position_accuracy"][0], accuracy)

    row = pd.read_csv(tmp_path / "history.csv").iloc[0]
    assert row["step"] == 1
    assert row["grad_norm"] == pytest.approx(grads.total_norm, rel=1e-15)
    assert bool(row["clipped"]) == grads.clipped
    assert row["spectral_radius"] == pytest.approx(engine.spectral_radius(params.W_hh))
    assert row["sigma_max"] == pytest.approx(np.linalg.norm(params.W_hh, 2))
    for name, norm in grads.param_grad_norms.items():
        assert row[f"grad_norm_{name}"] == pytest.approx(norm, rel=1e-15)
    h = cache.hs[1:]
    assert row["saturation"] == pytest.approx(np.mean((h + 1 < 0.05) | (1 - h < 0.05)))


def test_recording_schedule_dense_then_sparse(tmp_path, tiny_settings):
    s = tiny_settings(
        steps=95, record_dense_interval=5, record_dense_until=30, record_interval=20, val_interval=0
    )
    # Every 5 steps up to 30, then every 20, plus the first and the last step.
    expected = [1, 5, 10, 15, 20, 25, 30, 40, 60, 80, 95]
    assert [t for t in range(1, 96) if is_record_step(t, s)] == expected
    train(s, tmp_path)
    assert list(pd.read_csv(tmp_path / "history.csv")["step"]) == expected
    with np.load(tmp_path / "diagnostics.npz") as d:
        assert list(d["record_step"]) == expected


def test_record_false_writes_no_diagnostics(tmp_path, tiny_settings):
    train(tiny_settings(record=False), tmp_path)
    assert not (tmp_path / "diagnostics.npz").exists()
    history = pd.read_csv(tmp_path / "history.csv")
    assert "spectral_radius" in history and "sigma_max" not in history


@pytest.mark.parametrize("freeze_whh", [False, True])
def test_recorded_spectrum_is_the_recorded_weights_own(tmp_path, tiny_settings, freeze_whh):
    """Every record step's eigenvalues, spectral radius and sigma_max are those of the W_hh
    snapshot taken at that step. A frozen W_hh's spectrum is computed once and reused (the
    memo holds only while the weight is bit-for-bit the same); a trained one's at every
    record step."""
    from rnn_lab.run import step as step_module

    calls = []
    original = step_module.recurrent_spectrum

    def counting(params):
        calls.append(1)
        return original(params)

    s = tiny_settings(
        steps=60,
        record_dense_interval=5,
        record_dense_until=20,
        record_interval=20,
        val_interval=0,
        jacobian_interval=20,
        record_weights=True,
        freeze_whh=freeze_whh,
    )
    step_module.recurrent_spectrum = counting
    try:
        train(s, tmp_path)
    finally:
        step_module.recurrent_spectrum = original
    history = pd.read_csv(tmp_path / "history.csv").set_index("step")
    with np.load(tmp_path / "diagnostics.npz") as d:
        steps, snapshots, eigenvalues = d["record_step"], d["W_hh_snapshots"], d["eigenvalues"]
        jacobian_sigma = dict(zip(d["jacobian_step"], d["jacobian_sigma_max"]))
    assert list(steps) == [1, 5, 10, 15, 20, 40, 60]
    for step, W, ev in zip(steps, snapshots, eigenvalues):
        np.testing.assert_array_equal(ev, np.linalg.eigvals(W).astype(np.complex128))
        assert history.loc[step, "spectral_radius"] == np.max(np.abs(np.linalg.eigvals(W)))
        assert history.loc[step, "sigma_max"] == float(np.linalg.norm(W, 2))
        if step in jacobian_sigma:
            assert jacobian_sigma[step] == float(np.linalg.norm(W, 2))
    distinct = {W.tobytes() for W in snapshots}
    if freeze_whh:
        assert len(distinct) == 1 and len(calls) == 1
    else:
        assert len(distinct) == len(steps) and len(calls) == len(steps)
