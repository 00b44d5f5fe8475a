"""The stacked engine (rnn_lab.core.stacked_engine) gives every arm the single run's numbers,
bit for bit.

A mixed group (activations, inits and seeds, lr and its decay, clip off / by norm / by value,
frozen and trained W_hh, optimiser hyperparameters) is trained for a few hundred steps as one
stack and, arm by arm, through the single-run path (engine.forward, the loss, engine.backward,
rnn_lab.core.optim, h carried, as rnn_lab.run.step.train_step does). After every step the
hidden states, logits, loss, dL/do, gradients, norms, clipping, parameters and optimiser state
must be identical (np.array_equal, not allclose).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from rnn_lab.core import engine
from rnn_lab.core import stacked_engine as st
from rnn_lab.core.inits import init_params
from rnn_lab.core.losses import get_loss
from rnn_lab.core.optim import make_optimizer, step_decay_lr
from rnn_lab.core.stacked_losses import stacked_loss
from rnn_lab.core.stacked_optim import make_stacked_optimizer

V, H, T, D, O = 11, 16, 7, 3, 2

# (init, activation, seed, freeze_whh, clip, clip_mode, lr, lr_decay_rate, lr_decay_every)
MIXED_ARMS = [
    ("orthogonal", "tanh", 1, False, 9.0, "norm", 0.05, 1.0, 0),
    ("identity", "relu", 2, False, 1.0, "norm", 0.02, 0.5, 40),
    ("xavier", "sigmoid", 3, True, 0.05, "value", 0.1, 1.0, 0),
    ("random", "linear", 4, False, 0.0, "norm", 0.01, 0.9, 25),
    ("orthogonal", "tanh", 5, True, 0.3, "norm", 0.08, 1.0, 0),
    ("xavier", "relu", 6, False, 0.02, "value", 0.03, 1.0, 0),
    ("random", "sigmoid", 7, False, 0.0, "value", 0.2, 0.7, 60),
    ("identity", "tanh", 8, False, 2.0, "norm", 0.04, 1.0, 0),
]
K = len(MIXED_ARMS)

SGD_PER_ARM = [
    dict(momentum=0.9, dampening=0.9),
    dict(momentum=0.0),
    dict(momentum=0.9, nesterov=True),
    dict(momentum=0.5, dampening=0.1),
    dict(momentum=0.9, dampening=0.0),
    dict(momentum=0.99, nesterov=True, dampening=None),  # None: the optimiser's default
    dict(momentum=0.9, dampening=0.9, name="sgd"),  # the name key is ignored, as run.state
    dict(momentum=0.7),
]
ADAGRAD_PER_ARM = [dict(eps=10.0 ** -(k + 4), initial_accumulator_value=0.1 * k) for k in range(K)]
ADAM_PER_ARM = [
    dict(beta1=0.9 - 0.05 * k, beta2=0.999 - 0.002 * k, eps=10.0 ** -(k + 5)) for k in range(K)
]


@dataclass
class Case:
    """A data stream and loss shared by the arms."""

    kind: str  # "onehot" (index inputs, cross-entropy), "embed" or "real" (D inputs)
    B: int
    loss: str
    masked: bool = False


def make_arms(case: Case, dtype, arms_spec=MIXED_ARMS):
    embed = D if case.kind == "embed" else 0
    n_in = D if case.kind == "real" else V
    n_out = O if case.kind == "real" else V
    params, settings = [], []
    for init, act, seed, freeze, clip, mode, *_ in arms_spec:
        p = init_params(n_in, H, n_out, init=init, seed=seed, embed_dim=embed, dtype=dtype)
        params.append(engine.pack(p))
        settings.append(st.ArmSettings(act, freeze, clip, mode))
    return params, settings


def make_batch(case: Case, rng: np.random.Generator, dtype):
    B = case.B
    if case.kind == "real":
        inputs = rng.normal(size=(T, B, D)).astype(dtype)
        targets = rng.normal(size=(T, B, O)).astype(dtype)
    else:
        inputs = rng.integers(0, V, size=(T, B)).astype(np.uint8)
        targets = rng.integers(0, V, size=(T, B))
    mask = (rng.random((T, B)) < 0.6).astype(dtype) if case.masked else None
    return inputs, targets, mask


class SingleRuns:
    """Each arm alone through the single-run path (what run.step.train_step does)."""

    def __init__(self, params, settings, optim_name, per_arm, case: Case, dtype):
        self.params = [engine.pack(p) for p in params]  # copies
        self.settings = settings
        self.opts = [
            make_optimizer(
                optim_name, **{k: v for k, v in s.items() if k != "name" and v is not None}
            )
            for s in per_arm
        ]
        self.h = [np.zeros((case.B, H), dtype=dtype) for _ in params]
        self.loss_fn = get_loss(case.loss)

    def step(self, k, batch, lr, profile):
        inputs, targets, mask = batch
        p, a = self.params[k], self.settings[k]
        cache = engine.forward(p, inputs, self.h[k], a.activation)
        loss, dlogits, n = self.loss_fn(cache.logits, targets, mask)
        grads = engine.backward(
            p, cache, dlogits, a.activation,
            freeze_whh=a.freeze_whh, clip=a.clip, clip_mode=a.clip_mode, profile=profile,
        )  # fmt: skip
        n_train = p.n_trainable(a.freeze_whh)
        self.opts[k].step({"flat": p.flat[:n_train]}, {"flat": grads.flat[:n_train]}, lr)
        self.h[k] = cache.h_last
        return cache, (loss, dlogits, n), grads


def assert_same(a, b, what):
    """The same shape, dtype and bytes (stricter than ==: -0.0 vs 0.0, NaN payloads)."""
    assert a.shape == b.shape and a.dtype == b.dtype, f"{what}: {a.shape} {a.dtype} {b.shape}"
    assert a.tobytes() == b.tobytes(), f"{what}: max diff {np.nanmax(np.abs(a - b))}"


def compare_step(step, k, single, stacked, profile):
    """One arm's numbers at one step: the single run's against the stack's."""
    cache, (loss, dlogits, n), grads = single
    scache, (sloss, sdlogits, sn), sgrads = stacked
    where = f"step {step} arm {k}"
    arm = scache.arm_cache(k)
    assert_same(cache.hs, arm.hs, f"{where} hs")
    assert_same(cache.logits, arm.logits, f"{where} logits")
    assert loss == sloss[k] or (math.isnan(loss) and math.isnan(sloss[k])), f"{where} loss"
    assert n == sn, f"{where} n_counted"
    assert_same(dlogits, sdlogits[:, k], f"{where} dlogits")
    g = sgrads.arm(k)
    assert list(g.grads) == list(grads.grads), where
    for name in grads.grads:
        assert_same(grads.grads[name], g.grads[name], f"{where} d{name}")
    assert_same(grads.flat, g.flat, f"{where} grads.flat")
    for field in ("total_norm", "clip_ratio"):
        a, b = getattr(grads, field), getattr(g, field)
        assert a == b or (math.isnan(a) and math.isnan(b)), f"{where} {field} {a} {b}"
    assert grads.clipped == g.clipped, f"{where} clipped"
    assert_same(grads.per_step_grad_norm, g.per_step_grad_norm, f"{where} per_step")
    if profile:
        assert_same(grads.last_loss_grad_norm, g.last_loss_grad_norm, f"{where} last_loss")
        assert grads.param_grad_norms.keys() == g.param_grad_norms.keys()
        for name, v in grads.param_grad_norms.items():
            w = g.param_grad_norms[name]
            assert v == w or (math.isnan(v) and math.isnan(w)), f"{where} |d{name}|"


def compare_after_update(step, singles: SingleRuns, sp, opt):
    for k, p in enumerate(singles.params):
        assert_same(p.flat, sp.flat[k], f"step {step} arm {k} parameters")
        ref, got = singles.opts[k].state, opt.arm_state(k)
        assert list(ref) == list(got), f"step {step} arm {k} optimiser keys {list(got)}"
        for key in ref:
            assert_same(np.asarray(ref[key]), np.asarray(got[key]), f"step {step} arm {k} {key}")


def lr_of(step, arms_spec):
    return [step_decay_lr(step, a[6], a[7], a[8]) for a in arms_spec]


def train_both(case, optim_name, per_arm, dtype, steps, *, arms_spec=MIXED_ARMS, hook=None):
    """Train the group both ways for ``steps`` steps, comparing everything after each."""
    params, settings = make_arms(case, dtype, arms_spec)
    singles = SingleRuns(params, settings, optim_name, per_arm, case, dtype)
    sp = st.StackedParams.stack(params)
    opt = make_stacked_optimizer(optim_name, per_arm)
    h = np.zeros((len(params), case.B, H), dtype=dtype)
    rng = np.random.default_rng(0)
    alive = list(range(len(params)))  # stack index -> single-run index
    for step in range(1, steps + 1):
        if hook is not None:
            sp, opt, h, settings, alive = hook(step, sp, opt, h, settings, alive, singles)
        batch = make_batch(case, rng, dtype)
        if step % 50 == 0:  # a new sequence: h restarts from zero, in both paths
            h = np.zeros_like(h)
            singles.h = [np.zeros_like(x) for x in singles.h]
        profile = step % 25 == 1
        lrs = lr_of(step, [arms_spec[i] for i in alive])
        cache = st.forward(sp, batch[0], h, settings)
        loss = stacked_loss(case.loss, cache.logits, *batch[1:])
        grads = st.backward(sp, cache, loss[1], settings, profile=profile)
        opt.step(sp.flat, grads.flat, np.array(lrs), sp.n_trainable(settings))
        h = cache.h_last
        for k, i in enumerate(alive):
            ref = singles.step(i, batch, lrs[k], profile)
            compare_step(step, k, ref, (cache, loss, grads), profile)
        sub = SingleRuns.__new__(SingleRuns)
        sub.params = [singles.params[i] for i in alive]
        sub.opts = [singles.opts[i] for i in alive]
        compare_after_update(step, sub, sp, opt)
        assert np.isfinite(sp.flat).all() or hook is not None, f"step {step}: diverged"
    return sp, singles


# ---- the mixed group, every optimiser, every input kind -------------------------------


@pytest.mark.parametrize("dtype, steps", [(np.float64, 300), (np.float32, 150)])
def test_sgd_onehot_batch_1(dtype, steps):
    train_both(Case("onehot", 1, "cross_entropy"), "sgd", SGD_PER_ARM, dtype, steps=steps)


def test_sgd_onehot_batch_3_masked():
    case = Case("onehot", 3, "cross_entropy", masked=True)
    train_both(case, "sgd", SGD_PER_ARM, np.float64, steps=150)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_adagrad_embedding_batch_1(dtype):
    train_both(Case("embed", 1, "cross_entropy"), "adagrad", ADAGRAD_PER_ARM, dtype, steps=120)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_adam_embedding_batch_3(dtype):
    train_both(Case("embed", 3, "cross_entropy"), "adam", ADAM_PER_ARM, dtype, steps=120)


@pytest.mark.parametrize("loss", ["mse", "squared_error"])
def test_real_valued_inputs_masked(loss):
    case = Case("real", 3, loss, masked=True)
    train_both(case, "sgd", SGD_PER_ARM, np.float64, steps=120)


def test_real_valued_inputs_batch_1_adam_float32():
    train_both(Case("real", 1, "mse"), "adam", ADAM_PER_ARM, np.float32, steps=100)


def test_the_clipping_modes_were_all_exercised():
    """The group above really clips, by norm and by value, and not always."""
    case = Case("onehot", 1, "cross_entropy")
    params, settings = make_arms(case, np.float64)
    sp = st.StackedParams.stack(params)
    opt = make_stacked_optimizer("sgd", SGD_PER_ARM)
    rng, h, seen = np.random.default_rng(0), np.zeros((K, 1, H)), set()
    for step in range(1, 31):
        inputs, targets, mask = make_batch(case, rng, np.float64)
        cache = st.forward(sp, inputs, h, settings)
        _, dlogits, _ = stacked_loss("cross_entropy", cache.logits, targets, mask)
        grads = st.backward(sp, cache, dlogits, settings)
        opt.step(sp.flat, grads.flat, np.array(lr_of(step, MIXED_ARMS)), sp.n_trainable(settings))
        h = cache.h_last
        for a, c in zip(settings, grads.clipped):
            seen.add((a.clip_mode if a.clip > 0 else "off", bool(c)))
        for k, a in enumerate(settings):
            assert not a.freeze_whh or not grads.grads["W_hh"][k].any()
    assert {("norm", True), ("norm", False), ("value", True), ("off", False)} <= seen


# ---- arms leave, diverge, resume ---------------------------------------------------------


def test_an_arm_gone_nan_leaves_the_others_untouched():
    """Arm 1's weights become NaN at step 30 (in both paths); every arm, NaN one included,
    still matches its single run; at step 60 it leaves the stack (select) and the others go on."""

    def hook(step, sp, opt, h, settings, alive, singles):
        if step == 30:
            sp.W_hh[1, 0, 0] = np.nan
            singles.params[1].W_hh[0, 0] = np.nan
        if step == 60:
            assert not np.isfinite(sp.flat[1]).all()
            keep = [k for k in range(len(alive)) if k != 1]
            return (
                sp.select(keep), opt.select(keep), h[keep], [settings[k] for k in keep],
                [alive[k] for k in keep],
            )  # fmt: skip
        return sp, opt, h, settings, alive

    sp, _ = train_both(
        Case("onehot", 1, "cross_entropy"), "sgd", SGD_PER_ARM, np.float64, 90, hook=hook
    )
    assert sp.K == K - 1 and np.isfinite(sp.flat).all()


def test_dropping_arms_between_forward_and_backward():
    """A diverged arm leaves before backward (cache.select, params.select, dlogits[:, keep]):
    the others' gradients are the full stack's."""
    case = Case("embed", 3, "cross_entropy")
    params, settings = make_arms(case, np.float64)
    sp = st.StackedParams.stack(params)
    inputs, targets, mask = make_batch(case, np.random.default_rng(3), np.float64)
    cache = st.forward(sp, inputs, np.zeros((K, 3, H)), settings)
    _, dlogits, _ = stacked_loss("cross_entropy", cache.logits, targets, mask)
    full = st.backward(sp, cache, dlogits, settings, profile=True)
    keep = [0, 2, 3, 7]
    sub = st.backward(
        sp.select(keep), cache.select(keep), dlogits[:, keep], [settings[k] for k in keep],
        profile=True,
    )  # fmt: skip
    assert_same(sub.flat, full.flat[keep], "gradients")
    assert_same(sub.per_step_grad_norm, full.per_step_grad_norm[keep], "per-step norms")
    assert_same(sub.last_loss_grad_norm, full.last_loss_grad_norm[keep], "last-loss norms")
    assert_same(sub.total_norm, full.total_norm[keep], "norms")


def test_resume_from_single_run_state():
    """Arms trained alone for 40 steps, then stacked with their parameters, h and optimiser
    state (load_arm_state), go on exactly as the single runs do."""
    case = Case("onehot", 1, "cross_entropy")
    for name, per_arm in (
        ("sgd", SGD_PER_ARM),
        ("adam", ADAM_PER_ARM),
        ("adagrad", ADAGRAD_PER_ARM),
    ):
        params, settings = make_arms(case, np.float64)
        singles = SingleRuns(params, settings, name, per_arm, case, np.float64)
        rng = np.random.default_rng(1)
        for step in range(1, 41):
            batch = make_batch(case, rng, np.float64)
            for k in range(K):
                singles.step(k, batch, lr_of(step, MIXED_ARMS)[k], False)
        sp = st.StackedParams.stack(singles.params)
        opt = make_stacked_optimizer(name, per_arm)
        for k in range(K):
            opt.load_arm_state(k, singles.opts[k].state)
        for k in range(K):  # before the first step: the state as loaded
            assert list(opt.arm_state(k)) == list(singles.opts[k].state)
        h = np.stack(singles.h)
        for step in range(41, 81):
            batch = make_batch(case, rng, np.float64)
            lrs = lr_of(step, MIXED_ARMS)
            cache = st.forward(sp, batch[0], h, settings)
            _, dlogits, _ = stacked_loss("cross_entropy", cache.logits, *batch[1:])
            grads = st.backward(sp, cache, dlogits, settings)
            opt.step(sp.flat, grads.flat, np.array(lrs), sp.n_trainable(settings))
            h = cache.h_last
            for k in range(K):
                singles.step(k, batch, lrs[k], False)
            compare_after_update(step, singles, sp, opt)


def test_arm_order_does_not_change_any_arm():
    """Interleaved activations (many runs) and activation_order (one run each) give every arm
    the same numbers."""
    case = Case("onehot", 1, "cross_entropy")
    order = st.activation_order([a[1] for a in MIXED_ARMS])
    acts = [MIXED_ARMS[i][1] for i in order]
    assert acts == sorted(acts, key=acts.index)  # contiguous runs, first-appearance order
    assert sorted(order) == list(range(K))
    shuffled = [MIXED_ARMS[i] for i in order]
    train_both(case, "sgd", [SGD_PER_ARM[i] for i in order], np.float64, 60, arms_spec=shuffled)


# ---- the containers --------------------------------------------------------------------


def test_stacked_params_views_and_select():
    params, settings = make_arms(Case("embed", 1, "cross_entropy"), np.float64)
    sp = st.StackedParams.stack(params)
    assert sp.K == K and sp.hidden_size == H and sp.dtype == np.float64
    assert sp.flat.shape == (K, params[0].flat.size)
    for k, p in enumerate(params):
        assert_same(sp.flat[k], p.flat, f"row {k}")
        arm = sp.arm(k)
        assert set(arm.names()) == set(p.names())
        for name in p.names():
            assert_same(getattr(arm, name), getattr(p, name), name)
            assert np.shares_memory(getattr(arm, name), sp.flat)
        assert np.shares_memory(arm.flat, sp.flat) and arm.flat.shape == p.flat.shape
    sp.arm(2).W_hh[0, 0] = 123.0  # a view: writes through
    assert sp.W_hh[2, 0, 0] == 123.0 and sp.flat[2, -H * H] == 123.0
    sub = sp.select([3, 0])
    assert sub.K == 2 and not np.shares_memory(sub.flat, sp.flat)
    assert_same(sub.flat, sp.flat[[3, 0]], "select")
    assert_same(sub.E, sp.E[[3, 0]], "select E")
    n = sp.n_trainable(settings)
    assert list(n) == [p.n_trainable(a.freeze_whh) for p, a in zip(params, settings)]
    with pytest.raises(ValueError, match="one architecture"):
        st.StackedParams.stack([params[0], engine.pack(init_params(V, H + 1, V))])
    with pytest.raises(ValueError, match="ArmSettings"):
        st.forward(sp, np.zeros((T, 1), dtype=np.int64), np.zeros((K, 1, H)), settings[:-1])


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="optim.name"):
        make_stacked_optimizer("rmsprop", [{}])
    with pytest.raises(ValueError, match="clip_mode"):
        st._plan((st.ArmSettings("tanh", False, 1.0, "bogus"),))
    with pytest.raises(ValueError, match="activation"):
        st._plan((st.ArmSettings("swish"),))


# ---- the benchmark runs end to end (no timing asserted) -----------------------------------


def test_bench_stacked_quick(capsys, tmp_path):
    import json

    from rnn_lab.bench.stacked_speed import main

    out_json = tmp_path / "bench.json"
    argv = ["--quick", "--ks", "1,2", "--steps", "4", "--rounds", "1", "--json", str(out_json)]
    assert main([*argv, "--clock", "cpu"]) == 0
    out = capsys.readouterr().out
    for expected in ("stacked/single", "K=1 float64: the stacked path", "where a stacked step"):
        assert expected in out
    data = json.loads(out_json.read_text())
    assert [(r["K"], r["dtype"]) for r in data["rows"]] == [
        (1, "float64"), (2, "float64"), (1, "float32"), (2, "float32"),
    ]  # fmt: skip
    assert data["k36_ms"]["total"] > 0 and "recur" in data["k36_ms"]
    assert "the floor of a bit-identical stack" in out
    floor = data["floor"]["float64"]  # at the largest K asked for
    assert floor["K"] == 2 and set(floor["activation_ns_per_value"]) == {"tanh", "relu", "sigmoid"}
    # the floor is what the gemvs and activations alone cost: a fraction of a whole arm-step
    assert 0 < floor["floor_us_per_arm_step"] and floor["bound"] > 1.0
