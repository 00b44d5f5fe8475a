"""The optimisers step for step against torch.optim, and a frozen W_hh that never moves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rnn_lab.core.inits import init_params
from rnn_lab.core.optim import SGD, Adagrad, Adam, make_optimizer, step_decay_lr
from rnn_lab.run.lifecycle import build_task
from rnn_lab.run.settings import TrainSettings
from rnn_lab.run.trainer import train

N_STEPS = 20
SHAPES = {"W": (4, 3), "b": (3,)}


def run_both(ours, make_torch, lrs, seed=0):
    """Apply the same random gradient sequence to our optimizer and torch's; compare every step.

    lrs: one learning rate per step (torch's group lr is set before each step, as a scheduler
    would).
    """
    rng = np.random.default_rng(seed)
    params = {n: rng.normal(size=s) for n, s in SHAPES.items()}
    initial = {n: p.copy() for n, p in params.items()}
    tparams = {n: torch.tensor(p.copy(), requires_grad=True) for n, p in params.items()}
    topt = make_torch(list(tparams.values()))
    for lr in lrs:
        grads = {n: rng.normal(size=s) * rng.uniform(0.1, 3.0) for n, s in SHAPES.items()}
        ours.step(params, grads, lr)
        for group in topt.param_groups:
            group["lr"] = lr
        for n, t in tparams.items():
            t.grad = torch.tensor(grads[n])
        topt.step()
        for n, t in tparams.items():
            np.testing.assert_allclose(params[n], t.detach().numpy(), rtol=1e-12, atol=1e-12)
    # The parameters really moved (a no-op optimizer would match a no-op reference).
    assert all(np.abs(params[n] - initial[n]).max() > 1e-3 for n in params)


CONSTANT_LR = [0.05] * N_STEPS
DECAYING_LR = [0.05 * 0.9 ** (i // 5) for i in range(N_STEPS)]


SGD_SETTINGS = {
    "plain": dict(momentum=0.0),
    "momentum": dict(momentum=0.9),
    "dampened": dict(momentum=0.9, dampening=0.9),  # the Hydra default: a moving average
    "nesterov": dict(momentum=0.9, nesterov=True),
}


@pytest.mark.parametrize("lrs", [CONSTANT_LR, DECAYING_LR], ids=["constant_lr", "decaying_lr"])
@pytest.mark.parametrize("settings", SGD_SETTINGS.values(), ids=list(SGD_SETTINGS))
def test_sgd_matches_torch(settings, lrs):
    run_both(SGD(**settings), lambda ps: torch.optim.SGD(ps, lr=lrs[0], **settings), lrs)


@pytest.mark.parametrize("lrs", [CONSTANT_LR, DECAYING_LR], ids=["constant_lr", "decaying_lr"])
@pytest.mark.parametrize("initial", [0.0, 0.1])
def test_adagrad_matches_torch(initial, lrs):
    run_both(
        Adagrad(eps=1e-10, initial_accumulator_value=initial),
        lambda ps: torch.optim.Adagrad(ps, lr=lrs[0], eps=1e-10, initial_accumulator_value=initial),
        lrs,
    )


@pytest.mark.parametrize("lrs", [CONSTANT_LR, DECAYING_LR], ids=["constant_lr", "decaying_lr"])
@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.5, 0.9)])
def test_adam_matches_torch(betas, lrs):
    run_both(
        Adam(beta1=betas[0], beta2=betas[1], eps=1e-8),
        lambda ps: torch.optim.Adam(ps, lr=lrs[0], betas=betas, eps=1e-8),
        lrs,
    )


def test_reference_comparison_can_fail():
    """A mismatch (Adam against torch's AdamW, which also decays weights) is caught."""
    with pytest.raises(AssertionError):
        run_both(
            Adam(),
            lambda ps: torch.optim.AdamW(ps, lr=0.05, weight_decay=0.1),
            CONSTANT_LR,
        )


def test_heavy_ball_sgd_is_the_seeds_velocity_update_at_constant_lr():
    """With dampening 0, torch's buf = mu buf + g; p -= lr buf  equals the walkthrough's code
    (_apply_update): v = mu v - lr g; p += v."""
    rng = np.random.default_rng(3)
    p = {"w": rng.normal(size=5)}
    seed_p, v = p["w"].copy(), np.zeros(5)
    opt = SGD(momentum=0.9)
    for _ in range(N_STEPS):
        g = rng.normal(size=5)
        opt.step(p, {"w": g}, 0.01)
        v = 0.9 * v - 0.01 * g
        seed_p += v
    np.testing.assert_allclose(p["w"], seed_p, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["sgd", "adagrad", "adam"])
def test_frozen_names_are_untouched_and_get_no_state(name):
    rng = np.random.default_rng(4)
    params = {n: rng.normal(size=s) for n, s in SHAPES.items()}
    before = {n: p.copy() for n, p in params.items()}
    opt = make_optimizer(name)
    for _ in range(5):
        grads = {n: rng.normal(size=s) for n, s in SHAPES.items()}
        opt.step(params, grads, 0.1, frozen=frozenset({"W"}))
    np.testing.assert_array_equal(params["W"], before["W"])
    assert not np.array_equal(params["b"], before["b"])
    assert not any(k.startswith("W.") for k in opt.state)


def test_unknown_optimizer_name_is_rejected():
    with pytest.raises(ValueError, match="optim.name"):
        make_optimizer("rmsprop")


def test_step_decay_lr():
    assert step_decay_lr(1, 0.1, 0.5, 10) == 0.1
    assert step_decay_lr(10, 0.1, 0.5, 10) == 0.1
    assert step_decay_lr(11, 0.1, 0.5, 10) == pytest.approx(0.05)
    assert step_decay_lr(25, 0.1, 0.5, 10) == pytest.approx(0.025)
    assert step_decay_lr(10_000, 0.1, 1.0, 10) == 0.1  # rate 1: constant
    assert step_decay_lr(10_000, 0.1, 0.5, 0) == 0.1  # decay_every 0: constant


# --------------------------------------------------------------------------------------
# Freezing W_hh through the real trainer
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "optim",
    [
        {"name": "sgd", "momentum": 0.9},
        {"name": "sgd", "momentum": 0.9, "dampening": 0.9},
        {"name": "adam"},
    ],
    ids=["sgd_momentum", "sgd_moving_average", "adam"],
)
def test_frozen_w_hh_is_bit_identical_after_training(tmp_path, optim):
    settings = TrainSettings(
        steps=300,
        hidden_size=16,
        seq_len=10,
        lr=0.01,
        seed=7,
        freeze_whh=True,
        optim=optim,
        data={"name": "elman", "seed": 42, "num_sentences": 80},
        val_interval=0,
        checkpoint_interval=0,
        log_interval=0,
        sample_interval=0,
        jacobian_interval=100,
        analyze=False,
    )
    summary = train(settings, tmp_path)
    assert summary["status"] == "ok"
    task = build_task(settings)
    initial = init_params(
        task.input_size, 16, task.output_size, init="orthogonal", seed=7, dtype=np.float64
    )
    with np.load(tmp_path / "checkpoint.npz") as ckpt:
        assert int(ckpt["step"]) == 300
        assert ckpt["W_hh"].tobytes() == initial.W_hh.tobytes()  # bit for bit
        for name in ("W_xh", "W_hy", "b_h", "b_y"):
            assert np.abs(ckpt[name] - getattr(initial, name)).max() > 1e-3, name
        # The optimizer never kept state for W_hh either (its tail of the flat buffer is
        # excluded, so moment/momentum buffers are shorter than the full parameter vector).
        n_all = sum(a.size for a in initial.arrays().values())
        for key in ckpt.files:
            if key.startswith("optim.") and ckpt[key].ndim == 1:
                assert ckpt[key].size == n_all - 16 * 16, key
