"""The gradient-flow diagnostics against torch autograd, and the behaviour they must show.

per_step_grad_norm is ||dL/dh_t|| (the chunk loss), last_loss_grad_norm is ||dL_T/dh_t||
(the last step's loss alone), and jacobian_products gives norms and spectral radii of
dh_T/dh_{T-k}. Each is checked against torch computing the same quantity another way
(retain_grad, autograd.grad, autograd.functional.jacobian) on the same weights and chunk.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rnn_lab.core import engine
from rnn_lab.core.data import CharTextTask, generate_elman_corpus
from rnn_lab.core.inits import init_params
from rnn_lab.core.losses import softmax_cross_entropy

V, H, T = 7, 6, 8
TORCH_ACT = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid}
TOL = 1e-10


def make_case(activation: str, B: int, init: str = "xavier", seed: int = 0):
    rng = np.random.default_rng([seed, B])
    params = init_params(V, H, V, init=init, seed=seed)
    params.b_h[:] = rng.normal(0.0, 0.3, H)
    inputs = rng.integers(0, V, size=(T, B))
    targets = rng.integers(0, V, size=(T, B))
    h0 = np.abs(rng.normal(0.0, 0.5, size=(B, H)))
    return params, inputs, targets, h0


def torch_hidden_states(params, inputs, h0, activation, w=None):
    """h_1..h_T from autograd-tracked weights; each h_t keeps its own .grad."""
    w = w or {n: torch.tensor(a, requires_grad=True) for n, a in params.arrays().items()}
    x = F.one_hot(torch.as_tensor(inputs), num_classes=V).to(torch.float64)
    h = torch.tensor(h0)
    hs = []
    for t in range(inputs.shape[0]):
        h = TORCH_ACT[activation](x[t] @ w["W_xh"].T + h @ w["W_hh"].T + w["b_h"])
        h.retain_grad()
        hs.append(h)
    return w, hs


def step_losses(w, hs, targets):
    """Cross-entropy at each step, averaged over the B streams (the engine's scaling)."""
    y = torch.as_tensor(targets)
    return [F.cross_entropy(h @ w["W_hy"].T + w["b_y"], y[t]) for t, h in enumerate(hs)]


def engine_profile(params, inputs, targets, h0, activation):
    cache = engine.forward(params, inputs, h0, activation)
    _, dlogits, _ = softmax_cross_entropy(cache.logits, targets)
    grads = engine.backward(params, cache, dlogits, activation, profile=True)
    return cache, grads


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid"])
def test_per_step_grad_norm_is_the_norm_of_dL_dh_t(activation, B):
    params, inputs, targets, h0 = make_case(activation, B)
    _, grads = engine_profile(params, inputs, targets, h0, activation)
    w, hs = torch_hidden_states(params, inputs, h0, activation)
    sum(step_losses(w, hs, targets)).backward()
    expected = np.array([float(h.grad.norm()) for h in hs])  # norm over (B, H) together
    assert grads.per_step_grad_norm.shape == (T,)
    np.testing.assert_allclose(grads.per_step_grad_norm, expected, rtol=TOL)


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid"])
def test_last_loss_grad_norm_is_the_norm_of_dL_T_dh_t(activation, B):
    params, inputs, targets, h0 = make_case(activation, B)
    _, grads = engine_profile(params, inputs, targets, h0, activation)
    w, hs = torch_hidden_states(params, inputs, h0, activation)
    last = step_losses(w, hs, targets)[-1]
    per_h = torch.autograd.grad(last, hs)
    expected = np.array([float(g.norm()) for g in per_h])
    assert grads.last_loss_grad_norm.shape == (T,)
    np.testing.assert_allclose(grads.last_loss_grad_norm, expected, rtol=TOL)
    # It differs from the chunk-loss profile: the other steps' losses are left out.
    assert not np.allclose(grads.last_loss_grad_norm[:-1], grads.per_step_grad_norm[:-1])


def test_profile_off_leaves_the_extras_out_and_changes_nothing_else():
    params, inputs, targets, h0 = make_case("tanh", 3)
    cache = engine.forward(params, inputs, h0, "tanh")
    _, dlogits, _ = softmax_cross_entropy(cache.logits, targets)
    plain = engine.backward(params, cache, dlogits, "tanh", clip=1.0)
    profiled = engine.backward(params, cache, dlogits, "tanh", clip=1.0, profile=True)
    assert plain.last_loss_grad_norm is None and plain.param_grad_norms is None
    np.testing.assert_array_equal(plain.flat, profiled.flat)
    np.testing.assert_array_equal(plain.per_step_grad_norm, profiled.per_step_grad_norm)
    # Per-parameter norms are taken before clipping, like the total.
    assert profiled.clipped
    norms = profiled.param_grad_norms
    assert np.sqrt(sum(v**2 for v in norms.values())) == pytest.approx(profiled.total_norm)


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid"])
def test_jacobian_products_match_torch_jacobian(activation, B):
    params, inputs, targets, h0 = make_case(activation, B, init="orthogonal")
    cache = engine.forward(params, inputs, h0, activation)
    lags = 5
    jac = engine.jacobian_products(params, cache.hs, activation, lags)
    f = TORCH_ACT[activation]
    W_hh = torch.tensor(params.W_hh)
    xw = torch.tensor(params.W_xh.T[inputs[:, 0]] + params.b_h)  # (T, H) stream 0
    hs = torch.tensor(cache.hs[:, 0])  # (T+1, H) h_0 .. h_T of stream 0

    def run(h_start, first, last):
        """h_last from h_{first-1} = h_start, through steps first..last (1-based)."""
        h = h_start
        for t in range(first, last + 1):
            h = f(xw[t - 1] + W_hh @ h)
        return h

    for k in range(1, lags + 1):
        # dh_T/dh_{T-k}: the product of the last k one-step Jacobians; and the one step
        # that joins the product at lag k, dh_{T-k+1}/dh_{T-k}.
        first = T - k + 1
        product = torch.autograd.functional.jacobian(partial(run, first=first, last=T), hs[T - k])
        step = torch.autograd.functional.jacobian(partial(run, first=first, last=first), hs[T - k])
        norm = float(torch.linalg.matrix_norm(product, ord=2))
        radius = float(torch.linalg.eigvals(product).abs().max())
        step_norm = float(torch.linalg.matrix_norm(step, ord=2))
        assert jac["jacobian_product_norm"][k - 1] == pytest.approx(norm, rel=1e-9)
        assert jac["jacobian_product_radius"][k - 1] == pytest.approx(radius, rel=1e-9)
        assert jac["jacobian_step_norm"][k - 1] == pytest.approx(step_norm, rel=1e-9)


def test_jacobian_lags_are_capped_at_the_chunk_length():
    params, inputs, _, h0 = make_case("tanh", 1)
    cache = engine.forward(params, inputs, h0, "tanh")
    jac = engine.jacobian_products(params, cache.hs, "tanh", lags=3 * T)
    assert all(v.shape == (T,) for v in jac.values())


# --------------------------------------------------------------------------------------
# Known behaviour: vanishing gradients under N(0, 0.01), none under orthogonal
# --------------------------------------------------------------------------------------


def fresh_profile(init: str, input_scale: float = 1.0) -> np.ndarray:
    """||dL_T/dh_t|| over a 25-step chunk of the Elman corpus for a fresh H=64 network."""
    task = CharTextTask(generate_elman_corpus(100), seq_len=25)
    batch = task.next_batch()
    V_ = task.vocab.size
    params = init_params(V_, 64, V_, init=init, seed=42)
    params.W_xh *= input_scale
    h0 = np.zeros((1, 64))
    cache = engine.forward(params, batch.inputs, h0, "tanh")
    _, dlogits, _ = softmax_cross_entropy(cache.logits, batch.targets)
    grads = engine.backward(params, cache, dlogits, "tanh", profile=True)
    return grads.last_loss_grad_norm


def test_random_init_gradient_vanishes_across_a_chunk():
    profile = fresh_profile("random")
    assert profile.shape == (25,)
    assert profile[0] / profile[-1] < 1e-6  # orders of magnitude lost over 24 steps
    assert np.all(np.diff(profile) > 0)  # shrinking monotonically going back in time


def test_orthogonal_init_with_small_inputs_keeps_the_gradient():
    profile = fresh_profile("orthogonal", input_scale=0.01)
    # tanh' ~ 1 near 0 and an orthogonal W_hh preserves norms: nothing vanishes.
    assert 0.1 < profile[0] / profile[-1] < 10.0
    assert profile.min() / profile.max() > 0.1
