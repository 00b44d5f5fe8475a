"""The one training step, and the measurements taken at it.

``train_step(state, batch, settings)`` is forward, loss, BPTT, clipping, the optimiser update
and carrying h into the next chunk. The trainer calls it for every step and ``rnn-lab bench``
times it, so the benchmark measures exactly what trains. At record steps it also measures the
training dynamics (before the update: they describe the weights that produced this chunk).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rnn_lab.core import engine
from rnn_lab.core.data import Batch
from rnn_lab.core.losses import get_loss
from rnn_lab.core.optim import step_decay_lr
from rnn_lab.run.schedule import due, is_record_step
from rnn_lab.run.settings import TrainSettings
from rnn_lab.run.state import LOSS_WINDOW, TrainState


@dataclass
class StepResult:
    loss: float  # per counted position of this chunk (NaN: the chunk counted no position)
    grads: engine.Gradients | None  # None when the step diverged before BPTT
    lr: float
    diverged: str | None = None  # why the run must stop, when it must


def train_step(state: TrainState, batch: Batch, s: TrainSettings) -> StepResult:
    """Advance ``state`` by one chunk; a diverging loss leaves the parameters untouched."""
    step = state.step + 1
    act = engine.get_activation(s.activation)
    if batch.reset_h:
        state.h = np.zeros_like(state.h)
    lr = step_decay_lr(step, s.lr, s.lr_decay_rate, s.lr_decay_every)
    cache = engine.forward(state.params, batch.inputs, state.h, act)
    loss_sum, dlogits, n_counted = get_loss(state.task.loss_name)(
        cache.logits, batch.targets, batch.mask
    )
    # A sequence task's chunk may hold no counted position (the adding task's early chunks):
    # no loss, a zero gradient, nothing to judge.
    scored = n_counted > 0
    loss = loss_sum / n_counted if scored else math.nan
    why = divergence(loss, state, s.diverge_factor, cache.logits.shape[-1]) if scored else None
    if why is not None:
        return StepResult(loss, None, lr, diverged=f"{why} at step {step}")
    recording = is_record_step(step, s)
    grads = engine.backward(
        state.params,
        cache,
        dlogits,
        act,
        freeze_whh=s.freeze_whh,
        clip=s.clip,
        clip_mode=s.clip_mode,
        profile=recording and s.record,
    )
    if scored:
        state.recent_losses.append(loss)
        state.window.add(loss, grads.clipped)
    else:
        state.window.add_unscored(grads.clipped)
    if recording or due(step, s.val_interval, s.steps):
        eigenvalues = np.linalg.eigvals(state.params.W_hh)
        row = history_row(state, step, lr, grads, eigenvalues)
        if s.record and recording:
            record_diagnostics(row, state, step, (cache, act), grads, batch, eigenvalues)
        state.rows.append(row)
    if s.record and due(step, s.jacobian_interval, s.steps, first=True, last=True):
        jac = engine.jacobian_products(state.params, cache.hs, act, s.jacobian_lags)
        # Padded with NaN when this chunk is shorter than the task's longest (and than lags).
        lags = min(s.jacobian_lags, getattr(state.task, "chunk_len", cache.logits.shape[0]))
        jac = {k: _pad(v, lags) for k, v in jac.items()}
        sigma = float(np.linalg.norm(state.params.W_hh, 2))
        state.recorder.add(jacobian_step=step, jacobian_sigma_max=sigma, **jac)
    if s.record and s.record_weights and recording:
        state.recorder.add(weights_step=step, W_hh_snapshots=state.params.W_hh.copy())

    # ---- the update: a frozen W_hh is the untouched tail of the flat buffer ----
    n_train = state.params.n_trainable(s.freeze_whh)
    state.optimizer.step({"flat": state.params.flat[:n_train]}, {"flat": grads.flat[:n_train]}, lr)
    state.h = cache.h_last  # carried forward; the gradient is truncated here
    state.step = step
    return StepResult(loss, grads, lr)


def divergence(loss: float, state: TrainState, factor: float, n_outputs: int) -> str | None:
    """Why a loss means the run has diverged, or None.

    Non-finite: at once. Finite but absurd (cross-entropy only): this loss and the median of
    the last LOSS_WINDOW losses, this one included, above factor x ln(V) (a uniform guess costs
    ln V). The median over a whole window, because a fast optimiser's first steps can spike far
    above ln V and recover: Adam + identity + relu reaches 36,000 nats/char at step 5 and 0.48
    at step 2,000 (tests/fixtures/reference_checkpoints.json). The median is only computed when
    this loss is already absurd, so a healthy run pays one comparison per step.
    """
    if not math.isfinite(loss):
        return f"loss became {loss}"
    if factor <= 0 or state.task.loss_name != "cross_entropy" or n_outputs < 2:
        return None
    limit = factor * math.log(n_outputs)
    if loss <= limit or len(state.recent_losses) < LOSS_WINDOW - 1:
        return None
    median = float(np.median([*list(state.recent_losses)[1 - LOSS_WINDOW :], loss]))
    if median <= limit:
        return None
    return (
        f"loss {loss:.4g} nats/char, median {median:.4g} over the last {LOSS_WINDOW} steps, "
        f"above diverge_factor x ln V = {factor:g} x {math.log(n_outputs):.3f} = {limit:.4g}"
    )


def absurd_at_end(state: TrainState, factor: float) -> str | None:
    """A run too short to fill the window: diverged when the median of its losses is absurd."""
    n_outputs = state.params.W_hy.shape[0]
    if factor <= 0 or state.task.loss_name != "cross_entropy" or not state.recent_losses:
        return None
    median, limit = float(np.median(state.recent_losses)), factor * math.log(n_outputs)
    if median <= limit:
        return None
    return (
        f"median loss {median:.4g} nats/char over the last {len(state.recent_losses)} steps "
        f"above diverge_factor x ln V = {factor:g} x {math.log(n_outputs):.3f} = {limit:.4g}"
    )


def history_row(state: TrainState, step: int, lr: float, grads, eigenvalues) -> dict:
    """A history.csv row: the losses since the previous row, this step's gradient and rho."""
    w = state.window
    row = {
        "step": step,
        "loss": w.loss_sum / w.n if w.n else math.nan,  # NaN: no chunk since the last row scored
        "lr": lr,
        "grad_norm": grads.total_norm,
        "clipped": grads.clipped,
        "clip_ratio": grads.clip_ratio,
        "clip_fraction": w.clipped / w.steps,
    }
    state.window = type(w)()
    row["spectral_radius"] = float(np.max(np.abs(eigenvalues)))
    return row


def record_diagnostics(row, state, step, cache_act, grads, batch: Batch, eigenvalues) -> None:
    """The record-step measurements: into the history row and the recorder."""
    params = state.params
    cache, act = cache_act
    row["sigma_max"] = float(np.linalg.norm(params.W_hh, 2))
    for name, norm in grads.param_grad_norms.items():
        row[f"grad_norm_{name}"] = norm  # before clipping, as the total is
    row["saturation"] = saturation(cache.hs, act)
    per_pos = position_accuracy(cache.logits, batch)
    row["position_accuracy"] = float(np.nanmean(per_pos)) if np.isfinite(per_pos).any() else None
    # Arrays over chunk positions are padded with NaN to the longest chunk (a sequence task's
    # last chunk may be shorter), so every record has the same width.
    width = getattr(state.task, "chunk_len", per_pos.shape[0])
    state.recorder.add(
        record_step=step,
        eigenvalues=eigenvalues.astype(np.complex128),
        per_step_grad_norm=_pad(grads.per_step_grad_norm, width),
        last_loss_grad_norm=_pad(grads.last_loss_grad_norm, width),
        position_accuracy=_pad(per_pos, width),
    )


def _pad(values: np.ndarray, width: int) -> np.ndarray:
    """values (n,) extended with NaN to width (unchanged when already that long)."""
    if values.shape[0] >= width:
        return values
    return np.concatenate([values, np.full(width - values.shape[0], np.nan)])


def position_accuracy(logits: np.ndarray, batch: Batch) -> np.ndarray:
    """(T,) accuracy of the argmax prediction at each chunk position (NaN for real targets)."""
    if not np.issubdtype(batch.targets.dtype, np.integer):
        return np.full(batch.targets.shape[0], np.nan)
    correct = (logits.argmax(axis=-1) == batch.targets).astype(np.float64)  # (T, B)
    if batch.mask is not None:
        return (correct * batch.mask).sum(1) / np.maximum(batch.mask.sum(1), 1)
    return correct.mean(axis=1)


def saturation(hs: np.ndarray, act: engine.Activation) -> float:
    """tanh/sigmoid: fraction of unit-steps within 0.05 of a bound; relu: fraction of units
    dead for the whole chunk."""
    h = hs[1:]  # (T, B, H)
    if act.high is None:
        return float(np.mean(np.all(h <= 0.0, axis=(0, 1))))
    return float(np.mean((h - act.low < 0.05) | (act.high - h < 0.05)))
