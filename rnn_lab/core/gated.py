"""GRU and LSTM cells with hand-written BPTT, in pure NumPy, in torch's conventions.

The gated counterparts of :mod:`rnn_lab.core.engine`: forward and backward side by side,
time-major with a batch axis (``hs: (T+1, B, H)``), row vectors (``h @ W.T``), the sequential
loops written with a few in-place NumPy calls per step, every parameter gradient one matmul
over all (t, b) after the loop, the parameters optionally packed in one flat buffer.

Gate order and weight layout are exactly torch.nn.GRU's and torch.nn.LSTM's (one layer,
unidirectional), so torch's own initial weights can be copied in and a checkpoint loaded
back into torch (see :func:`to_torch`, :func:`from_torch`)::

    weight_ih_l0 (G H, D)   weight_hh_l0 (G H, H)   bias_ih_l0 (G H,)   bias_hh_l0 (G H,)

with the G gate blocks stacked along the rows:

GRU, G = 3, rows [r | z | n]::

    r  = sigmoid(W_ir x + b_ir + W_hr h + b_hr)
    z  = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n  = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    h' = (1 - z) * n + z * h

LSTM, G = 4, rows [i | f | g | o]::

    i, f, o = sigmoid(W_i* x + b_i* + W_h* h + b_h*)      g = tanh(W_ig x + b_ig + W_hg h + b_hg)
    c' = f * c + i * g
    h' = o * tanh(c')

Outputs are read from h as in the vanilla engine: o_t = W_hy h_t + b_y, W_hy (O, H). Inputs
are integer indices (T, B) (one-hot, done as a column lookup of weight_ih_l0, which is then
(G H, V)), optionally through a learned embedding E (D, V) as the vanilla engine, or
real-valued (T, B, D).

The carried state is a tuple: ``(h,)`` for the GRU, ``(h, c)`` for the LSTM, each (B, H).
Truncated BPTT: the state carries forward between chunks, the gradient does not flow into it.

``freeze_whh`` freezes every recurrent block (all of weight_hh_l0; the biases still train,
as the vanilla cell's b_h does): its gradient is exactly zero and out of the clipping norm.

Diagnostics, one meaning for every cell, the state being s_t = h_t (GRU) or s_t = (h_t, c_t)
(LSTM), s_t = F(s_{t-1}, x_t), L = sum_t l_t(h_t):

- ``per_step_grad_norm[t-1] = ||dL/ds_t||`` for t = 1..T, over (B, state) together, where
  dL/ds_t is the gradient with respect to the state as the argument of everything after it:
  for the LSTM (dL/dh_t, dL/dc_t) with dL/dc_t the partial through c_{t+1} alone (h_t is a
  coordinate of the state, not a function of c_t; so dL/dc_T = 0). This is the quantity the
  Jacobian products carry: dL/ds_{t-1} = dl_{t-1}/ds_{t-1} + dL/ds_t J_t.
- ``last_loss_grad_norm[t-1] = ||dl_T/ds_t||``: the last step's loss alone pushed back
  (starts at (W_hy^T dl_T/do_T, 0) at t = T).
- ``jacobian_products``: J_t = ds_t/ds_{t-1} (H x H for the GRU, 2H x 2H over the stacked
  (h, c) for the LSTM, rows and columns ordered [h | c]); P_k = J_T ... J_{T-k+1} =
  ds_T/ds_{T-k}; spectral norms of J and P and spectral radius of P against the lag k.
- ``saturation``: fraction of update gates z (GRU) / forget gates f (LSTM) within 0.05 of 0
  or 1; ``gate_saturation`` gives every gate (the tanh candidate: within 0.05 of -1 or 1).
- ``spectral_radii``: of each gate's H x H recurrent block.

Speed: the input projections of all t are one matmul (or one gather for one-hot inputs)
before the loop; sigmoid and tanh gates share np.tanh calls through sigmoid(a) = 0.5 + 0.5
tanh(a / 2), the halving folded into pre-scaled copies of the weights (scaling by 0.5 is
exact in binary floating point): 12 NumPy calls per forward step for the GRU, 10 for the
LSTM, all in place. Everything a backward step needs that does not depend on the incoming
gradient (gate derivatives and their products) is computed for all t in a few contiguous
vectorised calls before the loop, so the backward loop is 4 (GRU) or 5 (LSTM) calls per step.
Large temporaries that never leave a call are reused scratch buffers (see _scratch_array).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from rnn_lab.core.engine import (  # the vanilla engine's fast-call and flat-buffer helpers
    Gradients,
    NamedParams,
    _dot,
    _flat_layout,
    _is_index_input,
    _matmul_rows,
)
from rnn_lab.core.engine import flat_views as _engine_flat_views
from rnn_lab.core.engine import pack as engine_pack

SATURATION_MARGIN = 0.05

# Scratch buffers for the large temporaries that never leave a call (the backward's gate
# coefficients and step results, the GRU forward's h W_hh^T). A fresh multi-megabyte array
# is fresh pages from the kernel on every call: at H=256, B=32, T=50 that first touch cost
# ~8 ms per LSTM backward (of ~35). Reusing one buffer per name and thread avoids it; small
# arrays come from NumPy's own cache anyway and are allocated as usual.
_SCRATCH_MIN_SIZE = 1 << 15
_scratch = threading.local()


def _scratch_array(name: str, shape: tuple, dtype) -> np.ndarray:
    """An uninitialised array for a temporary that does not outlive the call."""
    if math.prod(shape) < _SCRATCH_MIN_SIZE:
        return np.empty(shape, dtype=dtype)
    buffers = getattr(_scratch, "buffers", None)
    if buffers is None:
        buffers = _scratch.buffers = {}
    a = buffers.get(name)
    if a is None or a.shape != shape or a.dtype != dtype:
        a = buffers[name] = np.empty(shape, dtype=dtype)
    return a


# --------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------

PARAM_NAMES = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "W_hy", "b_y")
# Order in the flat buffer: the recurrent weights last, so frozen ones are the untouched tail.
FLAT_ORDER = ("weight_ih_l0", "bias_ih_l0", "bias_hh_l0", "W_hy", "b_y", "E", "weight_hh_l0")


@dataclass
class _GatedParams(NamedParams):
    """Torch-named arrays of one gated layer plus the output layer (and an embedding).

    weight_ih_l0 is (G H, V) for one-hot inputs (a character selects a column), (G H, D)
    with the embedding E (D, V) or for real-valued inputs of width D.
    """

    weight_ih_l0: np.ndarray  # (G H, V) or (G H, D)
    weight_hh_l0: np.ndarray  # (G H, H)
    bias_ih_l0: np.ndarray  # (G H,)
    bias_hh_l0: np.ndarray  # (G H,)
    W_hy: np.ndarray  # (O, H)
    b_y: np.ndarray  # (O,)
    E: np.ndarray | None = None  # (D, V) learned input embedding, optional
    flat: np.ndarray | None = field(default=None, repr=False)

    PARAM_NAMES: ClassVar[tuple[str, ...]] = PARAM_NAMES
    FLAT_ORDER: ClassVar[tuple[str, ...]] = FLAT_ORDER
    RECURRENT: ClassVar[str] = "weight_hh_l0"
    cell: ClassVar[str] = ""
    gate_names: ClassVar[tuple[str, ...]] = ()

    def recurrent_blocks(self) -> dict[str, np.ndarray]:
        """Each gate's H x H recurrent block, as views of weight_hh_l0."""
        H = self.hidden_size
        return {g: self.weight_hh_l0[k * H : (k + 1) * H] for k, g in enumerate(self.gate_names)}


@dataclass
class GRUParams(_GatedParams):
    cell: ClassVar[str] = "gru"
    gate_names: ClassVar[tuple[str, ...]] = ("r", "z", "n")


@dataclass
class LSTMParams(_GatedParams):
    cell: ClassVar[str] = "lstm"
    gate_names: ClassVar[tuple[str, ...]] = ("i", "f", "g", "o")


def _params_layout(params: _GatedParams) -> tuple[tuple, int]:
    return _flat_layout(
        tuple((n, getattr(params, n).shape) for n in FLAT_ORDER if getattr(params, n) is not None)
    )


def flat_views(flat: np.ndarray, shapes: dict[str, tuple]) -> dict[str, np.ndarray]:
    """Split a flat buffer into named views of the given shapes, in this module's FLAT_ORDER."""
    return _engine_flat_views(flat, shapes, FLAT_ORDER)


pack = engine_pack  # one packing for every cell (views in the class's FLAT_ORDER)


# --------------------------------------------------------------------------------------
# Forward
# --------------------------------------------------------------------------------------


@dataclass
class GatedCache:
    """What the backward pass and the diagnostics need from the forward pass."""

    cell: str
    inputs: np.ndarray  # (T, B) int indices or (T, B, D) real-valued inputs
    x_embedded: np.ndarray | None  # (T, B, D) = E[:, idx] when an embedding is used
    hs: np.ndarray  # (T+1, B, H): hs[0] = h_0 (carried in), hs[t] = h_t
    gates: np.ndarray  # (T, B, G H) gate values (after their nonlinearity), torch's order
    logits: np.ndarray  # (T, B, O)
    hn: np.ndarray | None = None  # GRU: (T, B, H) W_hn h_{t-1} + b_hn (what r multiplies)
    cs: np.ndarray | None = None  # LSTM: (T+1, B, H) c_0 .. c_T
    tanh_c: np.ndarray | None = None  # LSTM: (T, B, H) tanh(c_t) for t = 1..T

    @property
    def h_last(self) -> np.ndarray:
        return self.hs[-1]

    @property
    def final_state(self) -> tuple[np.ndarray, ...]:
        """The state to carry into the next chunk: (h_T,) or (h_T, c_T) (views: copy them
        if this cache's arrays may be reused)."""
        if self.cs is not None:
            return (self.hs[-1], self.cs[-1])
        return (self.hs[-1],)

    def gate(self, name: str) -> np.ndarray:
        """(T, B, H) values of one gate by its torch letter (r, z, n or i, f, g, o)."""
        names = CELLS[self.cell].gate_names
        if name not in names:
            raise ValueError(f"gate: {self.cell} has gates {', '.join(names)}, not {name!r}")
        H = self.hs.shape[-1]
        k = names.index(name)
        return self.gates[..., k * H : (k + 1) * H]


def input_projection(params: _GatedParams, inputs: np.ndarray, out: np.ndarray | None = None):
    """x_t W_ih^T for every t at once: (T, B, G H), into ``out`` or a fresh array; and
    x_embedded (T, B, D) or None."""
    W_ih = params.weight_ih_l0
    if out is None:
        out = np.empty(inputs.shape[:2] + W_ih.shape[:1], dtype=W_ih.dtype)
    if _is_index_input(inputs):
        if params.E is None:
            # Column lookup = W_ih @ one_hot(idx), gathered from rows of a contiguous W_ih^T.
            # mode="clip" writes straight into out (mode="raise" would buffer a copy), so the
            # bounds are checked here.
            V = W_ih.shape[1]
            if inputs.size and (inputs.max() >= V or inputs.min() < 0):
                raise IndexError(
                    f"input indices must lie in [0, {V}) (weight_ih_l0 has {V} columns)"
                )
            np.take(np.ascontiguousarray(W_ih.T), inputs, axis=0, out=out, mode="clip")
            return out, None
        x_embedded = params.E.T[inputs]  # (T, B, D)
    else:
        x_embedded = None
    x = inputs if x_embedded is None else x_embedded
    _dot(x.reshape(-1, x.shape[-1]), W_ih.T, out=out.reshape(-1, out.shape[-1]))
    return out, x_embedded


def _check_state(params: _GatedParams, inputs: np.ndarray, state) -> tuple[np.ndarray, ...]:
    n_state = 2 if params.cell == "lstm" else 1
    if isinstance(state, np.ndarray) and state.ndim == 2:
        state = (state,)
    state = tuple(state)
    if len(state) != n_state:
        names = "(h0, c0)" if n_state == 2 else "(h0,)"
        raise ValueError(f"{params.cell}: the carried state is {names}, got {len(state)} arrays")
    H = params.hidden_size
    B = inputs.shape[1]
    for s in state:
        if s.shape != (B, H):
            raise ValueError(
                f"{params.cell}: each state array must be (B, H) = ({B}, {H}), got {s.shape}"
            )
    return state


def _output_layer(params: _GatedParams, hs: np.ndarray) -> np.ndarray:
    logits = _matmul_rows(hs[1:], params.W_hy.T)
    logits += params.b_y
    return logits


def _gru_forward(params: GRUParams, inputs: np.ndarray, state) -> GatedCache:
    (h0,) = _check_state(params, inputs, state)
    T, (B, H), dt = inputs.shape[0], h0.shape, params.dtype
    H2 = 2 * H
    b_hh = params.bias_hh_l0
    xw, x_embedded = input_projection(  # (T, B, 3H), a scratch buffer
        params, inputs, _scratch_array("xw", (T, B, 3 * H), dt)
    )
    xw += params.bias_ih_l0
    # r, z: both biases folded in, and the halving of sigmoid(a) = 0.5 + 0.5 tanh(a / 2).
    xw[..., :H2] += b_hh[:H2]
    xw[..., :H2] *= 0.5
    W_T = params.weight_hh_l0.T.copy()  # (H, 3H)
    W_T[:, :H2] *= 0.5
    b_hn = b_hh[H2:]

    hs = np.empty((T + 1, B, H), dtype=dt)
    hs[0] = h0
    gates = np.empty((T, B, 3 * H), dtype=dt)  # [r | z | n]
    hw = _scratch_array("gru_hw", (T, B, 3 * H), dt)  # h_{t-1} W_hh^T (r, z blocks halved)
    hn_all = np.empty((T, B, H), dtype=dt)  # W_hn h_{t-1} + b_hn, kept for the backward
    if B == 1:  # 1-D rows: gemv, cheaper calls
        v_hs, v_g, v_hw, v_xw, v_hn = hs[:, 0], gates[:, 0], hw[:, 0], xw[:, 0], hn_all[:, 0]
    else:
        v_hs, v_g, v_hw, v_xw, v_hn = hs, gates, hw, xw, hn_all
    dot, add, mul, sub, tanh = _dot, np.add, np.multiply, np.subtract, np.tanh
    for h_prev, h_t, hw_t, hwrz, hwn, hn, rz, r, z, n, xrz, xn in zip(
        v_hs,
        v_hs[1:],
        v_hw,
        v_hw[..., :H2],
        v_hw[..., H2:],
        v_hn,
        v_g[..., :H2],
        v_g[..., :H],
        v_g[..., H:H2],
        v_g[..., H2:],
        v_xw[..., :H2],
        v_xw[..., H2:],
    ):
        dot(h_prev, W_T, out=hw_t)  # [W_hr h / 2, W_hz h / 2, W_hn h]
        add(hwrz, xrz, out=rz)  # a_r / 2, a_z / 2
        tanh(rz, out=rz)
        mul(rz, 0.5, out=rz)
        add(rz, 0.5, out=rz)  # r, z
        add(hwn, b_hn, out=hn)  # W_hn h + b_hn
        mul(hn, r, out=n)
        add(n, xn, out=n)
        tanh(n, out=n)  # n
        sub(h_prev, n, out=h_t)
        mul(h_t, z, out=h_t)
        add(h_t, n, out=h_t)  # h' = n + z (h - n) = (1 - z) n + z h
    return GatedCache(
        cell="gru",
        inputs=inputs,
        x_embedded=x_embedded,
        hs=hs,
        gates=gates,
        logits=_output_layer(params, hs),
        hn=hn_all,
    )


def _lstm_gate_scale(H: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Per-column scale and shift over [i | f | g | o]: 0.5 / 0.5 on the sigmoid gates (so
    0.5 + 0.5 tanh(a / 2) = sigmoid(a)), 1 / 0 on the tanh gate g (exact no-ops)."""
    scale = np.full(4 * H, 0.5, dtype=dtype)
    scale[2 * H : 3 * H] = 1.0
    shift = np.full(4 * H, 0.5, dtype=dtype)
    shift[2 * H : 3 * H] = 0.0
    return scale, shift


def _lstm_forward(params: LSTMParams, inputs: np.ndarray, state) -> GatedCache:
    h0, c0 = _check_state(params, inputs, state)
    T, (B, H), dt = inputs.shape[0], h0.shape, params.dtype
    scale, shift = _lstm_gate_scale(H, dt)
    xw, x_embedded = input_projection(  # (T, B, 4H), a scratch buffer
        params, inputs, _scratch_array("xw", (T, B, 4 * H), dt)
    )
    xw += params.bias_ih_l0 + params.bias_hh_l0
    xw *= scale
    W_T = params.weight_hh_l0.T * scale  # (H, 4H) (F-ordered: BLAS takes it as it is)

    hs = np.empty((T + 1, B, H), dtype=dt)
    cs = np.empty((T + 1, B, H), dtype=dt)
    hs[0], cs[0] = h0, c0
    gates = np.empty((T, B, 4 * H), dtype=dt)  # [i | f | g | o]
    tanh_c = np.empty((T, B, H), dtype=dt)
    if B == 1:
        v_hs, v_cs, v_g, v_xw, v_tc = hs[:, 0], cs[:, 0], gates[:, 0], xw[:, 0], tanh_c[:, 0]
    else:
        v_hs, v_cs, v_g, v_xw, v_tc = hs, cs, gates, xw, tanh_c
    ig = np.empty_like(v_hs[0])
    H2, H3 = 2 * H, 3 * H
    dot, add, mul, tanh = _dot, np.add, np.multiply, np.tanh
    for h_prev, h_t, c_prev, c_t, g_t, x_t, i, f, g, o, tc in zip(
        v_hs,
        v_hs[1:],
        v_cs,
        v_cs[1:],
        v_g,
        v_xw,
        v_g[..., :H],
        v_g[..., H:H2],
        v_g[..., H2:H3],
        v_g[..., H3:],
        v_tc,
    ):
        dot(h_prev, W_T, out=g_t)
        add(g_t, x_t, out=g_t)  # a / 2 on i, f, o; a on g
        tanh(g_t, out=g_t)
        mul(g_t, scale, out=g_t)
        add(g_t, shift, out=g_t)  # i, f, g, o
        mul(f, c_prev, out=c_t)
        mul(i, g, out=ig)
        add(c_t, ig, out=c_t)  # c' = f c + i g
        tanh(c_t, out=tc)
        mul(o, tc, out=h_t)  # h' = o tanh(c')
    return GatedCache(
        cell="lstm",
        inputs=inputs,
        x_embedded=x_embedded,
        hs=hs,
        gates=gates,
        logits=_output_layer(params, hs),
        cs=cs,
        tanh_c=tanh_c,
    )


# --------------------------------------------------------------------------------------
# Backward (BPTT)
# --------------------------------------------------------------------------------------
#
# Both cells reduce the step to "gate coefficients" A (computed for all t before the loop):
# with dh = dL/dh_t, every pre-activation gradient of the step is dh * A_k (or, for the
# LSTM, dc * A_k with dc = dL/dc_t), so the loop only multiplies, makes one matmul with
# weight_hh_l0 and adds. The per-step results land in one array D whose blocks (of H
# columns) are then mapped onto weight_ih_l0 / weight_hh_l0 rows by "runs":
# (first block, end block, first gate row) triples.


def _gru_coefficients(r, z, n, hn, h_prev, out) -> None:
    """out[k], k = 0..4: A_r, A_z, A_hn, A_n, z, so that with dh = dL/dh_t:

    da_r = dh A_r,  da_z = dh A_z,  d(W_hn h + b_hn) = dh A_hn,  da_n = dh A_n, and dh z is
    the direct path into h_{t-1}. Any shape (all t, or one (t, b)); fastest when every array
    is contiguous (strided ufunc calls cost ~3x more at the seed's sizes).
    """
    A_r, A_z, A_hn, A_n, Z = out
    np.multiply(n, n, out=A_n)
    np.subtract(1.0, A_n, out=A_n)  # 1 - n^2
    np.subtract(1.0, z, out=Z)
    np.multiply(A_n, Z, out=A_n)  # dh'/da_n = (1 - z)(1 - n^2)
    np.multiply(A_n, r, out=A_hn)
    np.subtract(1.0, r, out=A_r)
    np.multiply(A_r, r, out=A_r)
    np.multiply(A_r, hn, out=A_r)
    np.multiply(A_r, A_n, out=A_r)  # (1 - z)(1 - n^2) (W_hn h + b_hn) r (1 - r)
    np.multiply(Z, z, out=Z)  # z (1 - z)
    np.subtract(h_prev, n, out=A_z)
    np.multiply(A_z, Z, out=A_z)  # (h - n) z (1 - z)
    np.copyto(Z, z)


def _lstm_coefficients(i, f, g, o, tanh_c, c_prev, out_h, out_c) -> None:
    """out_h = [K, A_o], out_c = [A_i, A_f, A_g, f], so that with dh = dL/dh_t and
    dc_state = dL/dc_t through c_{t+1} only:

    dc = dc_state + dh K (the total dL/dc_t),  da_o = dh A_o,
    da_i = dc A_i,  da_f = dc A_f,  da_g = dc A_g,  dL/dc_{t-1} (state) = dc f.
    """
    K, A_o = out_h
    A_i, A_f, A_g, F_ = out_c
    np.multiply(tanh_c, tanh_c, out=K)
    np.subtract(1.0, K, out=K)
    np.multiply(K, o, out=K)  # o (1 - tanh(c)^2)
    np.subtract(1.0, o, out=A_o)
    np.multiply(A_o, o, out=A_o)
    np.multiply(A_o, tanh_c, out=A_o)  # tanh(c) o (1 - o)
    np.subtract(1.0, i, out=A_i)
    np.multiply(A_i, i, out=A_i)
    np.multiply(A_i, g, out=A_i)  # g i (1 - i)
    np.subtract(1.0, f, out=A_f)
    np.multiply(A_f, f, out=A_f)
    np.multiply(A_f, c_prev, out=A_f)  # c_{t-1} f (1 - f)
    np.multiply(g, g, out=A_g)
    np.subtract(1.0, A_g, out=A_g)
    np.multiply(A_g, i, out=A_g)  # i (1 - g^2)
    np.copyto(F_, f)


def _gate_major(gates: np.ndarray, n_gates: int) -> np.ndarray:
    """(T, B, G H) -> a contiguous (G, T, B, H) copy: one call, then contiguous gate blocks."""
    T, B, GH = gates.shape
    out = _scratch_array("gate_major", (n_gates, T, B, GH // n_gates), gates.dtype)
    np.copyto(out, gates.reshape(T, B, n_gates, -1).transpose(2, 0, 1, 3))
    return out


def _step_major(blocks: np.ndarray, name: str) -> np.ndarray:
    """(K, T, B, H) -> a contiguous (T, B, K, H) copy, the layout the backward loop reads."""
    K, T, B, H = blocks.shape
    out = _scratch_array(name, (T, B, K, H), blocks.dtype)
    np.copyto(out, blocks.transpose(1, 2, 0, 3))
    return out


def _gru_bptt(params: GRUParams, cache: GatedCache, dh: np.ndarray):
    """In place: on entry dh[t] = W_hy^T do_t; on return dh[t] = dL/dh_{t+1}. Returns the
    step results D (T, B, 5, H) = [da_r, da_z, dhn, da_n, dh z], the coefficients, and the
    per-step state-gradient squared norms over (B, H)."""
    T, B, H = dh.shape
    dt = dh.dtype
    A_blocks = _scratch_array("coef_blocks", (5, T, B, H), dt)
    _gru_coefficients(*_gate_major(cache.gates, 3), cache.hn, cache.hs[:-1], A_blocks)
    A = _step_major(A_blocks, "coef")  # (T, B, 5, H)
    D = _scratch_array("steps", (T, B, 5, H), dt)
    W_hh = params.weight_hh_l0  # (3H, H): da @ W_hh is W_hh^T da in row form
    H3 = 3 * H
    if B == 1:
        v_dh, v_A, v_D = dh[:, 0], A[:, 0], D[:, 0]  # (T, H), (T, 5, H)
        v_dhb = v_dh
    else:
        v_dh, v_A, v_D = dh, A, D
        v_dhb = dh[:, :, None, :]  # (T, B, 1, H) against (T, B, 5, H)
    v_Dh = v_D.reshape(v_D.shape[:-2] + (5 * H,))[..., :H3]  # [da_r, da_z, dhn] rows
    v_Dz = v_D[..., 4, :]
    buf = np.empty_like(v_dh[0])
    dot, add, mul = _dot, np.add, np.multiply
    for dh_t, A_t, D_t, Dh_t, Dz_t, dh_prev in zip(
        v_dhb[:0:-1], v_A[:0:-1], v_D[:0:-1], v_Dh[:0:-1], v_Dz[:0:-1], v_dh[-2::-1]
    ):
        mul(dh_t, A_t, out=D_t)  # every gate's gradient at once
        dot(Dh_t, W_hh, out=buf)  # W_hh^T [da_r, da_z, dhn]
        add(dh_prev, buf, out=dh_prev)
        add(dh_prev, Dz_t, out=dh_prev)  # + the direct path dh z
    mul(v_dhb[0], v_A[0], out=v_D[0])  # the first step: nothing flows into h_0
    sq = np.einsum("tbh,tbh->t", dh, dh)
    return D.reshape(T * B, 5 * H), A, sq


# Block runs of D onto gate rows: (first block, end block, first weight row block).
_GRU_X_RUNS = ((0, 2, 0), (3, 4, 2))  # [da_r, da_z] -> rows r, z; da_n -> rows n
_GRU_H_RUNS = ((0, 3, 0),)  # [da_r, da_z, dhn] -> rows r, z, n


def _lstm_bptt(params: LSTMParams, cache: GatedCache, dh: np.ndarray):
    """In place: on entry dh[t] = W_hy^T do_t; on return dh[t] = dL/dh_{t+1}. Returns D
    (T, B, 6, H) = [dc, da_o, da_i, da_f, da_g, dc_state_prev] with dc the total dL/dc_{t+1}
    and dc_state_prev = dL/dc_t through c_{t+1} (state partial), the coefficients, and the
    per-step squared norms of dL/ds_t = (dL/dh_t, dL/dc_t) over (B, 2H)."""
    T, B, H = dh.shape
    dt = dh.dtype
    Ah_blocks = _scratch_array("coef_blocks", (2, T, B, H), dt)
    Ac_blocks = _scratch_array("coef_blocks_c", (4, T, B, H), dt)
    gates = _gate_major(cache.gates, 4)
    _lstm_coefficients(*gates, cache.tanh_c, cache.cs[:-1], Ah_blocks, Ac_blocks)
    Ah = _step_major(Ah_blocks, "coef")  # (T, B, 2, H)
    Ac = _step_major(Ac_blocks, "coef_c")  # (T, B, 4, H)
    D = _scratch_array("steps", (T, B, 6, H), dt)
    W = params.weight_hh_l0
    H3 = 3 * H
    # Rows reordered [o | i | f | g] to match D's blocks 1..4 (one matmul per step).
    W_perm = np.concatenate([W[H3:], W[:H3]])
    if B == 1:
        v_dh, v_Ah, v_Ac, v_D = dh[:, 0], Ah[:, 0], Ac[:, 0], D[:, 0]
        v_dhb = v_dh
    else:
        v_dh, v_Ah, v_Ac, v_D = dh, Ah, Ac, D
        v_dhb = dh[:, :, None, :]
    v_D01 = v_D[..., 0:2, :]  # [dc, da_o] = dh [K, A_o]
    v_D0 = v_D[..., 0, :]
    v_D0k = v_D[..., 0:1, :]
    v_D25 = v_D[..., 2:6, :]  # [da_i, da_f, da_g, dc_state_prev] = dc [A_i, A_f, A_g, f]
    v_D5 = v_D[..., 5, :]
    v_Dh = v_D.reshape(v_D.shape[:-2] + (6 * H,))[..., H : 5 * H]  # [da_o, da_i, da_f, da_g]
    buf = np.empty_like(v_dh[0])
    dot, add, mul = _dot, np.add, np.multiply

    # The last step: no state gradient from the future (dL/dc_T = 0).
    mul(v_dhb[-1], v_Ah[-1], out=v_D01[-1])
    mul(v_D0k[-1], v_Ac[-1], out=v_D25[-1])
    if T > 1:
        dot(v_Dh[-1], W_perm, out=buf)
        add(v_dh[-2], buf, out=v_dh[-2])
        for dh_t, Ah_t, D01_t, D0_t, D0k_t, Ac_t, D25_t, dcs_next, Dh_t, dh_prev in zip(
            v_dhb[-2:0:-1],
            v_Ah[-2:0:-1],
            v_D01[-2:0:-1],
            v_D0[-2:0:-1],
            v_D0k[-2:0:-1],
            v_Ac[-2:0:-1],
            v_D25[-2:0:-1],
            v_D5[:1:-1],
            v_Dh[-2:0:-1],
            v_dh[-3::-1],
        ):
            mul(dh_t, Ah_t, out=D01_t)  # dh K, da_o
            add(D0_t, dcs_next, out=D0_t)  # dc = dL/dc_t, total
            mul(D0k_t, Ac_t, out=D25_t)  # da_i, da_f, da_g, dc f
            dot(Dh_t, W_perm, out=buf)
            add(dh_prev, buf, out=dh_prev)
        # The first step: nothing flows into (h_0, c_0).
        mul(v_dhb[0], v_Ah[0], out=v_D01[0])
        add(v_D0[0], v_D5[1], out=v_D0[0])
        mul(v_D0k[0], v_Ac[0], out=v_D25[0])
    sq = np.einsum("tbh,tbh->t", dh, dh)
    dcs = D[1:, :, 5]  # dL/dc_t (state partial) for t = 1..T-1
    sq[:-1] += np.einsum("tbh,tbh->t", dcs, dcs)
    return D.reshape(T * B, 6 * H), (Ah, Ac), sq


# [da_i, da_f, da_g] -> rows i, f, g; da_o -> rows o. The same for x and h.
_LSTM_RUNS = ((2, 5, 0), (1, 2, 3))


def _one_hot(index: np.ndarray, n: int, dtype) -> np.ndarray:
    one_hot = np.zeros((index.shape[0], n), dtype=dtype)
    one_hot[np.arange(index.shape[0]), index] = 1.0
    return one_hot


# Above this many (t, b) rows, a gradient D^T X is computed as (X^T D)^T: OpenBLAS is
# 1.5x (h side) to 4x (one-hot x side) faster that way at H=256, T*B=1600, float32, while
# at the seed's 25 rows the direct product into the output buffer is cheaper.
_TRANSPOSED_PRODUCT_ROWS = 256


def _run_dots(D, X, runs, H, out) -> None:
    """out[gate rows] = D[:, blocks]^T X for each (first block, end block, first row) run."""
    transposed = D.shape[0] > _TRANSPOSED_PRODUCT_ROWS
    for a, b, row in runs:
        block, rows = D[:, a * H : b * H], out[row * H : (row + b - a) * H]
        if transposed:
            rows[...] = _dot(X.T, block).T
        else:
            _dot(block.T, X, out=rows)


def _param_grads(params, cache, D, x_runs, h_runs, dlogits, freeze_whh):
    """Every parameter gradient as matmuls over all (t, b), written into one flat buffer."""
    H = params.hidden_size
    T, B, O = dlogits.shape
    N = T * B
    layout, total = _params_layout(params)
    gflat = np.empty(total, dtype=D.dtype)
    grads = {name: gflat[start:stop].reshape(shape) for name, start, stop, shape in layout}
    hs = cache.hs

    def blocks(a, b):
        return D[:, a * H : b * H]

    if freeze_whh:
        grads["weight_hh_l0"].fill(0.0)
    else:
        _run_dots(D, hs[:-1].reshape(N, H), h_runs, H, grads["weight_hh_l0"])
    col_sums = _dot(np.ones(N, dtype=D.dtype), D)
    for name, runs in (("bias_hh_l0", h_runs), ("bias_ih_l0", x_runs)):
        for a, b, row in runs:
            grads[name][row * H : (row + b - a) * H] = col_sums[a * H : b * H]
    do_flat = dlogits.reshape(N, O)
    _dot(do_flat.T, hs[1:].reshape(N, H), out=grads["W_hy"])
    _dot(np.ones(N, dtype=D.dtype), do_flat, out=grads["b_y"])

    inputs = cache.inputs
    W_ih = params.weight_ih_l0
    g_ih = grads["weight_ih_l0"]
    if _is_index_input(inputs) and params.E is None:
        X = _one_hot(inputs.reshape(-1), W_ih.shape[1], D.dtype)  # dW[:, v] sums over v's steps
    elif _is_index_input(inputs):
        X = cache.x_embedded.reshape(N, -1)
    else:
        X = inputs.reshape(N, -1)
    _run_dots(D, X, x_runs, H, g_ih)
    if params.E is not None:
        dx = sum(_dot(blocks(a, b), W_ih[row * H : (row + b - a) * H]) for a, b, row in x_runs)
        one_hot = _one_hot(inputs.reshape(-1), params.E.shape[1], D.dtype)
        _dot(dx.T, one_hot, out=grads["E"])
    return gflat, grads


def _clip(gflat: np.ndarray, clip: float, clip_mode: str) -> tuple[float, bool, float]:
    """Global-norm or element-wise clipping in place, as engine.backward does."""
    total_norm = float(np.sqrt(_dot(gflat, gflat)))
    clipped, clip_ratio = False, 1.0
    if clip_mode not in ("norm", "value"):
        raise ValueError(f"clip_mode: unknown {clip_mode!r}; valid: norm, value")
    if clip > 0:
        if clip_mode == "norm":
            if total_norm > clip:
                clipped, clip_ratio = True, clip / total_norm
                gflat *= clip_ratio
        elif float(np.abs(gflat).max()) > clip:
            clipped = True
            np.clip(gflat, -clip, clip, out=gflat)
            after = float(np.sqrt(_dot(gflat, gflat)))
            clip_ratio = after / total_norm if total_norm > 0 else 1.0
    return total_norm, clipped, clip_ratio


def _gru_last_loss_profile(dh_T, A, gates, W_hh) -> np.ndarray:
    """||dl_T/dh_t|| for t = 1..T: the last step's loss pushed back alone."""
    T = A.shape[0]
    H = dh_T.shape[-1]
    out = np.empty(T)
    g = dh_T
    for t in range(T - 1, -1, -1):
        out[t] = np.sqrt(np.vdot(g, g))
        if t == 0:
            break
        da = (g[:, None, :] * A[t, :, :3]).reshape(g.shape[0], 3 * H)  # [da_r, da_z, dhn]
        g = g * gates[t, :, H : 2 * H] + da @ W_hh
    return out


def _lstm_last_loss_profile(dh_T, Ah, Ac, W_hh) -> np.ndarray:
    """||dl_T/ds_t|| over s_t = (h_t, c_t) for t = 1..T (dl_T/dc_T = 0)."""
    T = Ah.shape[0]
    out = np.empty(T)
    gh, gc = dh_T, np.zeros_like(dh_T)
    for t in range(T - 1, -1, -1):
        out[t] = np.sqrt(np.vdot(gh, gh) + np.vdot(gc, gc))
        if t == 0:
            break
        dc = gc + gh * Ah[t, :, 0]
        da = np.concatenate(  # torch order [i, f, g, o]
            [dc * Ac[t, :, 0], dc * Ac[t, :, 1], dc * Ac[t, :, 2], gh * Ah[t, :, 1]], axis=-1
        )
        gc = dc * Ac[t, :, 3]
        gh = da @ W_hh
    return out


def backward(
    params: _GatedParams,
    cache: GatedCache,
    dlogits: np.ndarray,
    *,
    freeze_whh: bool = False,
    clip: float = 0.0,
    clip_mode: str = "norm",
    profile: bool = False,
) -> Gradients:
    """BPTT through one chunk given dL/do_t (T, B, O), as engine.backward.

    Returns engine.Gradients: grads by torch name (and W_hy, b_y, E) in one flat buffer laid
    out as ``pack(params).flat``; total_norm before clipping (weight_hh_l0 left out when
    frozen); per_step_grad_norm = ||dL/ds_t||; with profile, last_loss_grad_norm =
    ||dl_T/ds_t|| and each parameter's gradient norm before clipping. No gradient flows into
    the carried state.
    """
    cell = _cell_of(params)
    dh = _matmul_rows(dlogits, params.W_hy)  # (T, B, H) W_hy^T do_t, becomes dL/dh_t
    dh_out_last = dh[-1].copy() if profile else None
    if cell.name == "gru":
        D, coeffs, sq = _gru_bptt(params, cache, dh)
        x_runs, h_runs = _GRU_X_RUNS, _GRU_H_RUNS
    else:
        D, coeffs, sq = _lstm_bptt(params, cache, dh)
        x_runs = h_runs = _LSTM_RUNS
    gflat, grads = _param_grads(params, cache, D, x_runs, h_runs, dlogits, freeze_whh)
    param_grad_norms = None
    if profile:
        param_grad_norms = {n: float(np.sqrt(np.vdot(g, g))) for n, g in grads.items()}
    total_norm, clipped, clip_ratio = _clip(gflat, clip, clip_mode)
    last_profile = None
    if profile:
        if cell.name == "gru":
            last_profile = _gru_last_loss_profile(
                dh_out_last, coeffs, cache.gates, params.weight_hh_l0
            )
        else:
            last_profile = _lstm_last_loss_profile(dh_out_last, *coeffs, params.weight_hh_l0)
    return Gradients(
        grads=grads,
        flat=gflat,
        total_norm=total_norm,
        clipped=clipped,
        clip_ratio=clip_ratio,
        per_step_grad_norm=np.sqrt(sq),
        last_loss_grad_norm=last_profile,
        param_grad_norms=param_grad_norms,
    )


def forward(params: _GatedParams, inputs: np.ndarray, state) -> GatedCache:
    """Run the cell over one chunk. inputs: (T, B) int or (T, B, D) float; state: (h0,) for
    the GRU (a bare (B, H) array is accepted), (h0, c0) for the LSTM, carried in."""
    return _cell_of(params).forward(params, inputs, state)


# --------------------------------------------------------------------------------------
# Diagnostics
# --------------------------------------------------------------------------------------


def step_jacobian(params: _GatedParams, cache: GatedCache, t: int, b: int = 0) -> np.ndarray:
    """J_t = ds_t/ds_{t-1} for step t = 1..T of stream b: (H, H) for the GRU, (2H, 2H) for
    the LSTM over the stacked state [h | c]."""
    T = cache.gates.shape[0]
    if not 1 <= t <= T:
        raise ValueError(f"step_jacobian: t must be in 1..{T}, got {t}")
    H = params.hidden_size
    blocks = params.recurrent_blocks()
    k = t - 1  # index of the step in the cache's (T, ...) arrays
    if params.cell == "gru":
        A = np.empty((5, H), dtype=params.dtype)
        _gru_coefficients(*cache.gates[k, b].reshape(3, H), cache.hn[k, b], cache.hs[k, b], A)
        A_r, A_z, A_hn, _, z = A
        J = A_r[:, None] * blocks["r"] + A_z[:, None] * blocks["z"] + A_hn[:, None] * blocks["n"]
        J[np.diag_indices(H)] += z
        return J
    Ah = np.empty((2, H), dtype=params.dtype)
    Ac = np.empty((4, H), dtype=params.dtype)
    gates = cache.gates[k, b].reshape(4, H)
    _lstm_coefficients(*gates, cache.tanh_c[k, b], cache.cs[k, b], Ah, Ac)
    K, A_o = Ah
    A_i, A_f, A_g, f = Ac
    dc_dh = A_i[:, None] * blocks["i"] + A_f[:, None] * blocks["f"] + A_g[:, None] * blocks["g"]
    J = np.zeros((2 * H, 2 * H), dtype=params.dtype)
    J[:H, :H] = A_o[:, None] * blocks["o"] + K[:, None] * dc_dh  # dh_t/dh_{t-1}
    J[:H, H:] = np.diag(K * f)  # dh_t/dc_{t-1}
    J[H:, :H] = dc_dh  # dc_t/dh_{t-1}
    J[H:, H:] = np.diag(f)  # dc_t/dc_{t-1}
    return J


def jacobian_products(
    params: _GatedParams, cache: GatedCache, lags: int, b: int = 0
) -> dict[str, np.ndarray]:
    """P_k = J_T ... J_{T-k+1} = ds_T/ds_{T-k} for k = 1..lags (capped at T), stream b.

    The same keys as engine.jacobian_products: the spectral norm of the step J_{T-k+1} that
    joins the product at lag k, and the spectral norm and spectral radius of P_k.
    """
    T = cache.gates.shape[0]
    lags = min(lags, T)
    step_norm, product_norm, product_radius = np.empty(lags), np.empty(lags), np.empty(lags)
    product = None
    for k in range(1, lags + 1):
        J = step_jacobian(params, cache, T - k + 1, b)
        product = J if product is None else product @ J
        step_norm[k - 1] = np.linalg.norm(J, 2)
        product_norm[k - 1] = np.linalg.norm(product, 2)
        product_radius[k - 1] = np.max(np.abs(np.linalg.eigvals(product)))
    return {
        "jacobian_step_norm": step_norm,
        "jacobian_product_norm": product_norm,
        "jacobian_product_radius": product_radius,
    }


def gate_saturation(cache: GatedCache) -> dict[str, float]:
    """Per gate, the fraction of (t, b, unit) values within 0.05 of the bounds of its range:
    0 or 1 for the sigmoid gates, -1 or 1 for the tanh candidate (n or g)."""
    out = {}
    for name in CELLS[cache.cell].gate_names:
        v = cache.gate(name)
        low = -1.0 if name in ("n", "g") else 0.0
        near = (v - low < SATURATION_MARGIN) | (1.0 - v < SATURATION_MARGIN)
        out[name] = float(np.mean(near))
    return out


def saturation(cache: GatedCache) -> float:
    """Fraction of update gates z (GRU) or forget gates f (LSTM) within 0.05 of 0 or 1."""
    return gate_saturation(cache)[CELLS[cache.cell].memory_gate]


def zero_state(cell: str, batch_size: int, hidden_size: int, dtype=np.float64):
    """The initial carried state: (h0,) or (h0, c0), zeros of (B, H)."""
    n = 2 if get_cell(cell).name == "lstm" else 1
    return tuple(np.zeros((batch_size, hidden_size), dtype=dtype) for _ in range(n))


def check_activation(cell: str, activation: str) -> None:
    """Gated cells use tanh on their candidate (and, for the LSTM, on c), as torch does."""
    if activation != "tanh":
        raise ValueError(
            f"activation={activation!r} with cell={cell}: the gated cells use tanh on the "
            "candidate state (torch.nn.GRU/LSTM's fixed choice); only activation=tanh applies"
        )


# --------------------------------------------------------------------------------------
# torch interop
# --------------------------------------------------------------------------------------


def to_torch(params: _GatedParams, dtype=None):
    """(torch.nn.GRU or LSTM (D, H), torch.nn.Linear(H, O)) holding these weights (float64
    unless dtype says otherwise). The embedding E, if any, is not part of them."""
    import torch

    dtype = dtype or torch.float64
    G, D = params.weight_ih_l0.shape
    H, O = params.hidden_size, params.W_hy.shape[0]
    module_cls = torch.nn.GRU if params.cell == "gru" else torch.nn.LSTM
    rnn = module_cls(D, H).to(dtype)
    head = torch.nn.Linear(H, O).to(dtype)
    with torch.no_grad():
        rnn.load_state_dict({n: torch.tensor(getattr(params, n)) for n in PARAM_NAMES[:4]})
        head.load_state_dict(
            {"weight": torch.tensor(params.W_hy), "bias": torch.tensor(params.b_y)}
        )
    return rnn, head


def from_torch(rnn, head, E=None, dtype=np.float64) -> _GatedParams:
    """Parameters from a one-layer torch.nn.GRU / nn.LSTM and an nn.Linear output layer."""
    import torch

    cell = "gru" if isinstance(rnn, torch.nn.GRU) else "lstm"
    if not isinstance(rnn, torch.nn.GRU | torch.nn.LSTM) or rnn.num_layers != 1:
        raise ValueError("from_torch: a one-layer torch.nn.GRU or torch.nn.LSTM is needed")
    if rnn.bidirectional or not rnn.bias or getattr(rnn, "proj_size", 0):
        raise ValueError("from_torch: unidirectional, with biases, no projection")
    arrays = {n: getattr(rnn, n).detach().numpy().astype(dtype) for n in PARAM_NAMES[:4]}
    arrays["W_hy"] = head.weight.detach().numpy().astype(dtype)
    arrays["b_y"] = head.bias.detach().numpy().astype(dtype)
    if E is not None:
        arrays["E"] = np.asarray(E, dtype=dtype)
    return CELLS[cell].params_cls(**arrays)


# --------------------------------------------------------------------------------------
# The cells
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    name: str
    params_cls: type
    gate_names: tuple[str, ...]
    state_names: tuple[str, ...]
    memory_gate: str  # the gate whose saturation `saturation` reports
    forward: Callable[..., GatedCache]

    @property
    def n_gates(self) -> int:
        return len(self.gate_names)

    def zero_state(self, batch_size: int, hidden_size: int, dtype=np.float64):
        return zero_state(self.name, batch_size, hidden_size, dtype)


GRU = Cell("gru", GRUParams, GRUParams.gate_names, ("h",), "z", _gru_forward)
LSTM = Cell("lstm", LSTMParams, LSTMParams.gate_names, ("h", "c"), "f", _lstm_forward)
CELLS: dict[str, Cell] = {"gru": GRU, "lstm": LSTM}


def get_cell(name: str) -> Cell:
    try:
        return CELLS[name]
    except KeyError:
        raise ValueError(f"cell: unknown name {name!r}; valid: {', '.join(CELLS)}") from None


def _cell_of(params) -> Cell:
    try:
        return CELLS[params.cell]
    except (AttributeError, KeyError):
        raise TypeError(f"expected GRUParams or LSTMParams, got {type(params).__name__}") from None
