"""The losses of a stack (rnn_lab.core.stacked_engine): every arm's loss and dL/do at once.

The losses themselves are rnn_lab.core.losses' arm-axis forms (``ARM_LOSSES``; a single run
is their K = 1 case), so each arm gets exactly what its single run gets; this module turns
the engine's time-major (T, K, B, O) outputs to the arm-major (K, T, B, O) they take and back.
"""

from __future__ import annotations

import numpy as np

from rnn_lab.core.losses import ARM_LOSSES, get_arm_loss
from rnn_lab.core.stacked_engine import arm_major

# Every loss has its stacked form (rnn_lab.run.stacked.group_key checks this registry).
STACKED_LOSSES = ARM_LOSSES


def stacked_loss(
    loss_name: str, logits: np.ndarray, targets: np.ndarray, mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, float]:
    """Every arm's loss, as rnn_lab.core.losses.get_loss(loss_name)(logits[:, k], targets,
    mask) returns it: loss_sum (K,) float64, dlogits (T, K, B, O), n_counted (the same for
    every arm: the mask is shared). logits: (T, K, B, O)."""
    loss, dlogits, n_counted = get_arm_loss(loss_name)(arm_major(logits), targets, mask)
    return loss, dlogits.swapaxes(0, 1), n_counted
