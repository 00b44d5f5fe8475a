"""The hand-written GRU and LSTM (rnn_lab.core.gated) against torch and finite differences.

The torch references are torch.nn.GRU / torch.nn.LSTM (and nn.GRUCell / nn.LSTMCell for the
per-step quantities) with nn.Linear on top, in float64, holding the same weights: torch's
own implementation of the gate equations, not a re-derivation. Every cell x init x
freeze_whh, for B = 1 and B = 3, with a non-zero carried state and non-zero biases. Sizes are
tiny (V = 7, H = 5, T = 6) so the whole file runs in seconds.
"""

from __future__ import annotations

import itertools
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rnn_lab.core import cells, gated, gated_backward, gated_forward, inits
from rnn_lab.core.losses import softmax_cross_entropy, squared_error

V, H, T, D = 7, 5, 6, 4  # vocabulary, hidden units, chunk length, embedding width
CELLS = ("gru", "lstm")
FD_EPS = 1e-5
FD_TOL = 1e-6  # relative error, centred differences in float64
AUTOGRAD_TOL = 1e-9  # relative error, the same float64 computation done another way
FORWARD_TOL = 1e-12
TORCH_NAMES = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")


GATED_INITS = ("orthogonal", "xavier", "random", "identity", "torch")


def init_gated(cell: str, *sizes, **options):
    """inits.init_params for a gated cell, the cell first (as these tests read best)."""
    return inits.init_params(*sizes, cell=cell, **options)


def rel_err(a, b) -> float:
    """||a - b|| / max(||a||, ||b||); 0 when both are exactly zero."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(np.linalg.norm(a), np.linalg.norm(b))
    return float(np.linalg.norm(a - b) / scale) if scale > 0 else 0.0


def n_state(cell: str) -> int:
    return 2 if cell == "lstm" else 1


def make_case(cell: str, init: str, B: int, use_embedding: bool = False, seed: int = 0):
    """Parameters with non-zero biases, a chunk (inputs, targets) and a carried state."""
    rng = np.random.default_rng([seed, B, int(use_embedding), len(cell)])
    params = init_gated(cell, V, H, V, init=init, seed=seed, embed_dim=D if use_embedding else 0)
    params.bias_ih_l0[:] = rng.normal(0.0, 0.3, params.bias_ih_l0.shape)
    params.bias_hh_l0[:] = rng.normal(0.0, 0.3, params.bias_hh_l0.shape)
    params.b_y[:] = rng.normal(0.0, 0.3, V)
    inputs = rng.integers(0, V, size=(T, B))
    targets = rng.integers(0, V, size=(T, B))
    state = tuple(rng.normal(0.0, 0.5, size=(B, H)) for _ in range(n_state(cell)))
    return params, inputs, targets, state


def loss_and_grads(params, inputs, targets, state, **kw):
    cache = gated.forward(params, inputs, state)
    loss, dlogits, _ = softmax_cross_entropy(cache.logits, targets)
    return loss, gated.backward(params, cache, dlogits, **kw), cache


def chunk_loss(params, inputs, targets, state) -> float:
    return softmax_cross_entropy(gated.forward(params, inputs, state).logits, targets)[0]


def torch_modules(params, requires_grad=True):
    """torch.nn.GRU/LSTM + nn.Linear in float64 holding the same weights (and E as a tensor)."""
    cls = torch.nn.GRU if params.cell == "gru" else torch.nn.LSTM
    rnn = cls(params.weight_ih_l0.shape[1], params.hidden_size).double()
    head = torch.nn.Linear(params.hidden_size, params.W_hy.shape[0]).double()
    with torch.no_grad():
        for n in TORCH_NAMES:
            getattr(rnn, n).copy_(torch.from_numpy(getattr(params, n)))
        head.weight.copy_(torch.from_numpy(params.W_hy))
        head.bias.copy_(torch.from_numpy(params.b_y))
    E = None if params.E is None else torch.tensor(params.E, requires_grad=requires_grad)
    return rnn, head, E


def torch_state(cell, state):
    s = tuple(torch.tensor(a)[None] for a in state)  # (1, B, H): (num_layers, B, H)
    return s if cell == "lstm" else s[0]


def torch_inputs(inputs, E):
    x = F.one_hot(torch.as_tensor(inputs), num_classes=V).double()  # (T, B, V)
    return x if E is None else x @ E.T


def torch_reference(params, inputs, targets, state):
    """Loss, gradients by our names, logits and final state of the same network, autograd."""
    rnn, head, E = torch_modules(params)
    out, last = rnn(torch_inputs(inputs, E), torch_state(params.cell, state))
    logits = head(out)  # (T, B, O)
    y = torch.as_tensor(targets)
    loss = sum(F.cross_entropy(logits[t], y[t]) for t in range(inputs.shape[0]))
    loss.backward()
    grads = {n: getattr(rnn, n).grad.numpy() for n in TORCH_NAMES}
    grads["W_hy"], grads["b_y"] = head.weight.grad.numpy(), head.bias.grad.numpy()
    if E is not None:
        grads["E"] = E.grad.numpy()
    last = last if isinstance(last, tuple) else (last,)
    final = tuple(s[0].detach().numpy() for s in last)
    return float(loss.detach()), grads, logits.detach().numpy(), final


def finite_difference_grads(params, inputs, targets, state) -> dict[str, np.ndarray]:
    out = {}
    for name, array in params.arrays().items():
        g = np.zeros_like(array)
        for idx in np.ndindex(array.shape):
            saved = array[idx]
            array[idx] = saved + FD_EPS
            up = chunk_loss(params, inputs, targets, state)
            array[idx] = saved - FD_EPS
            down = chunk_loss(params, inputs, targets, state)
            array[idx] = saved
            g[idx] = (up - down) / (2 * FD_EPS)
        out[name] = g
    return out


GRID = list(itertools.product(CELLS, GATED_INITS, (False, True), (1, 3)))
GRID_IDS = [f"{c}-{i}-{'frozen' if f else 'trained'}-B{b}" for c, i, f, b in GRID]


# --------------------------------------------------------------------------------------
# Forward and gradients
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("init", GATED_INITS)
@pytest.mark.parametrize("cell", CELLS)
def test_forward_equals_torch(cell, init, B):
    params, inputs, targets, state = make_case(cell, init, B)
    cache = gated.forward(params, inputs, state)
    _, _, logits, final = torch_reference(params, inputs, targets, state)
    assert rel_err(cache.logits, logits) < FORWARD_TOL
    assert len(cache.final_state) == n_state(cell)
    for ours, ref in zip(cache.final_state, final):
        assert rel_err(ours, ref) < FORWARD_TOL
    # hs holds h_0 .. h_T: h_0 is the carried state.
    np.testing.assert_array_equal(cache.hs[0], state[0])


@pytest.mark.parametrize(("cell", "init", "freeze_whh", "B"), GRID, ids=GRID_IDS)
def test_bptt_matches_torch_autograd(cell, init, freeze_whh, B):
    params, inputs, targets, state = make_case(cell, init, B)
    loss, grads, _ = loss_and_grads(params, inputs, targets, state, freeze_whh=freeze_whh)
    ref_loss, ref_grads, _, _ = torch_reference(params, inputs, targets, state)
    assert abs(loss - ref_loss) <= AUTOGRAD_TOL * abs(ref_loss)
    assert set(grads.grads) == set(ref_grads) == set(gated.PARAM_NAMES)
    for name, g in grads.grads.items():
        if name == "weight_hh_l0" and freeze_whh:
            assert not g.any(), "frozen recurrent blocks must get a zero gradient"
            assert np.abs(ref_grads[name]).max() > 1e-8  # ... though the true one is not
            continue
        err = rel_err(g, ref_grads[name])
        assert err < AUTOGRAD_TOL, f"{name}: relative error {err:.2e} against autograd"


@pytest.mark.parametrize(("cell", "init", "freeze_whh", "B"), GRID, ids=GRID_IDS)
def test_bptt_matches_finite_differences(cell, init, freeze_whh, B):
    params, inputs, targets, state = make_case(cell, init, B)
    _, grads, _ = loss_and_grads(params, inputs, targets, state, freeze_whh=freeze_whh)
    numeric = finite_difference_grads(params, inputs, targets, state)
    assert set(grads.grads) == set(numeric)
    for name, g in grads.grads.items():
        if name == "weight_hh_l0" and freeze_whh:
            assert not g.any()
            continue
        err = rel_err(g, numeric[name])
        assert err < FD_TOL, f"{name}: relative error {err:.2e} against finite differences"


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("cell", CELLS)
def test_embedding_matches_torch_and_finite_differences(cell, B):
    params, inputs, targets, state = make_case(cell, "orthogonal", B, use_embedding=True)
    assert params.weight_ih_l0.shape[1] == D and params.E.shape == (D, V)
    loss, grads, cache = loss_and_grads(params, inputs, targets, state)
    ref_loss, ref_grads, logits, _ = torch_reference(params, inputs, targets, state)
    assert rel_err(cache.logits, logits) < FORWARD_TOL
    assert set(grads.grads) == set(ref_grads) == set(gated.PARAM_NAMES) | {"E"}
    for name, g in grads.grads.items():
        assert rel_err(g, ref_grads[name]) < AUTOGRAD_TOL, name
    numeric = finite_difference_grads(params, inputs, targets, state)
    assert rel_err(grads.grads["E"], numeric["E"]) < FD_TOL


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("cell", CELLS)
def test_real_valued_inputs_with_masked_squared_error_match_torch(cell, B):
    """The synthetic tasks' path: x_t given directly, a real-valued loss at some steps."""
    rng = np.random.default_rng(10)
    Din, O = 3, 2
    params = init_gated(cell, Din, H, O, init="xavier", seed=4)
    params.bias_ih_l0[:] = rng.normal(0.0, 0.3, params.bias_ih_l0.shape)
    inputs = rng.normal(size=(T, B, Din))
    targets = rng.normal(size=(T, B, O))
    mask = np.zeros((T, B))
    mask[-2:] = 1.0
    state = tuple(rng.normal(0.0, 0.5, size=(B, H)) for _ in range(n_state(cell)))
    cache = gated.forward(params, inputs, state)
    loss, dout, _ = squared_error(cache.logits, targets, mask)
    grads = gated.backward(params, cache, dout)

    rnn, head, _ = torch_modules(params)
    out, _ = rnn(torch.tensor(inputs), torch_state(cell, state))
    err = (head(out) - torch.tensor(targets)) ** 2 * torch.tensor(mask)[..., None]
    ref = 0.5 * err.sum() / B
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=1e-12)
    for n in TORCH_NAMES:
        assert rel_err(grads.grads[n], getattr(rnn, n).grad.numpy()) < AUTOGRAD_TOL, n
    assert rel_err(grads.grads["W_hy"], head.weight.grad.numpy()) < AUTOGRAD_TOL


@pytest.mark.parametrize("use_embedding", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_large_chunks_match_torch_and_reuse_scratch_safely(cell, use_embedding, monkeypatch):
    """T * B = 400 rows (the transposed parameter-gradient products) and every temporary in
    a reused scratch buffer: still torch's gradients, and a second forward/backward in
    between changes nothing of the first's cache or gradients."""
    monkeypatch.setattr(gated_forward, "_SCRATCH_MIN_SIZE", 1)
    rng = np.random.default_rng(5)
    Tl, Bl, Hl = 40, 10, 20
    params = init_gated(cell, V, Hl, V, init="orthogonal", embed_dim=D * use_embedding)
    params.bias_ih_l0[:] = rng.normal(0.0, 0.3, params.bias_ih_l0.shape)
    inputs, targets = rng.integers(0, V, size=(2, Tl, Bl))
    state = tuple(rng.normal(0.0, 0.5, size=(Bl, Hl)) for _ in range(n_state(cell)))
    loss, grads, cache = loss_and_grads(params, inputs, targets, state)
    first = {n: g.copy() for n, g in grads.grads.items()}
    logits = cache.logits.copy()
    assert {"xw", "gate_major", "coef", "steps"} <= set(gated_forward._scratch.buffers)
    loss_and_grads(params, inputs[::-1].copy(), targets, state)  # the same shapes, other data
    np.testing.assert_array_equal(cache.logits, logits)
    for n, g in grads.grads.items():
        np.testing.assert_array_equal(g, first[n])
    again = gated.backward(params, cache, softmax_cross_entropy(logits, targets)[1])
    np.testing.assert_array_equal(again.flat, grads.flat)  # the first cache is intact
    ref_loss, ref_grads, ref_logits, _ = torch_reference(params, inputs, targets, state)
    assert rel_err(logits, ref_logits) < FORWARD_TOL
    assert abs(loss - ref_loss) <= AUTOGRAD_TOL * abs(ref_loss)
    for n, g in first.items():
        assert rel_err(g, ref_grads[n]) < AUTOGRAD_TOL, n


@pytest.mark.parametrize("Tc", [1, 2, 3])
@pytest.mark.parametrize("cell", CELLS)
def test_short_chunks_match_torch(cell, Tc):
    """The loops' first/last-step special cases: chunks of 1, 2 and 3 steps."""
    params, inputs, targets, state = make_case(cell, "xavier", 3)
    inputs, targets = inputs[:Tc], targets[:Tc]
    loss, grads, cache = loss_and_grads(params, inputs, targets, state, profile=True)
    ref_loss, ref_grads, logits, _ = torch_reference(params, inputs, targets, state)
    assert rel_err(cache.logits, logits) < FORWARD_TOL
    for n, g in grads.grads.items():
        assert rel_err(g, ref_grads[n]) < AUTOGRAD_TOL, n
    assert grads.per_step_grad_norm.shape == grads.last_loss_grad_norm.shape == (Tc,)


def test_out_of_range_indices_are_refused():
    params, inputs, _, state = make_case("gru", "orthogonal", 1)
    inputs[2, 0] = V
    with pytest.raises(IndexError, match=r"\[0, 7\)"):
        gated.forward(params, inputs, state)


@pytest.mark.parametrize("cell", CELLS)
def test_streams_are_independent(cell):
    """B streams in one call give what each stream gives alone."""
    params, inputs, targets, state = make_case(cell, "orthogonal", 3)
    batched = gated.forward(params, inputs, state)
    for b in range(3):
        alone = gated.forward(params, inputs[:, b : b + 1], tuple(s[b : b + 1] for s in state))
        np.testing.assert_allclose(alone.logits[:, 0], batched.logits[:, b], rtol=1e-13, atol=1e-15)
        for s_alone, s_batched in zip(alone.final_state, batched.final_state):
            np.testing.assert_allclose(s_alone[0], s_batched[b], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("cell", CELLS)
def test_float32_runs_in_float32(cell):
    params, inputs, targets, state = make_case(cell, "orthogonal", 3)
    p32 = type(params)(**{n: a.astype(np.float32) for n, a in params.arrays().items()})
    s32 = tuple(s.astype(np.float32) for s in state)
    cache = gated.forward(p32, inputs, s32)
    assert cache.logits.dtype == np.float32 and cache.hs.dtype == np.float32
    _, dlogits, _ = softmax_cross_entropy(cache.logits, targets)
    g32 = gated.backward(p32, cache, dlogits)
    assert g32.flat.dtype == np.float32
    _, g64, c64 = loss_and_grads(params, inputs, targets, state)
    assert rel_err(cache.logits, c64.logits) < 1e-5
    assert rel_err(g32.flat, g64.flat) < 1e-4


# --------------------------------------------------------------------------------------
# Flat buffer, freezing, clipping
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_gradient_buffer_is_laid_out_like_packed_params(cell):
    params, inputs, targets, state = make_case(cell, "orthogonal", 3, use_embedding=True)
    packed = gated.pack(params)
    assert type(packed) is type(params)
    _, grads, _ = loss_and_grads(packed, inputs, targets, state)
    assert grads.flat.shape == packed.flat.shape
    views = gated.flat_views(grads.flat, {n: a.shape for n, a in packed.arrays().items()})
    assert list(views) == list(grads.grads)
    for name, g in grads.grads.items():
        assert np.shares_memory(g, grads.flat)
        np.testing.assert_array_equal(views[name], g)
        np.testing.assert_array_equal(getattr(packed, name), getattr(params, name))
    # All recurrent blocks are the tail: n_trainable cuts them off exactly.
    G = 3 if cell == "gru" else 4
    assert packed.n_trainable(True) == packed.flat.size - G * H * H
    tail = packed.flat[packed.n_trainable(True) :]
    np.testing.assert_array_equal(tail, params.weight_hh_l0.ravel())
    _, plain, _ = loss_and_grads(params, inputs, targets, state)
    np.testing.assert_array_equal(plain.flat, grads.flat)


@pytest.fixture(params=CELLS)
def chunk(request):
    params, inputs, targets, state = make_case(request.param, "orthogonal", 1)
    params.W_hy *= 3.0  # a gradient norm well above 1
    _, free, _ = loss_and_grads(params, inputs, targets, state)
    assert free.total_norm > 1.0
    return params, inputs, targets, state, free


def test_norm_clipping_rescales_to_exactly_the_threshold(chunk):
    params, inputs, targets, state, free = chunk
    clip = 0.25 * free.total_norm
    _, g, _ = loss_and_grads(params, inputs, targets, state, clip=clip)
    assert g.clipped and g.total_norm == free.total_norm
    assert np.linalg.norm(g.flat) == pytest.approx(clip, rel=1e-12)
    np.testing.assert_allclose(g.flat, free.flat * (clip / free.total_norm), rtol=1e-14)
    _, g, _ = loss_and_grads(params, inputs, targets, state, clip=1.01 * free.total_norm)
    assert not g.clipped and g.clip_ratio == 1.0
    np.testing.assert_array_equal(g.flat, free.flat)


def test_value_clipping_and_clip_zero(chunk):
    params, inputs, targets, state, free = chunk
    clip = 0.5 * np.abs(free.flat).max()
    _, g, _ = loss_and_grads(params, inputs, targets, state, clip=clip, clip_mode="value")
    assert g.clipped
    np.testing.assert_array_equal(g.flat, np.clip(free.flat, -clip, clip))
    assert g.clip_ratio == pytest.approx(np.linalg.norm(g.flat) / free.total_norm, rel=1e-14)
    for mode in ("norm", "value"):
        _, g, _ = loss_and_grads(params, inputs, targets, state, clip=0.0, clip_mode=mode)
        assert not g.clipped
        np.testing.assert_array_equal(g.flat, free.flat)
    with pytest.raises(ValueError, match="clip_mode"):
        loss_and_grads(params, inputs, targets, state, clip=1.0, clip_mode="sign")


def test_frozen_recurrent_blocks_are_left_out_of_the_clipping_norm(chunk):
    params, inputs, targets, state, free = chunk
    without = np.sqrt(sum(np.sum(g**2) for n, g in free.grads.items() if n != "weight_hh_l0"))
    clip = 0.5 * without
    _, g, _ = loss_and_grads(params, inputs, targets, state, freeze_whh=True, clip=clip)
    assert g.total_norm == pytest.approx(without, rel=1e-14)
    assert g.clip_ratio == pytest.approx(clip / without, rel=1e-14)
    assert not g.grads["weight_hh_l0"].any()
    for name in ("weight_ih_l0", "bias_hh_l0", "W_hy"):
        np.testing.assert_allclose(g.grads[name], free.grads[name] * g.clip_ratio, rtol=1e-14)


# --------------------------------------------------------------------------------------
# Gradient-flow diagnostics
# --------------------------------------------------------------------------------------


def torch_cell(params):
    cls = torch.nn.GRUCell if params.cell == "gru" else torch.nn.LSTMCell
    cell = cls(params.weight_ih_l0.shape[1], H).double()
    with torch.no_grad():
        for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, n).copy_(torch.from_numpy(getattr(params, n + "_l0")))
    return cell


def torch_state_grads(params, inputs, targets, state, last_only=False):
    """dL/ds_t (or dl_T/ds_t) for t = 1..T via zero perturbations added to each state after
    its step: for the LSTM the one on c_t does not reach h_t = o tanh(c_t), so its gradient
    is the partial through c_{t+1}, as the state's definition says."""
    cell = torch_cell(params)
    head = torch.nn.Linear(H, V).double()
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(params.W_hy))
        head.bias.copy_(torch.from_numpy(params.b_y))
    x = torch_inputs(inputs, None)
    s = tuple(torch.tensor(a) for a in state)
    y = torch.as_tensor(targets)
    perturbations, losses = [], []
    for t in range(inputs.shape[0]):
        out = cell(x[t], s if params.cell == "lstm" else s[0])
        out = out if isinstance(out, tuple) else (out,)
        eps = tuple(torch.zeros_like(o, requires_grad=True) for o in out)
        s = tuple(o + e for o, e in zip(out, eps))
        perturbations.append(eps)
        losses.append(F.cross_entropy(head(s[0]), y[t]))
    loss = losses[-1] if last_only else sum(losses)
    flat = [e for eps in perturbations for e in eps]
    # c_T reaches no loss: its gradient is None (zero).
    grads = torch.autograd.grad(loss, flat, allow_unused=True)
    sq = [0.0 if g is None else float((g**2).sum()) for g in grads]
    k = n_state(params.cell)
    return np.array([np.sqrt(sum(sq[t * k : (t + 1) * k])) for t in range(T)])


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("cell", CELLS)
def test_per_step_and_last_step_profiles_match_torch(cell, B):
    params, inputs, targets, state = make_case(cell, "orthogonal", B)
    _, grads, _ = loss_and_grads(params, inputs, targets, state, profile=True)
    assert grads.per_step_grad_norm.shape == (T,)
    assert grads.last_loss_grad_norm.shape == (T,)
    expected = torch_state_grads(params, inputs, targets, state)
    np.testing.assert_allclose(grads.per_step_grad_norm, expected, rtol=1e-10)
    expected_last = torch_state_grads(params, inputs, targets, state, last_only=True)
    np.testing.assert_allclose(grads.last_loss_grad_norm, expected_last, rtol=1e-10)
    assert not np.allclose(grads.last_loss_grad_norm[:-1], grads.per_step_grad_norm[:-1])


@pytest.mark.parametrize("cell", CELLS)
def test_profile_off_changes_nothing_else(cell):
    params, inputs, targets, state = make_case(cell, "xavier", 3)
    _, plain, _ = loss_and_grads(params, inputs, targets, state, clip=0.1)
    _, profiled, _ = loss_and_grads(params, inputs, targets, state, clip=0.1, profile=True)
    assert plain.last_loss_grad_norm is None and plain.param_grad_norms is None
    np.testing.assert_array_equal(plain.flat, profiled.flat)
    np.testing.assert_array_equal(plain.per_step_grad_norm, profiled.per_step_grad_norm)
    assert profiled.clipped
    norms = profiled.param_grad_norms
    assert set(norms) == set(gated.PARAM_NAMES)
    assert np.sqrt(sum(v**2 for v in norms.values())) == pytest.approx(profiled.total_norm)


def torch_steps(params, inputs, b=0):
    """run(s, first, last): the stacked state s_last from s_{first-1} = s (stream b)."""
    cell = torch_cell(params)
    x = torch_inputs(inputs, None)[:, b]  # (T, V) unbatched

    def run(s, first, last):
        for t in range(first, last + 1):
            if params.cell == "gru":
                s = cell(x[t - 1], s)
            else:
                s = torch.cat(cell(x[t - 1], (s[:H], s[H:])))
        return s

    return run


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("init", ["orthogonal", "torch"])
@pytest.mark.parametrize("cell", CELLS)
def test_jacobians_match_torch_autograd_functional_jacobian(cell, init, B):
    params, inputs, targets, state = make_case(cell, init, B)
    cache = gated.forward(params, inputs, state)
    b = B - 1
    run = torch_steps(params, inputs, b)
    states = cache.hs[:, b] if cell == "gru" else np.concatenate([cache.hs, cache.cs], -1)[:, b]
    S = states.shape[-1]
    assert S == (H if cell == "gru" else 2 * H)
    product = np.eye(S)
    for t in range(T, 0, -1):  # one step at a time, and the product ds_T/ds_{t-1}
        J = gated.step_jacobian(params, cache, t, b)
        ref = torch.autograd.functional.jacobian(
            partial(run, first=t, last=t), torch.tensor(states[t - 1])
        ).numpy()
        assert J.shape == (S, S)
        assert rel_err(J, ref) < 1e-12, f"step {t}"
        product = product @ J
        ref_product = torch.autograd.functional.jacobian(
            partial(run, first=t, last=T), torch.tensor(states[t - 1])
        ).numpy()
        assert rel_err(product, ref_product) < 1e-11, f"product from step {t}"

    lags = 4
    jac = gated.jacobian_products(params, cache, lags, b)
    for k in range(1, lags + 1):
        ref_product = torch.autograd.functional.jacobian(
            partial(run, first=T - k + 1, last=T), torch.tensor(states[T - k])
        )
        ref_step = torch.autograd.functional.jacobian(
            partial(run, first=T - k + 1, last=T - k + 1), torch.tensor(states[T - k])
        )
        norm = float(torch.linalg.matrix_norm(ref_product, ord=2))
        radius = float(torch.linalg.eigvals(ref_product).abs().max())
        assert jac["jacobian_product_norm"][k - 1] == pytest.approx(norm, rel=1e-9)
        assert jac["jacobian_product_radius"][k - 1] == pytest.approx(radius, rel=1e-9)
        step_norm = float(torch.linalg.matrix_norm(ref_step, ord=2))
        assert jac["jacobian_step_norm"][k - 1] == pytest.approx(step_norm, rel=1e-9)
    capped = gated.jacobian_products(params, cache, 3 * T)
    assert all(v.shape == (T,) for v in capped.values())


def torch_gates(params, inputs, cache):
    """Every gate's (T, B, H) values recomputed with torch ops from the cached h (and c)."""
    W_ih, W_hh = torch.tensor(params.weight_ih_l0), torch.tensor(params.weight_hh_l0)
    b_ih, b_hh = torch.tensor(params.bias_ih_l0), torch.tensor(params.bias_hh_l0)
    x = torch_inputs(inputs, None)
    h = torch.tensor(cache.hs[:-1])
    gi, gh = x @ W_ih.T + b_ih, h @ W_hh.T + b_hh
    blocks = lambda a: a.split(H, dim=-1)  # noqa: E731
    if params.cell == "gru":
        (ir, iz, in_), (hr, hz, hn) = blocks(gi), blocks(gh)
        r = torch.sigmoid(ir + hr)
        return {"r": r, "z": torch.sigmoid(iz + hz), "n": torch.tanh(in_ + r * hn)}
    a = blocks(gi + gh)
    return {
        "i": torch.sigmoid(a[0]),
        "f": torch.sigmoid(a[1]),
        "g": torch.tanh(a[2]),
        "o": torch.sigmoid(a[3]),
    }


@pytest.mark.parametrize("cell", CELLS)
def test_gate_saturation(cell):
    params, inputs, targets, state = make_case(cell, "orthogonal", 3)
    params.weight_ih_l0 *= 8.0  # strong inputs: some gates saturate
    cache = gated.forward(params, inputs, state)
    ref = torch_gates(params, inputs, cache)
    sat = gated.gate_saturation(cache)
    assert list(sat) == list(params.gate_names)
    for name, values in ref.items():
        v = values.numpy()
        np.testing.assert_allclose(cache.gate(name), v, rtol=1e-12, atol=1e-15)
        low = -1.0 if name in ("n", "g") else 0.0
        expected = float(np.mean((v - low < 0.05) | (1.0 - v < 0.05)))
        assert sat[name] == pytest.approx(expected)
    memory = "z" if cell == "gru" else "f"
    assert gated.saturation(cache) == sat[memory]
    assert 0.0 < gated.saturation(cache) < 1.0
    with pytest.raises(ValueError, match="gates"):
        cache.gate("x")


def test_saturation_extremes():
    """A forget bias of 10 shuts nothing: every forget gate sits at 1; tiny weights leave
    every gate near 0.5: nothing saturated."""
    params, inputs, _, state = make_case("lstm", "random", 3)
    params.bias_ih_l0[H : 2 * H] = 10.0
    assert gated.saturation(gated.forward(params, inputs, state)) == 1.0
    quiet = init_gated("gru", V, H, V, init="random", seed=1)
    quiet.weight_ih_l0 *= 0.01
    assert gated.saturation(gated.forward(quiet, inputs, gated.zero_state("gru", 3, H))) == 0.0


@pytest.mark.parametrize("cell", CELLS)
def test_spectral_radii_of_each_recurrent_block(cell):
    params = init_gated(cell, V, H, V, init="xavier", seed=3)
    radii = cells.spectral_radii(params)
    assert list(radii) == list(params.gate_names)
    for k, name in enumerate(params.gate_names):
        block = params.weight_hh_l0[k * H : (k + 1) * H]
        assert radii[name] == pytest.approx(np.abs(np.linalg.eigvals(block)).max(), rel=1e-12)
    ortho = cells.spectral_radii(init_gated(cell, V, H, V, init="orthogonal", scale=1.3))
    assert all(r == pytest.approx(1.3, rel=1e-6) for r in ortho.values())


# --------------------------------------------------------------------------------------
# Initialisation, names, torch interop
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("cell", CELLS)
def test_torch_init_is_a_seeded_torch_module(cell):
    params = init_gated(cell, V, H, 3, init="torch", seed=11)
    torch.manual_seed(11)
    rnn = (torch.nn.GRU if cell == "gru" else torch.nn.LSTM)(V, H)
    head = torch.nn.Linear(H, 3)
    for n in TORCH_NAMES:
        np.testing.assert_array_equal(getattr(params, n), getattr(rnn, n).detach().numpy())
    np.testing.assert_array_equal(params.W_hy, head.weight.detach().numpy())
    np.testing.assert_array_equal(params.b_y, head.bias.detach().numpy())
    assert params.dtype == np.float64


@pytest.mark.parametrize("cell", CELLS)
def test_block_inits_act_on_each_gate(cell):
    G = 3 if cell == "gru" else 4
    for init, check in (
        (
            "orthogonal",
            lambda W: np.testing.assert_allclose(W @ W.T, 2.0**2 * np.eye(H), atol=1e-5),
        ),
        ("identity", lambda W: np.testing.assert_array_equal(W, 2.0 * np.eye(H))),
        ("random", lambda W: np.testing.assert_array_less(np.abs(W), 2.0 * 0.06)),
        ("xavier", lambda W: np.testing.assert_array_less(np.abs(W), 2.0 * np.sqrt(3.0 / H))),
    ):
        params = init_gated(cell, V, H, V, init=init, scale=2.0, seed=5)
        blocks = params.recurrent_blocks()
        assert len(blocks) == G and params.weight_hh_l0.shape == (G * H, H)
        for W in blocks.values():
            assert W.shape == (H, H)
            check(W)
        if init != "identity":  # each block is its own draw
            assert not np.array_equal(blocks[params.gate_names[0]], blocks[params.gate_names[1]])
        assert not params.bias_ih_l0.any() and not params.bias_hh_l0.any()
        assert params.weight_ih_l0.shape == (G * H, V)


def test_init_is_seeded_and_leaves_the_torch_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = init_gated("lstm", V, H, V, init="orthogonal", seed=7)
    assert torch.equal(torch.rand(3), expected_next)
    b = init_gated("lstm", V, H, V, init="orthogonal", seed=7)
    c = init_gated("lstm", V, H, V, init="orthogonal", seed=8)
    for n in gated.PARAM_NAMES:
        np.testing.assert_array_equal(getattr(a, n), getattr(b, n))
    assert not np.array_equal(a.weight_hh_l0, c.weight_hh_l0)
    e = init_gated("lstm", V, H, V, init="orthogonal", seed=7, embed_dim=D)
    assert e.E.shape == (D, V) and e.weight_ih_l0.shape == (4 * H, D)


def test_forget_bias():
    p = init_gated("lstm", V, H, V, forget_bias=1.0)
    np.testing.assert_array_equal(p.bias_ih_l0[H : 2 * H] + p.bias_hh_l0[H : 2 * H], 1.0)
    assert not p.bias_ih_l0[:H].any() and not p.bias_ih_l0[2 * H :].any()
    with pytest.raises(ValueError, match="forget gate"):
        init_gated("gru", V, H, V, forget_bias=1.0)


def test_unknown_names_fail_listing_the_valid_ones():
    with pytest.raises(ValueError, match="cell: unknown name 'rnn'; valid: gru, lstm"):
        gated.get_cell("rnn")
    with pytest.raises(ValueError, match="valid: orthogonal, xavier, random, identity, torch"):
        init_gated("gru", V, H, V, init="kaiming")
    with pytest.raises(ValueError, match="only activation=tanh"):
        gated.check_activation("gru", "relu")
    gated.check_activation("lstm", "tanh")
    assert set(gated.CELLS) == {"gru", "lstm"}
    assert gated.CELLS["lstm"].state_names == ("h", "c")


def test_state_shapes_are_checked():
    params, inputs, _, state = make_case("lstm", "orthogonal", 3)
    with pytest.raises(ValueError, match=r"\(h0, c0\)"):
        gated.forward(params, inputs, state[0])
    with pytest.raises(ValueError, match=r"\(B, H\)"):
        gated.forward(params, inputs, (state[0][:2], state[1]))
    gru, inputs, _, (h0,) = make_case("gru", "orthogonal", 3)
    np.testing.assert_array_equal(  # a bare h0 is accepted for the GRU
        gated.forward(gru, inputs, h0).logits, gated.forward(gru, inputs, (h0,)).logits
    )
    assert [s.shape for s in gated.zero_state("lstm", 3, H)] == [(3, H), (3, H)]


@pytest.mark.parametrize("cell", CELLS)
def test_checkpoint_round_trip_through_torch(cell, tmp_path):
    params, inputs, targets, state = make_case(cell, "torch", 3)
    rnn, head = gated.to_torch(params)
    assert set(rnn.state_dict()) == set(TORCH_NAMES)
    out, _ = rnn(torch_inputs(inputs, None), torch_state(cell, state))
    ours = gated.forward(params, inputs, state)
    assert rel_err(head(out).detach().numpy(), ours.logits) < FORWARD_TOL
    back = gated.from_torch(rnn, head)
    assert type(back) is type(params)
    for n in gated.PARAM_NAMES:
        np.testing.assert_array_equal(getattr(back, n), getattr(params, n))
    np.savez(tmp_path / "checkpoint.npz", **params.arrays(), h=state[0])
    with np.load(tmp_path / "checkpoint.npz") as z:
        loaded = type(params).from_arrays(z)
    for n in gated.PARAM_NAMES:
        np.testing.assert_array_equal(getattr(loaded, n), getattr(params, n))
    sd = {n: torch.tensor(getattr(loaded, n)) for n in TORCH_NAMES}
    (torch.nn.GRU if cell == "gru" else torch.nn.LSTM)(V, H).double().load_state_dict(sd)


# --------------------------------------------------------------------------------------
# A whole training run against a torch replica
# --------------------------------------------------------------------------------------

# lr 0.02: a run that learns without becoming chaotic (at lr 0.1 this overfitting loop
# amplifies float rounding ~10x every 20 steps, so no two implementations agree to 1e-8).
RUN_STEPS, RUN_H, RUN_L, RUN_LR, RUN_MOMENTUM, RUN_CLIP = 300, 8, 6, 0.02, 0.9, 4.0


def run_ours(params, seq, freeze_whh):
    """SGD with momentum (torch.optim.SGD's rule) on the packed flat buffer, truncated BPTT
    with the state carried across chunks and reset (to zeros) when the sequence wraps."""
    p = gated.pack(params)
    n = p.n_trainable(freeze_whh)
    zero = gated.zero_state(p.cell, 1, RUN_H)
    state, pos, buf, losses, n_clipped = zero, 0, None, [], 0
    for _ in range(RUN_STEPS):
        if pos + RUN_L + 1 > seq.size:
            pos, state = 0, zero
        x, y = seq[pos : pos + RUN_L, None], seq[pos + 1 : pos + RUN_L + 1, None]
        pos += RUN_L
        cache = gated.forward(p, x, state)
        loss, dlogits, _ = softmax_cross_entropy(cache.logits, y)
        g = gated.backward(p, cache, dlogits, freeze_whh=freeze_whh, clip=RUN_CLIP)
        d = g.flat[:n]
        buf = d.copy() if buf is None else np.add(RUN_MOMENTUM * buf, d)
        p.flat[:n] -= RUN_LR * buf
        state = tuple(s.copy() for s in cache.final_state)
        losses.append(loss)
        n_clipped += g.clipped
    return p, np.array(losses), n_clipped


def run_torch(params, seq, freeze_whh):
    rnn, head, _ = torch_modules(params)
    rnn.weight_hh_l0.requires_grad_(not freeze_whh)
    trainable = [w for w in (*rnn.parameters(), *head.parameters()) if w.requires_grad]
    opt = torch.optim.SGD(trainable, lr=RUN_LR, momentum=RUN_MOMENTUM)
    zero = torch_state(params.cell, gated.zero_state(params.cell, 1, RUN_H))
    state, pos, losses = zero, 0, []
    data = torch.as_tensor(seq)
    for _ in range(RUN_STEPS):
        if pos + RUN_L + 1 > seq.size:
            pos, state = 0, zero
        x = F.one_hot(data[pos : pos + RUN_L], V).double()[:, None]  # (L, 1, V)
        y = data[pos + 1 : pos + RUN_L + 1]
        pos += RUN_L
        out, last = rnn(x, state)
        loss = F.cross_entropy(head(out[:, 0]), y, reduction="sum")
        opt.zero_grad()
        loss.backward()
        # rnn_lab's global-norm clipping: scale by clip / norm when norm > clip (torch's
        # clip_grad_norm_ adds 1e-6 to the norm, which would differ at 1e-7).
        norm = torch.sqrt(sum((w.grad**2).sum() for w in trainable))
        if norm > RUN_CLIP:
            for w in trainable:
                w.grad.mul_(RUN_CLIP / norm)
        opt.step()
        state = tuple(s.detach() for s in last) if isinstance(last, tuple) else last.detach()
        losses.append(loss.item())
    return rnn, head, np.array(losses)


@pytest.mark.parametrize("freeze_whh", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_training_run_equals_a_torch_replica(cell, freeze_whh):
    rng = np.random.default_rng(2024)
    seq = rng.integers(0, V, size=50)  # wraps every 8 chunks: carried and reset states
    params = init_gated(cell, V, RUN_H, V, init="torch", seed=3)
    ours, losses, n_clipped = run_ours(params, seq, freeze_whh)
    rnn, head, ref_losses = run_torch(params, seq, freeze_whh)
    assert 0 < n_clipped < RUN_STEPS  # clipping is part of what is compared
    assert rel_err(losses, ref_losses) < 1e-8
    assert losses[-50:].mean() < 0.8 * losses[:50].mean()  # it learned something
    for n in TORCH_NAMES:
        assert rel_err(getattr(ours, n), getattr(rnn, n).detach().numpy()) < 1e-8, n
    assert rel_err(ours.W_hy, head.weight.detach().numpy()) < 1e-8
    assert rel_err(ours.b_y, head.bias.detach().numpy()) < 1e-8
    if freeze_whh:
        np.testing.assert_array_equal(ours.weight_hh_l0, params.weight_hh_l0)


def test_the_comparison_has_teeth(monkeypatch):
    """A backward pass with one wrong coefficient (the GRU's update-gate path with its sign
    flipped) fails the autograd comparison, while the output layer's gradients still pass."""
    params, inputs, targets, state = make_case("gru", "orthogonal", 3)
    right = gated_backward._gru_coefficients

    def wrong(r, z, n, hn, h_prev, out):
        right(r, z, n, hn, h_prev, out)
        out[1] *= -1.0

    monkeypatch.setattr(gated_backward, "_gru_coefficients", wrong)
    _, grads, _ = loss_and_grads(params, inputs, targets, state)
    _, ref, _, _ = torch_reference(params, inputs, targets, state)
    assert rel_err(grads.grads["weight_hh_l0"], ref["weight_hh_l0"]) > 1e-3
    assert rel_err(grads.grads["W_hy"], ref["W_hy"]) < AUTOGRAD_TOL
