"""The hand-written BPTT against centred finite differences and against torch autograd.

Every init x activation x freeze_whh, with a non-zero carried h_0, for B = 1 and B = 3, with
the input embedding on and off. Sizes are tiny (V = 7, H = 5, T = 6) so the whole grid runs
in seconds. The torch reference is written independently of the engine: a plain loop over
time on one-hot inputs (F.one_hot), loss = sum over t of the cross-entropy averaged over B.
Each sequence task (copy, adding, memory_capacity) gets the same two checks on its own
batches, loss and mask, for every activation: a whole sequence from h = 0 and a later chunk
of a sequence cut by seq_len (h carried in from the chunk before).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rnn_lab.core import engine
from rnn_lab.core.inits import INITS, init_params
from rnn_lab.core.losses import softmax_cross_entropy, squared_error

V, H, T, D = 7, 5, 6, 4  # vocabulary, hidden units, chunk length, embedding width
ACTIVATIONS = ("tanh", "relu", "sigmoid", "linear")
FD_EPS = 1e-5
FD_TOL = 1e-6  # relative error, centred differences in float64
AUTOGRAD_TOL = 1e-9  # relative error, the same float64 computation done another way
RELU_MARGIN = 1e-3  # no pre-activation this close to relu's kink (FD steps are ~1e-5)

TORCH_ACT = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "linear": lambda a: a,
}


def rel_err(a, b) -> float:
    """||a - b|| / max(||a||, ||b||); 0 when both are exactly zero."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(np.linalg.norm(a), np.linalg.norm(b))
    return float(np.linalg.norm(a - b) / scale) if scale > 0 else 0.0


def pre_activations(params: engine.Params, cache: engine.ForwardCache) -> np.ndarray:
    """a_t for every step, recomputed from the cached h's (the engine does not store them)."""
    xw, _ = engine.input_projection(params, cache.inputs)
    return xw + params.b_h + cache.hs[:-1] @ params.W_hh.T


def make_case(init: str, activation: str, B: int, use_embedding: bool, seed: int = 0):
    """Parameters, a chunk (inputs, targets) and a carried h_0, all float64.

    Biases are non-zero (so their gradients are tested too). For relu the draw is repeated
    until no pre-activation lies within RELU_MARGIN of 0, where FD would straddle the kink.
    """
    for attempt in range(50):
        rng = np.random.default_rng([seed, attempt, B, int(use_embedding)])
        params = init_params(
            V, H, V, init=init, seed=seed + attempt, embed_dim=D if use_embedding else 0
        )
        params.b_h[:] = rng.normal(0.0, 0.3, H)
        params.b_y[:] = rng.normal(0.0, 0.3, V)
        inputs = rng.integers(0, V, size=(T, B))
        targets = rng.integers(0, V, size=(T, B))
        h0 = rng.normal(0.0, 0.5, size=(B, H))
        if activation != "tanh":
            h0 = np.abs(h0)  # a state carried from a relu/sigmoid net is non-negative
        if activation == "relu":
            cache = engine.forward(params, inputs, h0, activation)
            if np.abs(pre_activations(params, cache)).min() < RELU_MARGIN:
                continue
        return params, inputs, targets, h0
    raise AssertionError("no draw kept relu's pre-activations away from 0")


def engine_loss_and_grads(params, inputs, targets, h0, activation, freeze_whh=False, **kw):
    cache = engine.forward(params, inputs, h0, activation)
    loss, dlogits, _ = softmax_cross_entropy(cache.logits, targets)
    grads = engine.backward(params, cache, dlogits, activation, freeze_whh=freeze_whh, **kw)
    return loss, grads


def engine_loss(params, inputs, targets, h0, activation) -> float:
    cache = engine.forward(params, inputs, h0, activation)
    return softmax_cross_entropy(cache.logits, targets)[0]


def finite_difference_grads(params, inputs, targets, h0, activation) -> dict[str, np.ndarray]:
    """Centred differences of the chunk loss for every entry of every array."""
    out = {}
    for name, array in params.arrays().items():
        g = np.zeros_like(array)
        for idx in np.ndindex(array.shape):
            saved = array[idx]
            array[idx] = saved + FD_EPS
            up = engine_loss(params, inputs, targets, h0, activation)
            array[idx] = saved - FD_EPS
            down = engine_loss(params, inputs, targets, h0, activation)
            array[idx] = saved
            g[idx] = (up - down) / (2 * FD_EPS)
        out[name] = g
    return out


def torch_reference(params, inputs, targets, h0, activation, *, return_hidden=False):
    """Loss and gradients of the same RNN by autograd, written without the engine."""
    weights = {
        n: torch.tensor(a, dtype=torch.float64, requires_grad=True)
        for n, a in params.arrays().items()
    }
    f = TORCH_ACT[activation]
    x = F.one_hot(torch.as_tensor(inputs), num_classes=V).to(torch.float64)  # (T, B, V)
    if "E" in weights:
        x = x @ weights["E"].T  # learned embedding: x_t = E one_hot(c_t)
    y = torch.as_tensor(targets)
    h = torch.tensor(h0, dtype=torch.float64)
    loss = torch.zeros((), dtype=torch.float64)
    hidden, step_losses = [], []
    for t in range(inputs.shape[0]):
        a = x[t] @ weights["W_xh"].T + h @ weights["W_hh"].T + weights["b_h"]
        h = f(a)
        h.retain_grad()
        hidden.append(h)
        logits = h @ weights["W_hy"].T + weights["b_y"]
        step_loss = F.cross_entropy(logits, y[t])  # mean over the B streams
        step_losses.append(step_loss)
        loss = loss + step_loss
    if return_hidden:
        return loss, weights, hidden, step_losses
    loss.backward()
    return float(loss.detach()), {n: w.grad.numpy() for n, w in weights.items()}


GRID = list(itertools.product(sorted(INITS), ACTIVATIONS, (False, True), (1, 3), (False, True)))
GRID_IDS = [
    f"{init}-{act}-{'frozen' if frz else 'trained'}-B{B}-{'emb' if emb else 'onehot'}"
    for init, act, frz, B, emb in GRID
]


@pytest.mark.parametrize(
    ("init", "activation", "freeze_whh", "B", "use_embedding"), GRID, ids=GRID_IDS
)
def test_bptt_matches_finite_differences(init, activation, freeze_whh, B, use_embedding):
    params, inputs, targets, h0 = make_case(init, activation, B, use_embedding)
    _, grads = engine_loss_and_grads(params, inputs, targets, h0, activation, freeze_whh)
    numeric = finite_difference_grads(params, inputs, targets, h0, activation)
    assert set(grads.grads) == set(numeric) == set(params.names())
    for name, g in grads.grads.items():
        if name == "W_hh" and freeze_whh:
            # A frozen W_hh is not part of the step: its gradient is exactly zero.
            assert not g.any(), "frozen W_hh must get a zero gradient"
            continue
        err = rel_err(g, numeric[name])
        assert err < FD_TOL, f"{name}: relative error {err:.2e} against finite differences"


@pytest.mark.parametrize(
    ("init", "activation", "freeze_whh", "B", "use_embedding"), GRID, ids=GRID_IDS
)
def test_bptt_matches_torch_autograd(init, activation, freeze_whh, B, use_embedding):
    params, inputs, targets, h0 = make_case(init, activation, B, use_embedding)
    loss, grads = engine_loss_and_grads(params, inputs, targets, h0, activation, freeze_whh)
    ref_loss, ref_grads = torch_reference(params, inputs, targets, h0, activation)
    assert abs(loss - ref_loss) <= AUTOGRAD_TOL * abs(ref_loss)
    expected = ("W_xh", "W_hh", "W_hy", "b_h", "b_y") + (("E",) if use_embedding else ())
    assert set(grads.grads) == set(expected)
    for name in expected:
        if name == "W_hh" and freeze_whh:
            assert not grads.grads["W_hh"].any(), "frozen W_hh must get a zero gradient"
            assert np.abs(ref_grads["W_hh"]).max() > 1e-6  # ... though the true one is not
            continue
        err = rel_err(grads.grads[name], ref_grads[name])
        assert err < AUTOGRAD_TOL, f"{name}: relative error {err:.2e} against autograd"


def test_checks_detect_a_wrong_gradient():
    """The comparison has teeth: a backward pass with the wrong activation derivative fails it."""
    params, inputs, targets, h0 = make_case("xavier", "tanh", 3, False)
    cache = engine.forward(params, inputs, h0, "tanh")
    _, dlogits, _ = softmax_cross_entropy(cache.logits, targets)
    wrong = engine.backward(params, cache, dlogits, "sigmoid")  # f' from the wrong f
    _, ref_grads = torch_reference(params, inputs, targets, h0, "tanh")
    assert rel_err(wrong.grads["W_hh"], ref_grads["W_hh"]) > 1e-2
    assert rel_err(wrong.grads["W_hy"], ref_grads["W_hy"]) < AUTOGRAD_TOL  # not through f'


def test_gradient_buffer_is_laid_out_like_packed_params():
    """Gradients.flat lines up with Params.flat, so one optimizer call updates everything."""
    params, inputs, targets, h0 = make_case("orthogonal", "tanh", 3, True)
    packed = engine.pack(params)
    _, grads = engine_loss_and_grads(packed, inputs, targets, h0, "tanh")
    assert grads.flat.shape == packed.flat.shape
    shapes = {n: a.shape for n, a in packed.arrays().items()}
    views = engine.flat_views(grads.flat, shapes)
    assert list(views) == list(grads.grads)  # the same order (FLAT_ORDER)
    for name, g in grads.grads.items():
        assert np.shares_memory(g, grads.flat)
        np.testing.assert_array_equal(views[name], g)
    # The frozen tail: W_hh is last, so n_trainable cuts it off exactly.
    assert packed.n_trainable(True) == packed.flat.size - H * H
    np.testing.assert_array_equal(packed.flat[packed.n_trainable(True) :], params.W_hh.ravel())


def test_packed_and_unpacked_params_give_identical_gradients():
    params, inputs, targets, h0 = make_case("xavier", "tanh", 3, False)
    _, plain = engine_loss_and_grads(params, inputs, targets, h0, "tanh")
    _, packed = engine_loss_and_grads(engine.pack(params), inputs, targets, h0, "tanh")
    np.testing.assert_array_equal(plain.flat, packed.flat)


# --------------------------------------------------------------------------------------
# Real-valued inputs and the other losses (masked cross-entropy, squared error)
# --------------------------------------------------------------------------------------


def test_masked_cross_entropy_matches_torch():
    rng = np.random.default_rng(7)
    Tm, B = 5, 3
    logits = rng.normal(0.0, 2.0, size=(Tm, B, V))
    targets = rng.integers(0, V, size=(Tm, B))
    mask = (rng.random((Tm, B)) < 0.6).astype(np.float64)
    mask[0, 0] = 1.0  # at least one position counts
    loss, dlogits, n_counted = softmax_cross_entropy(logits, targets, mask)

    z = torch.tensor(logits, requires_grad=True)
    per_position = F.cross_entropy(
        z.reshape(-1, V), torch.as_tensor(targets).reshape(-1), reduction="none"
    ).reshape(Tm, B)
    ref = (per_position * torch.as_tensor(mask)).sum() / B
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=1e-12)
    assert rel_err(dlogits, z.grad.numpy()) < 1e-12
    assert n_counted == pytest.approx(mask.sum() / B)
    assert not dlogits[mask == 0].any()  # unscored positions send no gradient


def test_cross_entropy_without_mask_is_summed_over_t_and_averaged_over_b():
    rng = np.random.default_rng(8)
    logits = rng.normal(size=(4, 2, V))
    targets = rng.integers(0, V, size=(4, 2))
    loss, _, n_counted = softmax_cross_entropy(logits, targets)
    z = torch.tensor(logits)
    ref = sum(F.cross_entropy(z[t], torch.as_tensor(targets[t])) for t in range(4))
    assert loss == pytest.approx(ref.item(), rel=1e-12)
    assert n_counted == 4.0


@pytest.mark.parametrize("masked", [False, True])
def test_squared_error_matches_torch(masked):
    rng = np.random.default_rng(9)
    Tm, B, O = 5, 3, 2
    outputs = rng.normal(size=(Tm, B, O))
    targets = rng.normal(size=(Tm, B, O))
    mask = (rng.random((Tm, B)) < 0.5).astype(np.float64) if masked else None
    loss, doutputs, n_counted = squared_error(outputs, targets, mask)

    o = torch.tensor(outputs, requires_grad=True)
    sq = (o - torch.tensor(targets)) ** 2
    if masked:
        sq = sq * torch.tensor(mask)[..., None]
    ref = 0.5 * sq.sum() / B
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=1e-12)
    assert rel_err(doutputs, o.grad.numpy()) < 1e-12
    assert n_counted == pytest.approx(mask.sum() / B if masked else Tm)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_real_valued_inputs_with_masked_squared_error_match_torch(activation):
    """The engine path of synthetic tasks: x_t given directly, a per-step real-valued loss."""
    rng = np.random.default_rng(10)
    Din, O, B = 3, 2, 3
    params = init_params(Din, H, O, init="xavier", seed=4)
    params.b_h[:] = rng.normal(0.0, 0.3, H)
    inputs = rng.normal(size=(T, B, Din))
    targets = rng.normal(size=(T, B, O))
    mask = np.zeros((T, B))
    mask[-2:] = 1.0  # a copy-task-like loss: only the last two steps count
    h0 = np.abs(rng.normal(0.0, 0.5, size=(B, H)))
    cache = engine.forward(params, inputs, h0, activation)
    loss, dout, _ = squared_error(cache.logits, targets, mask)
    grads = engine.backward(params, cache, dout, activation)

    w = {n: torch.tensor(a, requires_grad=True) for n, a in params.arrays().items()}
    h = torch.tensor(h0)
    ref = torch.zeros((), dtype=torch.float64)
    for t in range(T):
        h = TORCH_ACT[activation](
            torch.tensor(inputs[t]) @ w["W_xh"].T + h @ w["W_hh"].T + w["b_h"]
        )
        out = h @ w["W_hy"].T + w["b_y"]
        err = (out - torch.tensor(targets[t])) ** 2 * torch.tensor(mask[t])[:, None]
        ref = ref + 0.5 * err.sum() / B
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=1e-12)
    for name in engine.PARAM_NAMES:
        assert rel_err(grads.grads[name], w[name].grad.numpy()) < AUTOGRAD_TOL, name


# --------------------------------------------------------------------------------------
# Clipping
# --------------------------------------------------------------------------------------


@pytest.fixture
def chunk():
    """A case whose unclipped gradient norm is well above 1 (so thresholds can sit on both
    sides of it) and whose largest entry is well above the smallest."""
    params, inputs, targets, h0 = make_case("orthogonal", "tanh", 1, False)
    _, free = engine_loss_and_grads(params, inputs, targets, h0, "tanh")
    assert free.total_norm > 1.0
    return params, inputs, targets, h0, free


def test_norm_clipping_rescales_to_exactly_the_threshold(chunk):
    params, inputs, targets, h0, free = chunk
    clip = 0.25 * free.total_norm
    _, g = engine_loss_and_grads(params, inputs, targets, h0, "tanh", clip=clip)
    assert g.clipped
    assert g.total_norm == free.total_norm  # reported before clipping
    assert np.linalg.norm(g.flat) == pytest.approx(clip, rel=1e-12)
    assert g.clip_ratio == pytest.approx(clip / free.total_norm, rel=1e-15)
    np.testing.assert_allclose(g.flat, free.flat * (clip / free.total_norm), rtol=1e-14)
    for name, view in g.grads.items():  # the named views see the clipped values
        np.testing.assert_allclose(view, free.grads[name] * g.clip_ratio, rtol=1e-14)


def test_norm_clipping_leaves_a_smaller_gradient_alone(chunk):
    params, inputs, targets, h0, free = chunk
    _, g = engine_loss_and_grads(params, inputs, targets, h0, "tanh", clip=free.total_norm * 1.01)
    assert not g.clipped and g.clip_ratio == 1.0
    np.testing.assert_array_equal(g.flat, free.flat)


def test_value_clipping_is_elementwise_like_np_clip(chunk):
    params, inputs, targets, h0, free = chunk
    clip = 0.5 * np.abs(free.flat).max()
    _, g = engine_loss_and_grads(params, inputs, targets, h0, "tanh", clip=clip, clip_mode="value")
    assert g.clipped
    np.testing.assert_array_equal(g.flat, np.clip(free.flat, -clip, clip))
    assert g.total_norm == free.total_norm
    assert g.clip_ratio == pytest.approx(np.linalg.norm(g.flat) / free.total_norm, rel=1e-14)
    assert g.clip_ratio < 1.0
    # A threshold above every entry changes nothing, even when it is below the norm.
    big = np.abs(free.flat).max() * 1.01
    assert big < free.total_norm
    _, g = engine_loss_and_grads(params, inputs, targets, h0, "tanh", clip=big, clip_mode="value")
    assert not g.clipped and g.clip_ratio == 1.0
    np.testing.assert_array_equal(g.flat, free.flat)


@pytest.mark.parametrize("clip_mode", ["norm", "value"])
def test_clip_zero_disables_clipping(chunk, clip_mode):
    params, inputs, targets, h0, free = chunk
    _, g = engine_loss_and_grads(params, inputs, targets, h0, "tanh", clip=0.0, clip_mode=clip_mode)
    assert not g.clipped and g.clip_ratio == 1.0
    np.testing.assert_array_equal(g.flat, free.flat)


def test_frozen_w_hh_is_left_out_of_the_clipping_norm(chunk):
    params, inputs, targets, h0, free = chunk
    without_whh = np.sqrt(sum(np.sum(g**2) for n, g in free.grads.items() if n != "W_hh"))
    clip = 0.5 * without_whh
    _, g = engine_loss_and_grads(params, inputs, targets, h0, "tanh", True, clip=clip)
    assert g.total_norm == pytest.approx(without_whh, rel=1e-14)
    assert g.clip_ratio == pytest.approx(clip / without_whh, rel=1e-14)
    assert not g.grads["W_hh"].any()
    np.testing.assert_allclose(g.grads["W_hy"], free.grads["W_hy"] * g.clip_ratio, rtol=1e-14)


def test_unknown_clip_mode_is_rejected(chunk):
    params, inputs, targets, h0, _ = chunk
    with pytest.raises(ValueError, match="clip_mode"):
        engine_loss_and_grads(params, inputs, targets, h0, "tanh", clip=1e-3, clip_mode="sign")


# --------------------------------------------------------------------------------------
# The sequence tasks: their batches, losses and masks through the engine
# --------------------------------------------------------------------------------------

TASK_CASES = {
    "copy": {"name": "copy", "length": 2, "symbols": 3, "delay": 3},  # 7 steps, D = 5, O = 4
    "adding": {"name": "adding", "length": 7},  # D = 2, O = 1, loss at the last step only
    "memory_capacity": {"name": "memory_capacity", "length": 7, "max_delay": 2},  # O = 2
}


def task_case(name: str, activation: str, chunked: bool):
    """Parameters, a batch of 3 sequences of the task and h_0: the whole sequence from 0, or
    (chunked) its last chunk of seq_len 4 with h carried from the first chunk."""
    from rnn_lab.core.tasks import make_sequence_task

    task = make_sequence_task(TASK_CASES[name], 4 if chunked else 7, 3)
    first = task.next_batch()
    for attempt in range(50):
        rng = np.random.default_rng([attempt, len(name)])
        params = init_params(task.input_size, H, task.output_size, init="xavier", seed=attempt)
        params.b_h[:] = rng.normal(0.0, 0.3, H)
        params.b_y[:] = rng.normal(0.0, 0.3, task.output_size)
        h0 = np.zeros((3, H))
        batch = first
        if chunked:
            h0 = engine.forward(params, first.inputs, h0, activation).h_last
            batch = task.next_batch()
            assert not batch.reset_h and batch.inputs.shape[0] == 3
        cache = engine.forward(params, batch.inputs, h0, activation)
        if activation != "relu" or np.abs(pre_activations(params, cache)).min() > RELU_MARGIN:
            return task, params, batch, h0
    raise AssertionError("no draw kept relu's pre-activations away from 0")


def task_engine_loss(task, params, batch, h0, activation):
    from rnn_lab.core.losses import get_loss

    cache = engine.forward(params, batch.inputs, h0, activation)
    loss, dout, _ = get_loss(task.loss_name)(cache.logits, batch.targets, batch.mask)
    return loss, cache, dout


def task_torch_reference(task, params, batch, h0, activation):
    """The task's loss by autograd: one-hot or real inputs, CE summed over the steps (copy)
    or the masked squared error averaged over outputs (adding, memory_capacity), / B."""
    w = {n: torch.tensor(a, requires_grad=True) for n, a in params.arrays().items()}
    if task.index_inputs:
        x = F.one_hot(torch.as_tensor(batch.inputs), task.input_size).to(torch.float64)
    else:
        x = torch.tensor(batch.inputs)
    h, B = torch.tensor(h0), batch.inputs.shape[1]
    loss = torch.zeros((), dtype=torch.float64)
    for t in range(batch.inputs.shape[0]):
        h = TORCH_ACT[activation](x[t] @ w["W_xh"].T + h @ w["W_hh"].T + w["b_h"])
        out = h @ w["W_hy"].T + w["b_y"]
        if task.loss_name == "cross_entropy":
            loss = loss + F.cross_entropy(out, torch.as_tensor(batch.targets[t]))
        else:
            err = ((out - torch.tensor(batch.targets[t])) ** 2).mean(dim=1)
            loss = loss + (err * torch.tensor(batch.mask[t])).sum() / B
    loss.backward()
    return float(loss.detach()), {n: v.grad.numpy() for n, v in w.items()}


TASK_GRID = list(itertools.product(sorted(TASK_CASES), ACTIVATIONS, (False, True)))
TASK_IDS = [f"{n}-{a}-{'chunk' if c else 'whole'}" for n, a, c in TASK_GRID]


@pytest.mark.parametrize(("name", "activation", "chunked"), TASK_GRID, ids=TASK_IDS)
def test_task_gradients_match_torch_autograd_and_finite_differences(name, activation, chunked):
    task, params, batch, h0 = task_case(name, activation, chunked)
    loss, cache, dout = task_engine_loss(task, params, batch, h0, activation)
    grads = engine.backward(params, cache, dout, activation)
    ref_loss, ref_grads = task_torch_reference(task, params, batch, h0, activation)
    assert loss > 0 and abs(loss - ref_loss) <= AUTOGRAD_TOL * abs(ref_loss)
    for n in engine.PARAM_NAMES:
        err = rel_err(grads.grads[n], ref_grads[n])
        assert err < AUTOGRAD_TOL, f"{n}: relative error {err:.2e} against autograd"
    for n, array in params.arrays().items():
        numeric = np.zeros_like(array)
        for idx in np.ndindex(array.shape):
            saved = array[idx]
            array[idx] = saved + FD_EPS
            up = task_engine_loss(task, params, batch, h0, activation)[0]
            array[idx] = saved - FD_EPS
            down = task_engine_loss(task, params, batch, h0, activation)[0]
            array[idx] = saved
            numeric[idx] = (up - down) / (2 * FD_EPS)
        err = rel_err(grads.grads[n], numeric)
        assert err < FD_TOL, f"{n}: relative error {err:.2e} against finite differences"
