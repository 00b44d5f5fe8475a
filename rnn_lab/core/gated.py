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
Large temporaries that never leave a call are reused scratch buffers (see
gated_forward.scratch_array).

The cells live in three modules: :mod:`rnn_lab.core.gated_forward` (parameters, forward, the
cells' registry), :mod:`rnn_lab.core.gated_backward` (BPTT, step Jacobians) and this one (the
public names of both, gate saturation, torch interop).
"""

from __future__ import annotations

import numpy as np

from rnn_lab.core.gated_backward import backward, jacobian_products, step_jacobian
from rnn_lab.core.gated_forward import (
    CELLS,
    FLAT_ORDER,
    GRU,
    LSTM,
    PARAM_NAMES,
    Cell,
    GatedCache,
    GatedParams,
    GRUParams,
    LSTMParams,
    check_activation,
    flat_views,
    forward,
    get_cell,
    input_projection,
    pack,
    zero_state,
)

__all__ = [
    "CELLS", "FLAT_ORDER", "GRU", "LSTM", "PARAM_NAMES", "SATURATION_MARGIN", "Cell",
    "GRUParams", "GatedCache", "GatedParams", "LSTMParams", "backward", "check_activation",
    "flat_views", "forward", "from_torch", "gate_saturation", "get_cell", "input_projection",
    "jacobian_products", "pack", "saturation", "step_jacobian", "to_torch", "zero_state",
]  # fmt: skip

SATURATION_MARGIN = 0.05


# --------------------------------------------------------------------------------------
# Diagnostics of a forward pass
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# torch interop
# --------------------------------------------------------------------------------------


def to_torch(params: GatedParams, dtype=None):
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


def from_torch(rnn, head, E=None, dtype=np.float64) -> GatedParams:
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
