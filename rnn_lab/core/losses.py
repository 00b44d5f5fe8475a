"""Per-step losses and their gradients with respect to the output o_t.

Every loss here is SUMMED over the time steps of a chunk and AVERAGED over the B streams,
so that B = 1 is the walkthrough's (and min-char-rnn's) summed chunk loss. A mask (T, B) of 0/1
selects the positions that count (a copy task scores only its answer positions); None means
every position counts. Each function returns (loss, dL/do, n_counted) where n_counted is the
number of scored positions per stream on average, for per-character reporting.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

LossFn = Callable[[np.ndarray, np.ndarray, np.ndarray | None], tuple[float, np.ndarray, float]]


def softmax_cross_entropy(
    logits: np.ndarray, targets: np.ndarray, mask: np.ndarray | None = None
) -> tuple[float, np.ndarray, float]:
    """logits: (T, B, V); targets: (T, B) int. Loss in nats."""
    T, B, V = logits.shape
    flat = logits.reshape(T * B, V)
    rows = np.arange(T * B)
    target_flat = targets.reshape(-1)
    z = flat - flat.max(axis=1, keepdims=True)  # shift by the max: exp never overflows
    z_target = z[rows, target_flat]
    e = np.exp(z, out=z)  # in place: z is not needed past its target entries
    s = e.sum(axis=1)
    # -log p[target] from the log-softmax: exact, no epsilon needed.
    nll = (np.log(s) - z_target).reshape(T, B)
    e /= s[:, None]  # probabilities
    e[rows, target_flat] -= 1.0  # softmax-CE gradient: p - one_hot(target)
    dlogits = e.reshape(T, B, V)
    if mask is not None:
        nll = nll * mask
        dlogits *= mask[..., None]
        n_counted = float(mask.sum()) / B
    else:
        n_counted = float(T)
    if B != 1:
        dlogits /= B  # the mean over streams
    return float(nll.sum()) / B, dlogits, n_counted


def squared_error(
    outputs: np.ndarray, targets: np.ndarray, mask: np.ndarray | None = None
) -> tuple[float, np.ndarray, float]:
    """outputs, targets: (T, B, O) real values; loss 0.5 * sum (o - y)^2."""
    T, B = outputs.shape[:2]
    diff = outputs - targets
    if mask is not None:
        diff = diff * mask[..., None]
        n_counted = float(mask.sum()) / B
    else:
        n_counted = float(T)
    loss = 0.5 * float(np.vdot(diff, diff)) / B
    return loss, diff / B, n_counted


def mean_squared_error(
    outputs: np.ndarray, targets: np.ndarray, mask: np.ndarray | None = None
) -> tuple[float, np.ndarray, float]:
    """outputs, targets: (T, B, O) real values; at each counted position the MEAN over the O
    outputs of (o - y)^2 (no 1/2), summed over t and averaged over B like every loss here.
    So loss / n_counted is the mean squared error over every counted (position, output):
    the adding task's MSE (Le et al. 2015) with O = 1, the delay-line error with O = K."""
    T, B, O = outputs.shape
    diff = outputs - targets
    if mask is not None:
        diff *= mask[..., None]
        n_counted = float(mask.sum()) / B
    else:
        n_counted = float(T)
    loss = float(np.vdot(diff, diff)) / (O * B)
    diff *= 2.0 / (O * B)  # d loss / d o
    return loss, diff, n_counted


LOSSES: dict[str, LossFn] = {
    "cross_entropy": softmax_cross_entropy,
    "squared_error": squared_error,
    "mse": mean_squared_error,
}


def get_loss(name: str) -> LossFn:
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(
            f"loss: unknown name {name!r}; valid: {', '.join(sorted(LOSSES))}"
        ) from None
