"""The vanilla RNN and its hand-written BPTT, in pure NumPy.

    a_t = W_xh x_t + W_hh h_{t-1} + b_h        (pre-activation)
    h_t = f(a_t)                               (hidden state)
    o_t = W_hy h_t + b_y                       (output logits)

Shapes follow the walkthrough (W_xh (H,V), W_hh (H,H), W_hy (V,H)); arrays inside the engine are
time-major with a batch axis: ``hs: (T+1, B, H)`` holds h_0 .. h_T, so B independent streams
move together and B = 1 is the walkthrough's single stream. Row vectors are used throughout
(``h @ W_hh.T``) so every matmul is one BLAS call over the whole batch.

The engine never sees a config object: it takes arrays, names and numbers. The loss lives
in :mod:`rnn_lab.core.losses`; ``backward`` only needs dL/do_t, so any per-step loss (masked
cross-entropy, squared error) plugs in without touching BPTT.

Speed: at the walkthrough's sizes (H=64, B=1) every NumPy call costs more in overhead than in
arithmetic, so the two sequential loops (``_recur``, ``_backprop_through_time``) make exactly
three calls per time step, all writing in place through ``out=``, and everything else is
done for the whole chunk at once. ``rnn-lab bench`` measures the result against a walkthrough-style
loop and torch autograd; tests/test_gradients.py holds the engine to finite differences and
to autograd.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from rnn_lab.third_party import resolve

# np.dot without its __array_function__ dispatch layer: the same C function, ~0.3 us less per
# call. At the walkthrough's sizes a training step makes ~55 dot calls on tiny arrays, so this is
# ~5% of a step. The engine only passes ndarrays, for which the dispatch is a no-op.
_dot = resolve("numpy.undispatched_dot", default=np.dot)  # a private name: see third_party
_vecdot = getattr(np, "vecdot", None)  # NumPy >= 2.0


def _row_norms(x: np.ndarray) -> np.ndarray:
    """||x[i]|| for each row of a 2-D array (a gufunc: no subscript parsing as in einsum)."""
    sq = _vecdot(x, x) if _vecdot is not None else np.einsum("ij,ij->i", x, x)
    return np.sqrt(sq)


# --------------------------------------------------------------------------------------
# Activations: the derivative is taken from the OUTPUT h = f(a), as the walkthrough does, so the
# backward pass never needs the pre-activations.
# --------------------------------------------------------------------------------------


def _tanh(a: np.ndarray) -> np.ndarray:
    return np.tanh(a)


def _tanh_(a: np.ndarray) -> np.ndarray:
    return np.tanh(a, out=a)


def _tanh_deriv(h: np.ndarray) -> np.ndarray:
    d = np.multiply(h, h)
    return np.subtract(1.0, d, out=d)  # 1 - h^2 with one temporary, not two


def _relu(a: np.ndarray) -> np.ndarray:
    return np.maximum(a, 0.0)


def _relu_(a: np.ndarray) -> np.ndarray:
    return np.maximum(a, 0.0, out=a)


def _relu_deriv(h: np.ndarray) -> np.ndarray:
    # h > 0 exactly where a > 0, so the output determines the derivative.
    return (h > 0.0).astype(h.dtype)


def _sigmoid(a: np.ndarray) -> np.ndarray:
    # Split by sign so exp never overflows for large |a|.
    out = np.empty_like(a)
    pos = a >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-a[pos]))
    ea = np.exp(a[~pos])
    out[~pos] = ea / (1.0 + ea)
    return out


def _sigmoid_(a: np.ndarray) -> np.ndarray:
    # sigmoid(a) = (1 + tanh(a / 2)) / 2: exact, overflow-free, and done in place.
    a *= 0.5
    np.tanh(a, out=a)
    a += 1.0
    a *= 0.5
    return a


def _sigmoid_deriv(h: np.ndarray) -> np.ndarray:
    return h * (1.0 - h)


def _linear(a: np.ndarray) -> np.ndarray:
    return a.copy()


def _linear_(a: np.ndarray) -> np.ndarray:
    return a  # the identity: nothing to do in place


def _linear_deriv(h: np.ndarray) -> np.ndarray:
    return np.ones_like(h)


@dataclass(frozen=True)
class Activation:
    name: str
    fn: Callable[[np.ndarray], np.ndarray]
    fn_inplace: Callable[[np.ndarray], np.ndarray]  # overwrites its argument (hot loop)
    deriv_from_output: Callable[[np.ndarray], np.ndarray]
    # Range of h, used by saturation diagnostics; None = unbounded above (relu); a linear
    # unit's range is (-inf, inf): it never saturates.
    low: float
    high: float | None
    # gamma = max |f'(a)|: the Jacobian bound ||prod_k diag(f') W_hh|| <= (gamma sigma_max)^k
    # (Pascanu, Mikolov & Bengio 2013) uses it; 1 for tanh, relu and linear, 1/4 for sigmoid.
    deriv_max: float = 1.0


ACTIVATIONS: dict[str, Activation] = {
    "tanh": Activation("tanh", _tanh, _tanh_, _tanh_deriv, -1.0, 1.0),
    "relu": Activation("relu", _relu, _relu_, _relu_deriv, 0.0, None),
    "sigmoid": Activation("sigmoid", _sigmoid, _sigmoid_, _sigmoid_deriv, 0.0, 1.0, 0.25),
    # h = a: the linear RNN, the reference case of the gradient-flow theory.
    "linear": Activation("linear", _linear, _linear_, _linear_deriv, -math.inf, math.inf),
}


def get_activation(name: str) -> Activation:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"activation: unknown name {name!r}; valid: {', '.join(sorted(ACTIVATIONS))}"
        ) from None


# --------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------

PARAM_NAMES = ("W_xh", "W_hh", "W_hy", "b_h", "b_y")


class NamedParams:
    """What every cell's parameter class shares (engine.Params here, gated.GRUParams and
    LSTMParams): named arrays, an optional embedding E, and a flat buffer laid out in the
    class's FLAT_ORDER with its recurrent weight last (a frozen one is the untouched tail).
    Subclasses are dataclasses that name the arrays and set the three class constants."""

    PARAM_NAMES: ClassVar[tuple[str, ...]] = ()  # the arrays, without the optional E
    FLAT_ORDER: ClassVar[tuple[str, ...]] = ()  # their order in ``flat`` (recurrent last)
    RECURRENT: ClassVar[str] = ""  # the recurrent weight: (G H, H); freeze_whh holds it
    E: np.ndarray | None
    flat: np.ndarray | None

    @property
    def hidden_size(self) -> int:
        return getattr(self, self.RECURRENT).shape[1]

    @property
    def dtype(self) -> np.dtype:
        return getattr(self, self.RECURRENT).dtype

    def names(self) -> tuple[str, ...]:
        return self.PARAM_NAMES + (("E",) if self.E is not None else ())

    def arrays(self) -> dict[str, np.ndarray]:
        return {n: getattr(self, n) for n in self.names()}

    @classmethod
    def from_arrays(cls, arrays):
        """The parameters among named arrays (a checkpoint.npz, a dict), copied: those of
        PARAM_NAMES and E when present; anything else (optimiser state, h, ...) is ignored."""
        return cls(**{n: np.array(arrays[n]) for n in (*cls.PARAM_NAMES, "E") if n in arrays})

    def n_trainable(self, freeze_whh: bool) -> int:
        """Length of the leading slice of ``flat`` that trains (the recurrent weight is the
        tail)."""
        return self.flat.size - (getattr(self, self.RECURRENT).size if freeze_whh else 0)


@dataclass
class Params(NamedParams):
    """The five arrays of the walkthrough, plus an optional input embedding ``E: (D, V)``.

    Without ``E``, W_xh is (H, V) and a character index selects a column of it (the
    one-hot matmul done as a lookup). With ``E``, x_t = E[:, idx] and W_xh is (H, D).
    For real-valued inputs (synthetic tasks) W_xh is (H, D) and x_t is given directly.
    """

    W_xh: np.ndarray  # (H, V) or (H, D)
    W_hh: np.ndarray  # (H, H)
    W_hy: np.ndarray  # (O, H)
    b_h: np.ndarray  # (H,)
    b_y: np.ndarray  # (O,)
    E: np.ndarray | None = None  # (D, V) learned input embedding, optional
    # When packed, every array above is a view into this one buffer (see pack()).
    flat: np.ndarray | None = field(default=None, repr=False)

    PARAM_NAMES: ClassVar[tuple[str, ...]] = PARAM_NAMES
    # Order in the flat buffer: W_hh last, so a frozen W_hh is simply the untouched tail.
    FLAT_ORDER: ClassVar[tuple[str, ...]] = ("W_xh", "W_hy", "b_h", "b_y", "E", "W_hh")
    RECURRENT: ClassVar[str] = "W_hh"


FLAT_ORDER = Params.FLAT_ORDER


def flat_views(
    flat: np.ndarray, shapes: dict[str, tuple], order: tuple[str, ...] = FLAT_ORDER
) -> dict[str, np.ndarray]:
    """Split a flat buffer into named views of the given shapes, in ``order``."""
    layout, _ = _flat_layout(tuple((n, tuple(shapes[n])) for n in order if n in shapes))
    return {name: flat[start:stop].reshape(shape) for name, start, stop, shape in layout}


@functools.lru_cache(maxsize=256)
def _flat_layout(named_shapes: tuple) -> tuple[tuple, int]:
    """((name, start, stop, shape), ...) and the total size; cached, as the hot loop asks
    for the same few layouts every step (np.prod per array per step cost ~10% of a step)."""
    layout, offset = [], 0
    for name, shape in named_shapes:
        size = math.prod(shape)
        layout.append((name, offset, offset + size, shape))
        offset += size
    return tuple(layout), offset


def _params_layout(params: Params) -> tuple[tuple, int]:
    """The FLAT_ORDER layout of these parameters' gradients (cached by shapes)."""
    E = params.E
    return _flat_layout(
        (
            ("W_xh", params.W_xh.shape),
            ("W_hy", params.W_hy.shape),
            ("b_h", params.b_h.shape),
            ("b_y", params.b_y.shape),
        )
        + ((("E", E.shape),) if E is not None else ())
        + (("W_hh", params.W_hh.shape),)
    )


def _is_index_input(inputs: np.ndarray) -> bool:
    # Same test as np.issubdtype(dtype, np.integer), at a fraction of its cost.
    return inputs.dtype.kind in "iu"


def pack(params: NamedParams) -> NamedParams:
    """The same parameters (any cell's), as views into one contiguous buffer laid out in
    their class's FLAT_ORDER (one-call clip and update)."""
    arrays = params.arrays()
    shapes = {n: a.shape for n, a in arrays.items()}
    flat = np.empty(sum(a.size for a in arrays.values()), dtype=params.dtype)
    views = flat_views(flat, shapes, type(params).FLAT_ORDER)
    for n, a in arrays.items():
        views[n][...] = a
    return type(params)(**views, flat=flat)


# --------------------------------------------------------------------------------------
# Forward
# --------------------------------------------------------------------------------------


@dataclass
class ForwardCache:
    """What the backward pass needs from the forward pass."""

    inputs: np.ndarray  # (T, B) int character indices, or (T, B, D) real-valued inputs
    x_embedded: np.ndarray | None  # (T, B, D) = E[:, idx] when an embedding is used
    hs: np.ndarray  # (T+1, B, H): hs[0] = h_0 (carried in), hs[t] = h_t
    logits: np.ndarray  # (T, B, O)

    @property
    def h_last(self) -> np.ndarray:
        return self.hs[-1]


def input_projection(params: Params, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """W_xh x_t for every t at once: (T, B, H). Integer inputs are one-hot by lookup."""
    if _is_index_input(inputs):
        if params.E is None:
            # Selecting column idx of W_xh is W_xh @ one_hot(idx), without the one-hot.
            return params.W_xh.T[inputs], None
        x_embedded = params.E.T[inputs]  # (T, B, D)
        return _matmul_rows(x_embedded, params.W_xh.T), x_embedded
    return _matmul_rows(inputs, params.W_xh.T), None


def _matmul_rows(x: np.ndarray, W: np.ndarray) -> np.ndarray:
    """x @ W for x (..., K) as ONE 2-D matmul: ``(T, B, K) @ W`` on a 3-D array makes NumPy
    loop over T and call BLAS once per slice (~1.6x slower at the walkthrough's sizes)."""
    return _dot(x.reshape(-1, x.shape[-1]), W).reshape(x.shape[:-1] + (W.shape[1],))


def _recur(xw: np.ndarray, hs: np.ndarray, W_hh_T: np.ndarray, act: Activation) -> None:
    """hs[t+1] = f(xw[t] + hs[t] @ W_hh^T) for t = 0..T-1, in place (hs[0] is h_0).

    The only sequential part of the forward pass: three NumPy calls per step, each writing
    into hs through out= (no temporaries). At B = 1 the rows are 1-D so np.dot is a gemv;
    the result is bit-identical to the (1, H) gemm and the call is cheaper.
    """
    if hs.shape[1] == 1:
        xw, hs = xw[:, 0], hs[:, 0]
    dot, add = _dot, np.add
    if act.fn_inplace is _tanh_:  # the ufunc itself: no Python frame per step
        tanh = np.tanh
        for x_t, h_prev, h_t in zip(xw, hs, hs[1:]):
            dot(h_prev, W_hh_T, out=h_t)  # W_hh h_{t-1}
            add(h_t, x_t, out=h_t)  # + W_xh x_t + b_h  = a_t
            tanh(h_t, out=h_t)  # h_t = f(a_t)
    elif act.fn_inplace is _relu_:
        maximum = np.maximum
        for x_t, h_prev, h_t in zip(xw, hs, hs[1:]):
            dot(h_prev, W_hh_T, out=h_t)
            add(h_t, x_t, out=h_t)
            maximum(h_t, 0.0, out=h_t)
    elif act.fn_inplace is _linear_:  # h_t = a_t: no activation call at all
        for x_t, h_prev, h_t in zip(xw, hs, hs[1:]):
            dot(h_prev, W_hh_T, out=h_t)
            add(h_t, x_t, out=h_t)
    else:
        f_ = act.fn_inplace
        for x_t, h_prev, h_t in zip(xw, hs, hs[1:]):
            dot(h_prev, W_hh_T, out=h_t)
            add(h_t, x_t, out=h_t)
            f_(h_t)


def forward(
    params: Params, inputs: np.ndarray, h0: np.ndarray, activation: str | Activation
) -> ForwardCache:
    """Run the recurrence over one chunk.

    inputs: (T, B) int or (T, B, D) float; h0: (B, H) carried in from the previous chunk.
    """
    act = activation if isinstance(activation, Activation) else get_activation(activation)
    T = inputs.shape[0]
    B, H = h0.shape
    xw, x_embedded = input_projection(params, inputs)  # (T, B, H)
    xw += params.b_h  # bias folded in once, outside the time loop (xw is a fresh array)
    hs = np.empty((T + 1, B, H), dtype=params.dtype)
    hs[0] = h0
    _recur(xw, hs, params.W_hh.T, act)
    logits = _matmul_rows(hs[1:], params.W_hy.T)  # (T, B, O) in one matmul
    logits += params.b_y
    return ForwardCache(inputs=inputs, x_embedded=x_embedded, hs=hs, logits=logits)


def run_hidden(
    params: Params, inputs: np.ndarray, h0: np.ndarray, activation: str | Activation
) -> np.ndarray:
    """Hidden states only (no logits): (T+1, B, H). For analysis over long texts."""
    act = activation if isinstance(activation, Activation) else get_activation(activation)
    xw, _ = input_projection(params, inputs)
    xw += params.b_h
    hs = np.empty((inputs.shape[0] + 1,) + h0.shape, dtype=params.dtype)
    hs[0] = h0
    _recur(xw, hs, params.W_hh.T, act)
    return hs


# --------------------------------------------------------------------------------------
# Backward (BPTT)
# --------------------------------------------------------------------------------------


@dataclass
class Gradients:
    grads: dict[str, np.ndarray]  # d(loss)/d(param), same names and shapes as Params
    flat: np.ndarray  # the gradients in one buffer, laid out as Params.flat (FLAT_ORDER)
    total_norm: float  # global L2 norm before clipping (W_hh excluded when frozen)
    clipped: bool
    clip_ratio: float  # norm after clipping / norm before (1.0 when not clipped)
    per_step_grad_norm: np.ndarray  # (T,) ||dL/dh_t|| for t = 1..T (chunk loss)
    last_loss_grad_norm: np.ndarray | None = None  # (T,) ||dL_T/dh_t||, with profile=True
    param_grad_norms: dict[str, float] | None = None  # before clipping, with profile=True


def backward(
    params: Params,
    cache: ForwardCache,
    dlogits: np.ndarray,
    activation: str | Activation,
    *,
    freeze_whh: bool = False,
    clip: float = 0.0,
    clip_mode: str = "norm",
    profile: bool = False,
) -> Gradients:
    """BPTT through one chunk, given dL/do_t for every step.

    dlogits: (T, B, O), already scaled the way the loss is (summed over t, averaged over B).
    The gradient does not flow into h_0 (truncated BPTT: h carries forward, gradient not).
    clip: 0 disables; clip_mode "norm" rescales all gradients by a global norm, "value"
    clips element-wise to [-clip, clip] as min-char-rnn does.
    profile: also return ||dL_T/dh_t|| (the gradient of the last step's loss alone, which
    shows vanishing/exploding without the local losses masking it) and each parameter's
    gradient norm before clipping. Off in the hot loop; on at record points.
    """
    act = activation if isinstance(activation, Activation) else get_activation(activation)
    hs = cache.hs  # (T+1, B, H)
    T, B, H = dlogits.shape[0], hs.shape[1], hs.shape[2]
    W_hh = params.W_hh

    dfa = act.deriv_from_output(hs[1:])  # (T, B, H) f'(a_t), from h_t
    # dh starts as W_hy^T do_t for every t (one matmul) and becomes dL/dh_t in the loop.
    dh = _matmul_rows(dlogits, params.W_hy)  # (T, B, H)
    dh_out_last = dh[-1].copy() if profile else None
    da = np.empty_like(dh)  # dL/da_t
    _backprop_through_time(dh, da, dfa, W_hh)

    # Parameter gradients as single matmuls over all (t, b) at once, written straight into
    # the views of one flat buffer laid out as Params.flat.
    layout, total = _params_layout(params)
    gflat = np.empty(total, dtype=dh.dtype)
    grads = {name: gflat[start:stop].reshape(shape) for name, start, stop, shape in layout}
    da_flat = da.reshape(T * B, H)
    do_flat = dlogits.reshape(T * B, dlogits.shape[-1])
    if freeze_whh:
        # Reservoir computing: W_hh is not trained, so its gradient is not part of the step
        # (nor of the norm used for clipping), as in the walkthrough.
        grads["W_hh"].fill(0.0)
    else:
        _dot(da_flat.T, hs[:-1].reshape(T * B, H), out=grads["W_hh"])  # sum_t da_t h_{t-1}^T
    # Column sums as ones @ X: one gemv, several times cheaper than add.reduce over axis 0
    # at these sizes (the same sums, possibly rounded in another order).
    ones = np.ones(T * B, dtype=da.dtype)
    _dot(ones, da_flat, out=grads["b_h"])  # sum_t da_t
    _dot(do_flat.T, hs[1:].reshape(T * B, H), out=grads["W_hy"])  # sum_t do_t h_t^T
    _dot(ones, do_flat, out=grads["b_y"])  # sum_t do_t
    inputs = cache.inputs
    if _is_index_input(inputs):
        if params.E is None:
            # dW_xh[:, v] = sum of da_t over the steps whose input is v.
            _scatter_columns(da_flat, inputs.reshape(-1), out=grads["W_xh"])
        else:
            x_emb = cache.x_embedded.reshape(-1, params.E.shape[0])
            _dot(da_flat.T, x_emb, out=grads["W_xh"])
            dx = da_flat @ params.W_xh  # (T*B, D) dL/dx_t
            _scatter_columns(dx, inputs.reshape(-1), out=grads["E"])
    else:
        _dot(da_flat.T, inputs.reshape(-1, inputs.shape[-1]), out=grads["W_xh"])

    param_grad_norms = None
    if profile:
        param_grad_norms = {n: float(np.sqrt(np.vdot(g, g))) for n, g in grads.items()}
    total_norm = float(np.sqrt(_dot(gflat, gflat)))
    clipped, clip_ratio = False, 1.0
    if clip > 0:
        if clip_mode == "norm":
            if total_norm > clip:
                clipped, clip_ratio = True, clip / total_norm
                gflat *= clip_ratio
        elif clip_mode == "value":
            if float(np.abs(gflat).max()) > clip:
                clipped = True
                np.clip(gflat, -clip, clip, out=gflat)
                after = float(np.sqrt(np.dot(gflat, gflat)))
                clip_ratio = after / total_norm if total_norm > 0 else 1.0
        else:
            raise ValueError(f"clip_mode: unknown {clip_mode!r}; valid: norm, value")

    per_step = _row_norms(dh.reshape(T, B * H))  # ||dL/dh_t|| over (B, H) together
    last_profile = None
    if profile:
        last_profile = _last_loss_profile(dh_out_last, dfa, W_hh)
    return Gradients(
        grads=grads,
        flat=gflat,
        total_norm=total_norm,
        clipped=clipped,
        clip_ratio=clip_ratio,
        per_step_grad_norm=per_step,
        last_loss_grad_norm=last_profile,
        param_grad_norms=param_grad_norms,
    )


def _backprop_through_time(
    dh: np.ndarray, da: np.ndarray, dfa: np.ndarray, W_hh: np.ndarray
) -> None:
    """The sequential part of BPTT, in place: on entry dh[t] = W_hy^T do_t (the output's
    share); on return dh[t] = dL/dh_t (with the future's share) and da[t] = dL/da_t.

    da_t = f'(a_t) * dh_t and dL/dh_{t-1} += W_hh^T da_t: three NumPy calls per step into
    preallocated arrays. The gradient is not pushed into h_0 (truncated BPTT), so the
    first step's product is never formed. At B = 1 the rows are 1-D (gemv, bit-identical).
    """
    if dh.shape[1] == 1:
        dh, da, dfa = dh[:, 0], da[:, 0], dfa[:, 0]
    dot, add, multiply = _dot, np.add, np.multiply
    dh_next = np.empty_like(dh[0])  # gradient arriving at step t from step t+1
    multiply(dh[-1], dfa[-1], out=da[-1])  # the last step has no future
    for dh_t, da_t, dfa_t, da_next in zip(dh[-2::-1], da[-2::-1], dfa[-2::-1], da[:0:-1]):
        dot(da_next, W_hh, out=dh_next)  # W_hh^T da_{t+1} (row form): the Jacobian factor
        add(dh_t, dh_next, out=dh_t)  # two sources: the output at t and the future
        multiply(dh_t, dfa_t, out=da_t)  # through the activation


def _scatter_columns(values: np.ndarray, index: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out[:, v] = sum of values[i] over i with index[i] == v. values: (N, H), out: (H, n_cols)."""
    # One matmul with a one-hot matrix beats np.add.at's per-element loop at these sizes.
    one_hot = np.zeros((index.shape[0], out.shape[1]), dtype=values.dtype)
    one_hot[np.arange(index.shape[0]), index] = 1.0
    return _dot(values.T, one_hot, out=out)


def _last_loss_profile(dh_T: np.ndarray, dfa: np.ndarray, W_hh: np.ndarray) -> np.ndarray:
    """||dL_T/dh_t|| for t = 1..T: the last step's loss pushed back alone through the chain."""
    T = dfa.shape[0]
    out = np.empty(T)
    g = dh_T  # (B, H) dL_T/dh_T
    for t in range(T - 1, -1, -1):
        out[t] = np.sqrt(np.vdot(g, g))
        g = (g * dfa[t]) @ W_hh
    return out


# --------------------------------------------------------------------------------------
# Jacobian products (gradient-flow diagnostics)
# --------------------------------------------------------------------------------------


def jacobian_products(
    params: Params, hs: np.ndarray, activation: str | Activation, lags: int
) -> dict[str, np.ndarray]:
    """Products prod diag(f'(a_i)) W_hh over the last ``lags`` steps of a chunk (stream 0).

    J_t = dh_t/dh_{t-1} = diag(f'(a_t)) W_hh. For lag k = 1..lags the product is
    P_k = J_T J_{T-1} ... J_{T-k+1} = dh_T/dh_{T-k}. Returns, for each lag, the spectral
    norm of the one-step Jacobian J_{T-k+1}, and the spectral norm and spectral radius of P_k.
    hs: (T+1, B, H) from forward.
    """
    act = activation if isinstance(activation, Activation) else get_activation(activation)
    T = hs.shape[0] - 1
    lags = min(lags, T)
    H = params.hidden_size
    step_norm = np.empty(lags)
    product_norm = np.empty(lags)
    product_radius = np.empty(lags)
    product = np.eye(H, dtype=params.dtype)
    for k in range(1, lags + 1):
        t = T - k + 1  # the step whose Jacobian joins the product
        J_t = act.deriv_from_output(hs[t, 0])[:, None] * params.W_hh
        product = product @ J_t  # dh_T/dh_{t-1}
        step_norm[k - 1] = np.linalg.norm(J_t, 2)
        product_norm[k - 1] = np.linalg.norm(product, 2)
        product_radius[k - 1] = np.max(np.abs(np.linalg.eigvals(product)))
    return {
        "jacobian_step_norm": step_norm,
        "jacobian_product_norm": product_norm,
        "jacobian_product_radius": product_radius,
    }


def spectral_radius(W: np.ndarray) -> float:
    return float(np.max(np.abs(np.linalg.eigvals(W))))


# --------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def sample(
    params: Params,
    activation: str | Activation,
    prime: list[int] | np.ndarray,
    length: int,
    temperature: float,
    rng: np.random.Generator,
    h0: np.ndarray | None = None,
) -> list[int]:
    """Generate ``length`` indices after a primed sequence (at least one index).

    The prime is fed through the network (warming up h); sampling starts from the
    distribution after its last character. temperature 0 means argmax (greedy).
    """
    act = activation if isinstance(activation, Activation) else get_activation(activation)
    prime = [int(i) for i in prime]
    if not prime:
        raise ValueError("sample: the prime must hold at least one character")
    H = params.hidden_size
    h = np.zeros(H, dtype=params.dtype) if h0 is None else np.asarray(h0).reshape(H).copy()
    W_in = params.W_xh.T if params.E is None else (params.E.T @ params.W_xh.T)  # (V, H)
    W_hh_T, W_hy_T = params.W_hh.T, params.W_hy.T
    for idx in prime[:-1]:
        h = act.fn(W_in[idx] + params.b_h + h @ W_hh_T)
    idx = prime[-1]
    out: list[int] = []
    for _ in range(length):
        h = act.fn(W_in[idx] + params.b_h + h @ W_hh_T)
        logits = h @ W_hy_T + params.b_y
        if temperature <= 0:
            idx = int(np.argmax(logits))
        else:
            p = softmax(logits.astype(np.float64) / temperature)
            # Inverse-CDF draw: one uniform per character keeps the RNG stream simple.
            idx = int(np.searchsorted(np.cumsum(p), rng.random() * p.sum(), side="right"))
            idx = min(idx, p.shape[0] - 1)
        out.append(idx)
    return out
