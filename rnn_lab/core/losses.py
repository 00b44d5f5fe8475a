"""Per-step losses and their gradients with respect to the output o_t.

Every loss here is SUMMED over the time steps of a chunk and AVERAGED over the B streams,
so that B = 1 is the walkthrough's (and min-char-rnn's) summed chunk loss. A mask (T, B) of 0/1
selects the positions that count (a copy task scores only its answer positions); None means
every position counts. Each function returns (loss, dL/do, n_counted) where n_counted is the
number of scored positions per stream on average, for per-character reporting.

Each loss is written once, with an arm axis: ``ARM_LOSSES[name](outputs (K, T, B, O),
targets, mask)`` scores K runs that share their targets and mask (a stack of
rnn_lab.core.stacked_engine, through rnn_lab.core.stacked_losses), and a single run is its
K = 1 case (``LOSSES``, the functions below). The arm-axis forms do, row by row, what one run
needs: reductions over the last axis by NumPy's pairwise sum, each arm's squared norm by BLAS
dot, so every arm of a stack gets exactly the bits its single run gets.

What one copy costs the single run (2026-12-07, against the former separate single-run
functions, same bits on 180 cases; CPU time): ~1.1 us more per cross-entropy call at the
walkthrough's size (T=25, B=1, V=30: 13.2 -> 14.3 us; none at T=50, B=32, V=113): the
bench's single-run engine step (rnn_lab.bench.contenders.RnnLabLoop) 1.5% slower in one
process with interleaved rounds (0.982-0.997 by round), no measurable change in the trainer.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from rnn_lab.core.stacked_engine import row_dots, shared_arange

LossFn = Callable[[np.ndarray, np.ndarray, np.ndarray | None], tuple[float, np.ndarray, float]]


def arm_cross_entropy(lg: np.ndarray, targets: np.ndarray, mask: np.ndarray | None) -> tuple:
    """Softmax cross-entropy in nats of K runs: lg (K, T, B, V) logits, targets (T, B) int.
    Returns loss (K,) float64, dL/dlogits (K, T, B, V), n_counted."""
    K, T, B, V = lg.shape
    flat = lg.reshape(K * T * B, V)
    z = flat - flat.max(axis=1, keepdims=True)  # shift by the max: exp never overflows
    # Each arm's (T*B, V) rows picked at the shared targets: (K, T*B) without tiling them
    # (one run: the plain 2-D pick, ~1 us a call less than the 3-D one; the same entries).
    rows = z if K == 1 else z.reshape(K, T * B, V)
    hot = (shared_arange(T * B), targets.reshape(-1))
    hot = hot if K == 1 else (slice(None), *hot)
    z_target = rows[hot].reshape(-1)
    e = np.exp(z, out=z)  # in place: z is not needed past its target entries
    s = e.sum(axis=1)
    # -log p[target] from the log-softmax: exact, no epsilon needed.
    nll = (np.log(s) - z_target).reshape(K, T, B)
    e /= s[:, None]  # probabilities
    rows[hot] -= 1.0  # softmax-CE gradient: p - one_hot(target) (rows is a view of e)
    dlogits = e.reshape(K, T, B, V)
    if mask is not None:
        nll = nll * mask
        dlogits *= mask[..., None]
        n_counted = float(mask.sum()) / B
    else:
        n_counted = float(T)
    if B != 1:
        dlogits /= B  # the mean over streams
    # Each arm's sum: NumPy's pairwise sum over its T*B values (as nll.sum() of one run),
    # then / B in float64.
    loss = np.true_divide(nll.reshape(K, T * B).sum(axis=1), B, dtype=np.float64)
    return loss, dlogits, n_counted


def arm_squared_error(outputs: np.ndarray, targets: np.ndarray, mask) -> tuple:
    """0.5 * sum (o - y)^2 of K runs: outputs (K, T, B, O), targets (T, B, O) real values."""
    K, T, B = outputs.shape[:3]
    diff = outputs - targets
    if mask is not None:
        diff = diff * mask[..., None]
        n_counted = float(mask.sum()) / B
    else:
        n_counted = float(T)
    loss = 0.5 * row_dots(diff.reshape(K, -1)).astype(np.float64) / B
    return loss, diff / B, n_counted


def arm_mean_squared_error(outputs: np.ndarray, targets: np.ndarray, mask) -> tuple:
    """outputs (K, T, B, O), targets (T, B, O) real values; at each counted position the MEAN
    over the O outputs of (o - y)^2 (no 1/2), summed over t and averaged over B like every loss
    here. So loss / n_counted is the mean squared error over every counted (position, output):
    the adding task's MSE (Le et al. 2015) with O = 1, the delay-line error with O = K."""
    K, T, B, O = outputs.shape
    diff = outputs - targets
    if mask is not None:
        diff *= mask[..., None]
        n_counted = float(mask.sum()) / B
    else:
        n_counted = float(T)
    loss = row_dots(diff.reshape(K, -1)).astype(np.float64) / (O * B)
    diff *= 2.0 / (O * B)  # d loss / d o
    return loss, diff, n_counted


ARM_LOSSES = {
    "cross_entropy": arm_cross_entropy,
    "squared_error": arm_squared_error,
    "mse": arm_mean_squared_error,
}


def _one_run(arm_loss, outputs: np.ndarray, targets: np.ndarray, mask) -> tuple:
    """A single run's loss: the K = 1 case of its arm-axis form (outputs (T, B, O))."""
    loss, doutputs, n_counted = arm_loss(outputs[None], targets, mask)
    return float(loss[0]), doutputs[0], n_counted


def softmax_cross_entropy(
    logits: np.ndarray, targets: np.ndarray, mask: np.ndarray | None = None
) -> tuple[float, np.ndarray, float]:
    """logits: (T, B, V); targets: (T, B) int. Loss in nats."""
    return _one_run(arm_cross_entropy, logits, targets, mask)


def squared_error(
    outputs: np.ndarray, targets: np.ndarray, mask: np.ndarray | None = None
) -> tuple[float, np.ndarray, float]:
    """outputs, targets: (T, B, O) real values; loss 0.5 * sum (o - y)^2."""
    return _one_run(arm_squared_error, outputs, targets, mask)


def mean_squared_error(
    outputs: np.ndarray, targets: np.ndarray, mask: np.ndarray | None = None
) -> tuple[float, np.ndarray, float]:
    """outputs, targets: (T, B, O) real values; see arm_mean_squared_error."""
    return _one_run(arm_mean_squared_error, outputs, targets, mask)


LOSSES: dict[str, LossFn] = {
    "cross_entropy": softmax_cross_entropy,
    "squared_error": squared_error,
    "mse": mean_squared_error,
}
assert LOSSES.keys() == ARM_LOSSES.keys()  # a loss is written once, with its arm axis


def get_loss(name: str) -> LossFn:
    """The single run's loss of this name."""
    return _named(LOSSES, name)


def get_arm_loss(name: str):
    """The loss of this name with its arm axis (ARM_LOSSES)."""
    return _named(ARM_LOSSES, name)


def _named(losses: dict, name: str):
    try:
        return losses[name]
    except KeyError:
        raise ValueError(
            f"loss: unknown name {name!r}; valid: {', '.join(sorted(losses))}"
        ) from None
