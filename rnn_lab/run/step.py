"""The one training step, and the measurements taken at it.

``train_step(state, batch, settings)`` is forward, loss, BPTT, clipping, the optimiser update
and carrying the state (h, or the LSTM's (h, c)) into the next chunk, for any cell
(rnn_lab.core.cells dispatches). The trainer calls it for every step and ``rnn-lab bench``
times it, so the benchmark measures exactly what trains. At record steps it also measures the
training dynamics (before the update: they describe the weights that produced this chunk).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rnn_lab.core import cells, engine
from rnn_lab.core.batch import Batch
from rnn_lab.core.losses import get_loss
from rnn_lab.core.optim import step_decay_lr
from rnn_lab.run.schedule import due, history_row_due, is_record_step, profile_due
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
        state.recurrent_state = tuple(np.zeros_like(x) for x in state.recurrent_state)
    lr = step_decay_lr(step, s.lr, s.lr_decay_rate, s.lr_decay_every)
    cache = cells.forward(state.params, batch.inputs, state.recurrent_state, act)
    loss_sum, dlogits, n_counted = get_loss(state.task.loss_name)(
        cache.logits, batch.targets, batch.mask
    )
    # A sequence task's chunk may hold no counted position (the adding task's early chunks):
    # no loss, a zero gradient, nothing to judge.
    loss = loss_sum / n_counted if n_counted > 0 else math.nan
    why = divergence(loss, state, s.diverge_factor, cache.logits.shape[-1]) if n_counted else None
    if why is not None:
        return StepResult(loss, None, lr, diverged=f"{why} at step {step}")
    grads = cells.backward(
        state.params,
        cache,
        dlogits,
        act,
        freeze_whh=s.freeze_whh,
        clip=s.clip,
        clip_mode=s.clip_mode,
        profile=profile_due(step, s),
    )
    measure_step(state, s, step, lr, cache, grads, batch, loss)

    # ---- the update: frozen recurrent weights are the untouched tail of the flat buffer ----
    n_train = state.params.n_trainable(s.freeze_whh)
    state.optimizer.step({"flat": state.params.flat[:n_train]}, {"flat": grads.flat[:n_train]}, lr)
    state.recurrent_state = cells.final_state(cache)  # carried; the gradient is truncated here
    state.step = step
    return StepResult(loss, grads, lr)


# why: one step's whole context (the stacked trainer calls it per arm with that arm's views).
def measure_step(state: TrainState, s: TrainSettings, step: int, lr, cache, grads, batch, loss):
    """The bookkeeping of a step after its BPTT, before its update: the loss window, the
    history row (record and validation steps), the record-step diagnostics, the Jacobian
    products and weight snapshots. ``loss`` is NaN when the chunk counted no position.
    cache/grads: this run's forward cache and engine.Gradients (views are fine)."""
    if math.isfinite(loss):
        state.recent_losses.append(loss)
        state.window.add(loss, grads.clipped)
    else:
        state.window.add_unscored(grads.clipped)
    recording = is_record_step(step, s)
    act = engine.get_activation(s.activation)
    if history_row_due(step, s):  # as spectrum_due's eigen
        eigenvalues, radii = spectrum(state).eigen
        row = history_row(state, step, lr, grads, radii)
        if s.record and recording:
            record_diagnostics(row, state, step, (cache, act), grads, batch, eigenvalues)
        state.rows.append(row)
    if s.record and due(step, s.jacobian_interval, s.steps, first=True, last=True):
        jac = cells.jacobian_products(state.params, cache, act, s.jacobian_lags)
        # Padded with NaN when this chunk is shorter than the task's longest (and than lags).
        lags = min(s.jacobian_lags, getattr(state.task, "chunk_len", cache.logits.shape[0]))
        jac = {k: _pad(v, lags) for k, v in jac.items()}
        sigma = spectrum(state).sigma_max
        state.recorder.add(jacobian_step=step, jacobian_sigma_max=sigma, **jac)
    if s.record and s.record_weights and recording:
        snapshot = cells.recurrent_weight(state.params).copy()
        state.recorder.add(weights_step=step, W_hh_snapshots=snapshot)


class Spectrum:
    """The recurrent weight's recorded spectrum (eigenvalues with the spectral-radius columns,
    and sigma_max), each computed when first asked for, from a copy of the weight."""

    def __init__(self, params, eigen=None, sigma_max: float | None = None):
        """eigen / sigma_max: already computed for these params (e.g. in a batched call over a
        stack's arms), else computed when first asked for."""
        self.params = params
        self.weight = cells.recurrent_weight(params).copy()
        self._eigen, self._sigma = eigen, sigma_max

    def holds(self, params) -> bool:
        """Is params' recurrent weight still the one this spectrum was computed from?"""
        return np.array_equal(cells.recurrent_weight(params), self.weight)

    @property
    def eigen(self) -> tuple[np.ndarray, dict[str, float]]:
        if self._eigen is None:
            self._eigen = recurrent_spectrum(self.params)
        return self._eigen

    @property
    def sigma_max(self) -> float:
        if self._sigma is None:
            self._sigma = cells.sigma_max(self.params)
        return self._sigma


def spectrum(state: TrainState) -> Spectrum:
    """The spectrum of the run's recurrent weight, reused while the weight has not changed
    (freeze_whh: an eigendecomposition and an SVD of the same matrix at every record step,
    ~1.5 ms at H=64, were most of a reservoir run's recording). Same values: the memo is
    used only when the weight is bit-for-bit the one it was computed from."""
    if not spectrum_is_current(state):
        state.spectrum_memo = Spectrum(state.params)
    memo = state.spectrum_memo
    memo.params = state.params  # the current arrays (a stacked arm's views change)
    return memo


def spectrum_is_current(state: TrainState) -> bool:
    """Does the run's spectrum memo hold its recurrent weight as it is now?"""
    memo = state.spectrum_memo
    return memo is not None and memo.holds(state.params)


def spectrum_due(step: int, s: TrainSettings) -> tuple[bool, bool]:
    """Does measure_step ask for (eigenvalues, sigma_max) at this step?"""
    recording = is_record_step(step, s)
    eigen = history_row_due(step, s)
    jacobian = due(step, s.jacobian_interval, s.steps, first=True, last=True)
    return eigen, bool(s.record and (recording or jacobian))


def radii_of(eigenvalues: np.ndarray) -> dict[str, float]:
    """The history's spectral-radius column of a vanilla W_hh, from its eigenvalues."""
    return {"spectral_radius": float(np.max(np.abs(eigenvalues)))}


def recurrent_spectrum(params) -> tuple[np.ndarray, dict[str, float]]:
    """The eigenvalues recorded for this network (W_hh's; a gated cell's candidate block's) and
    the history's spectral-radius columns: ``spectral_radius`` (the largest over the recurrent
    blocks) and, for gated cells, ``spectral_radius_<gate>`` per block."""
    if cells.cell_of(params) == "rnn":
        eigenvalues = np.linalg.eigvals(params.W_hh)
        return eigenvalues, radii_of(eigenvalues)
    blocks = cells.recurrent_blocks(params)
    candidate = cells.CANDIDATE_BLOCK[cells.cell_of(params)]
    spectra = {g: np.linalg.eigvals(W) for g, W in blocks.items()}
    radii = {f"spectral_radius_{g}": float(np.max(np.abs(ev))) for g, ev in spectra.items()}
    return spectra[candidate], {"spectral_radius": max(radii.values()), **radii}


def divergence(loss: float, state: TrainState, factor: float, n_outputs: int) -> str | None:
    """Why a loss means the run has diverged, or None.

    Non-finite: at once. Finite but absurd (cross-entropy only): this loss and the median of
    the last LOSS_WINDOW losses, this one included, above factor x ln(V) (a uniform guess costs
    ln V). The median over a whole window, because a fast optimiser's first steps can spike far
    above ln V and recover: Adam + identity + relu reaches 22,000 nats/char at step 10 and 0.64
    at step 300 (tests/fixtures/reference_runs.json). The median is only computed when
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


def history_row(state: TrainState, step: int, lr: float, grads, radii: dict) -> dict:
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
    row.update(radii)
    return row


def record_diagnostics(row, state, step, cache_act, grads, batch: Batch, eigenvalues) -> None:
    """The record-step measurements: into the history row and the recorder."""
    cache, act = cache_act
    row["sigma_max"] = spectrum(state).sigma_max
    for name, norm in grads.param_grad_norms.items():
        row[f"grad_norm_{name}"] = norm  # before clipping, as the total is
    row["saturation"] = cells.saturation(cache, act)
    for gate, fraction in cells.gate_saturation(cache).items():
        row[f"gate_saturation_{gate}"] = fraction
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
