"""What the recorded training dynamics (diagnostics.npz) say about the run's gradients, and
the gated cells' per-gate spectral radii at the checkpoint: the analysis's metrics that need
no text."""

from __future__ import annotations

import numpy as np

from rnn_lab.core import cells, engine


def gradient_fall(diagnostics: dict) -> dict:
    """How far the last step's loss gradient falls over the chunk: at each record step,
    ||dL_T/dh_T|| / ||dL_T/dh_1|| from last_loss_grad_norm (T = seq_len). gradient_fall_median:
    its median over the record steps; _first / _last: at the first (step 1, the untrained
    network) and the last record step. {} without a recorded profile."""
    g = diagnostics.get("last_loss_grad_norm") if diagnostics else None
    if g is None or np.ndim(g) != 2 or np.shape(g)[1] < 2 or len(g) == 0:
        return {}
    g = np.asarray(g, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        fall = g[:, -1] / g[:, 0]
    ok = np.isfinite(fall) & (fall > 0)
    if not ok.any():
        return {}
    return {
        "gradient_fall_median": float(np.median(fall[ok])),
        "gradient_fall_first": float(fall[0]) if ok[0] else None,
        "gradient_fall_last": float(fall[-1]) if ok[-1] else None,
    }


def gradient_decay(diagnostics: dict) -> dict:
    """The per-step factor of the last step's loss gradient over the chunk: the geometric
    mean (||dL_T/dh_1|| / ||dL_T/dh_T||)^(1/(T-1)), < 1 when it vanishes (0.5 = halves every
    step). A per-step factor, not the whole fall, because a fall over a chunk spans tens of
    orders of magnitude across arms and a t-interval over it says nothing. _first (step 1, the
    untrained network), _median (over record steps), _last."""
    g = diagnostics.get("last_loss_grad_norm") if diagnostics else None
    if g is None or np.ndim(g) != 2 or np.shape(g)[1] < 2 or len(g) == 0:
        return {}
    g = np.asarray(g, dtype=float)
    T = g.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        decay = np.exp((np.log(g[:, 0]) - np.log(g[:, -1])) / (T - 1))
    ok = np.isfinite(decay)
    if not ok.any():
        return {}
    return {
        "gradient_decay_first": float(decay[0]) if ok[0] else None,
        "gradient_decay_median": float(np.median(decay[ok])),
        "gradient_decay_last": float(decay[-1]) if ok[-1] else None,
    }


JACOBIAN_BOUND_KEYS = (
    "jacobian_bound_ratio_max",
    "jacobian_bound_violations",
    "jacobian_bound_factor_first",
)


def jacobian_bound(diagnostics: dict, activation: str, cell: str = "rnn") -> dict:
    """Pascanu, Mikolov & Bengio (2013): every product P_k = J_T ... J_{T-k+1} of one-step
    Jacobians diag(f'(a_t)) W_hh obeys ||P_k|| <= (gamma sigma_max(W_hh))^k, gamma = max |f'|.

    jacobian_bound_ratio_max: the largest ||P_k|| / (gamma sigma_max)^k over every captured
    step and lag (<= 1 when the bound holds; computed in logs: products span 1e-40..1e12);
    jacobian_bound_violations: how many (capture, lag) pairs exceed the bound by more than a
    relative 1e-9 (rounding); jacobian_bound_factor_first: gamma sigma_max at the first capture
    (< 1: the bound forces the gradient to vanish geometrically).

    Gated cells: every key is None. The bound is a theorem about the vanilla cell, whose
    one-step Jacobian is diag(f'(a_t)) W_hh; a GRU's or LSTM's Jacobian ds_t/ds_{t-1} adds
    the gates' own paths (z h, f c) and their derivatives to it, so gamma sigma_max of one
    block bounds nothing, and no bound is invented here. Their Jacobian products against the
    lag are still recorded and drawn (jacobian.png)."""
    if cell != "rnn":
        return dict.fromkeys(JACOBIAN_BOUND_KEYS)
    P = diagnostics.get("jacobian_product_norm") if diagnostics else None
    sigma = diagnostics.get("jacobian_sigma_max") if diagnostics else None
    if P is None or sigma is None or np.size(P) == 0 or len(sigma) != len(P):
        return {}
    gamma = engine.get_activation(activation).deriv_max
    P, sigma = np.asarray(P, dtype=float), np.asarray(sigma, dtype=float)
    k = np.arange(1, P.shape[1] + 1)  # lags
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ratio = np.log(P) - k[None, :] * np.log(gamma * sigma)[:, None]  # (m, K)
    ok = np.isfinite(log_ratio)
    if not ok.any():
        return {}
    return {
        "jacobian_bound_ratio_max": float(np.exp(np.max(log_ratio[ok]))),
        "jacobian_bound_violations": int(np.sum(log_ratio[ok] > np.log1p(1e-9))),
        "jacobian_bound_factor_first": float(gamma * sigma[0]),
    }


GATED_BOUND_NOTE = (
    "jacobian_bound_* are null: the Pascanu et al. bound (gamma sigma_max(W_hh))^k holds for "
    "the vanilla cell only; a gated cell's Jacobian products are in jacobian.png"
)


def gate_spectral_radii(params) -> dict:
    """Gated cells: ``spectral_radius_<gate>``, the spectral radius of each gate's H x H
    recurrent block at the checkpoint (as history.csv's columns of the same names); {} for
    the vanilla cell (its one block is summary.json's spectral_radius)."""
    if cells.cell_of(params) == "rnn":
        return {}
    return {f"spectral_radius_{g}": r for g, r in cells.spectral_radii(params).items()}
