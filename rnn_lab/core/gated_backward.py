"""GRU and LSTM cells, backward: BPTT through a chunk and the step Jacobians, both from the
same gate coefficients (see :mod:`rnn_lab.core.gated` for the conventions and diagnostics).
"""

from __future__ import annotations

import numpy as np

from rnn_lab.core.engine import Gradients, _dot, _is_index_input, _matmul_rows
from rnn_lab.core.gated_forward import (
    GatedCache,
    GatedParams,
    GRUParams,
    LSTMParams,
    cell_of,
    params_layout,
    scratch_array,
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
    is contiguous (strided ufunc calls cost ~3x more at the walkthrough's sizes).
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
    out = scratch_array("gate_major", (n_gates, T, B, GH // n_gates), gates.dtype)
    np.copyto(out, gates.reshape(T, B, n_gates, -1).transpose(2, 0, 1, 3))
    return out


def _step_major(blocks: np.ndarray, name: str) -> np.ndarray:
    """(K, T, B, H) -> a contiguous (T, B, K, H) copy, the layout the backward loop reads."""
    K, T, B, H = blocks.shape
    out = scratch_array(name, (T, B, K, H), blocks.dtype)
    np.copyto(out, blocks.transpose(1, 2, 0, 3))
    return out


def _gru_bptt(params: GRUParams, cache: GatedCache, dh: np.ndarray):
    """In place: on entry dh[t] = W_hy^T do_t; on return dh[t] = dL/dh_{t+1}. Returns the
    step results D (T, B, 5, H) = [da_r, da_z, dhn, da_n, dh z], the coefficients, and the
    per-step state-gradient squared norms over (B, H)."""
    T, B, H = dh.shape
    dt = dh.dtype
    A_blocks = scratch_array("coef_blocks", (5, T, B, H), dt)
    _gru_coefficients(*_gate_major(cache.gates, 3), cache.hn, cache.hs[:-1], A_blocks)
    A = _step_major(A_blocks, "coef")  # (T, B, 5, H)
    D = scratch_array("steps", (T, B, 5, H), dt)
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
    Ah_blocks = scratch_array("coef_blocks", (2, T, B, H), dt)
    Ac_blocks = scratch_array("coef_blocks_c", (4, T, B, H), dt)
    gates = _gate_major(cache.gates, 4)
    _lstm_coefficients(*gates, cache.tanh_c, cache.cs[:-1], Ah_blocks, Ac_blocks)
    Ah = _step_major(Ah_blocks, "coef")  # (T, B, 2, H)
    Ac = _step_major(Ac_blocks, "coef_c")  # (T, B, 4, H)
    D = scratch_array("steps", (T, B, 6, H), dt)
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
# at the walkthrough's 25 rows the direct product into the output buffer is cheaper.
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
    layout, total = params_layout(params)
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
    params: GatedParams,
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
    cell = cell_of(params)
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


# --------------------------------------------------------------------------------------
# The step Jacobians (diagnostics)
# --------------------------------------------------------------------------------------


def step_jacobian(params: GatedParams, cache: GatedCache, t: int, b: int = 0) -> np.ndarray:
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
    params: GatedParams, cache: GatedCache, lags: int, b: int = 0
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
