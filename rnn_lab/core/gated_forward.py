"""GRU and LSTM cells, forward: the parameters (torch's names and layout), the forward pass
over a chunk and the cells' registry. The public face of the gated cells, with the
conventions, is :mod:`rnn_lab.core.gated`; the backward pass is :mod:`rnn_lab.core.gated_backward`.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from rnn_lab.core.engine import (  # the vanilla engine's fast-call and flat-buffer helpers
    NamedParams,
    _dot,
    _flat_layout,
    _is_index_input,
    _matmul_rows,
)
from rnn_lab.core.engine import flat_views as _engine_flat_views
from rnn_lab.core.engine import pack as engine_pack

# Scratch buffers for the large temporaries that never leave a call (the backward's gate
# coefficients and step results, the GRU forward's h W_hh^T). A fresh multi-megabyte array
# is fresh pages from the kernel on every call: at H=256, B=32, T=50 that first touch cost
# ~8 ms per LSTM backward (of ~35). Reusing one buffer per name and thread avoids it; small
# arrays come from NumPy's own cache anyway and are allocated as usual.
_SCRATCH_MIN_SIZE = 1 << 15
_scratch = threading.local()


def scratch_array(name: str, shape: tuple, dtype) -> np.ndarray:
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
class GatedParams(NamedParams):
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
class GRUParams(GatedParams):
    cell: ClassVar[str] = "gru"
    gate_names: ClassVar[tuple[str, ...]] = ("r", "z", "n")


@dataclass
class LSTMParams(GatedParams):
    cell: ClassVar[str] = "lstm"
    gate_names: ClassVar[tuple[str, ...]] = ("i", "f", "g", "o")


def params_layout(params: GatedParams) -> tuple[tuple, int]:
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


def input_projection(params: GatedParams, inputs: np.ndarray, out: np.ndarray | None = None):
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


def _check_state(params: GatedParams, inputs: np.ndarray, state) -> tuple[np.ndarray, ...]:
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


def _output_layer(params: GatedParams, hs: np.ndarray) -> np.ndarray:
    logits = _matmul_rows(hs[1:], params.W_hy.T)
    logits += params.b_y
    return logits


def _gru_forward(params: GRUParams, inputs: np.ndarray, state) -> GatedCache:
    (h0,) = _check_state(params, inputs, state)
    T, (B, H), dt = inputs.shape[0], h0.shape, params.dtype
    H2 = 2 * H
    b_hh = params.bias_hh_l0
    xw, x_embedded = input_projection(  # (T, B, 3H), a scratch buffer
        params, inputs, scratch_array("xw", (T, B, 3 * H), dt)
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
    hw = scratch_array("gru_hw", (T, B, 3 * H), dt)  # h_{t-1} W_hh^T (r, z blocks halved)
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
        params, inputs, scratch_array("xw", (T, B, 4 * H), dt)
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


def forward(params: GatedParams, inputs: np.ndarray, state) -> GatedCache:
    """Run the cell over one chunk. inputs: (T, B) int or (T, B, D) float; state: (h0,) for
    the GRU (a bare (B, H) array is accepted), (h0, c0) for the LSTM, carried in."""
    return cell_of(params).forward(params, inputs, state)


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


def cell_of(params) -> Cell:
    try:
        return CELLS[params.cell]
    except (AttributeError, KeyError):
        raise TypeError(f"expected GRUParams or LSTMParams, got {type(params).__name__}") from None
