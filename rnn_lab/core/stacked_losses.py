"""The losses of a stack (rnn_lab.core.stacked_engine): every arm's loss and dL/do at once.

Each arm gets exactly what rnn_lab.core.losses gives its single run: the same operations row
by row, reductions over the last axis with NumPy's pairwise sum, each arm's squared norm by
BLAS dot (see the engine's docstring for why the bits agree). A loss without a stacked form
runs arm by arm through the single-run function (exact, slower).
"""

from __future__ import annotations

import numpy as np

from rnn_lab.core.losses import get_loss
from rnn_lab.core.stacked_engine import arm_major, row_dots, shared_arange


def stacked_loss(
    loss_name: str, logits: np.ndarray, targets: np.ndarray, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, float]:
    """Every arm's loss, as rnn_lab.core.losses.get_loss(loss_name)(logits[:, k], targets,
    mask) returns it: loss_sum (K,) float64, dlogits (T, K, B, O), n_counted (the same for
    every arm: the mask is shared). logits: (T, K, B, O)."""
    lg = arm_major(logits)  # (K, T, B, O)
    fn = STACKED_LOSSES.get(loss_name)
    if fn is None:  # a loss without a stacked form: arm by arm (exact, slower)
        loss_fn = get_loss(loss_name)
        out = [loss_fn(lg[k], targets, mask) for k in range(lg.shape[0])]
        dlogits = np.stack([o[1] for o in out])
        loss = np.array([o[0] for o in out], dtype=np.float64)
        return loss, dlogits.swapaxes(0, 1), out[0][2]
    loss, dlogits, n_counted = fn(lg, targets, mask)
    return loss, dlogits.swapaxes(0, 1), n_counted


def _cross_entropy(lg: np.ndarray, targets: np.ndarray, mask) -> tuple:
    """losses.softmax_cross_entropy on (K, T, B, V), row by row the same operations."""
    K, T, B, V = lg.shape
    flat = lg.reshape(K * T * B, V)
    z = flat - flat.max(axis=1, keepdims=True)
    # Each arm's (T*B, V) rows picked at the shared targets: (K, T*B) without tiling them.
    hot = (slice(None), shared_arange(T * B), targets.reshape(-1))
    z_target = z.reshape(K, T * B, V)[hot].reshape(-1)
    e = np.exp(z, out=z)
    s = e.sum(axis=1)
    nll = (np.log(s) - z_target).reshape(K, T, B)
    e /= s[:, None]
    e.reshape(K, T * B, V)[hot] -= 1.0
    dlogits = e.reshape(K, T, B, V)
    if mask is not None:
        nll = nll * mask
        dlogits *= mask[..., None]
        n_counted = float(mask.sum()) / B
    else:
        n_counted = float(T)
    if B != 1:
        dlogits /= B
    # float(nll.sum()) / B per arm: the same pairwise sum over the arm's T*B values.
    loss = nll.reshape(K, T * B).sum(axis=1).astype(np.float64) / B
    return loss, dlogits, n_counted


def _squared_error(outputs: np.ndarray, targets: np.ndarray, mask) -> tuple:
    K, T, B = outputs.shape[:3]
    diff = outputs - targets
    if mask is not None:
        diff = diff * mask[..., None]
        n_counted = float(mask.sum()) / B
    else:
        n_counted = float(T)
    loss = 0.5 * row_dots(diff.reshape(K, -1)).astype(np.float64) / B
    return loss, diff / B, n_counted


def _mean_squared_error(outputs: np.ndarray, targets: np.ndarray, mask) -> tuple:
    K, T, B, O = outputs.shape
    diff = outputs - targets
    if mask is not None:
        diff *= mask[..., None]
        n_counted = float(mask.sum()) / B
    else:
        n_counted = float(T)
    loss = row_dots(diff.reshape(K, -1)).astype(np.float64) / (O * B)
    diff *= 2.0 / (O * B)
    return loss, diff, n_counted


STACKED_LOSSES = {
    "cross_entropy": _cross_entropy,
    "squared_error": _squared_error,
    "mse": _mean_squared_error,
}
