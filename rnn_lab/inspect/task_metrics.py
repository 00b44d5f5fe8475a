"""What a network trained on a sequence task (rnn_lab.core.tasks) achieves, against its
baselines and against its own untrained network.

:func:`analyze_task_params` is the analysis.json document of a copy, adding or
memory_capacity run (rnn_lab.inspect.analysis.analyze_run dispatches here). Every metric is
measured on the task's fixed held-out set (``data.val_sequences`` sequences from their own
generator, whole sequences from h = 0, as validation runs them) and again for the run's
untrained network (same init and seed): ``<metric>_init``.

- copy: ``ce_per_step`` (mean cross-entropy per time step over the whole sequence, nats: the
  papers' measure) next to ``memoryless_baseline`` = L ln S / (T + 2L) (0.520 at L = 10,
  S = 8, T = 20); ``recall_accuracy`` (argmax accuracy on the L recall positions) next to
  ``recall_chance`` = 1/S; ``recall_ce`` (nats per recall step; a uniform guess costs ln S).
- adding: ``mse`` (squared error of the answer at the last step) next to ``baseline_mse``
  (always answering 1, measured on the same held-out set; 1/6 in expectation:
  ``baseline_mse_expected``).
- memory_capacity (Jaeger 2002): for k = 1 .. K (data.max_delay) a linear readout of the
  hidden state, fit by ridge regression on one held-out set and scored on another, recovers
  u(t - k); ``memory_capacity`` = sum over k of the squared correlation between readout and
  u(t - k) on the test set (steps t >= K of each sequence); at most H for i.i.d. input
  (``memory_capacity_bound`` = H). ``memory_curve``: the K squared correlations.
"""

from __future__ import annotations

import logging

import numpy as np

from rnn_lab.core import cells, engine
from rnn_lab.core.losses import softmax_cross_entropy
from rnn_lab.core.tasks import (
    FIT_STREAM,
    SEQUENCE_TASKS,
    AddingTask,
    CopyTask,
    MemoryCapacityTask,
    Sequences,
    SequenceTask,
    make_sequence_task,
)
from rnn_lab.inspect.load import cell_options
from rnn_lab.run.input_files import build_params
from rnn_lab.run.settings import DTYPES, TrainSettings

log = logging.getLogger("rnn_lab")

RIDGE_LAMBDA = 1e-6  # ridge penalty, times the mean eigenvalue of the states' covariance
BLOCK_STEPS = 200_000  # time steps x sequences run through the network at once

__all__ = ["SEQUENCE_TASKS", "analyze_task_params", "is_sequence_task"]


def is_sequence_task(settings: dict) -> bool:
    return (settings.get("data") or {}).get("name") in SEQUENCE_TASKS


def _setting(settings: dict, key: str):
    return settings.get(key, getattr(TrainSettings(), key))


def task_of(settings: dict) -> SequenceTask:
    """The run's task, rebuilt from its settings (the generators are seeded: the same data)."""
    dtype = DTYPES[_setting(settings, "dtype")]
    return make_sequence_task(settings["data"], int(_setting(settings, "seq_len")), 1, dtype)


def initial_params(settings: dict, task: SequenceTask):
    """The run's untrained network (same cell, init and seed); None when it cannot be rebuilt."""
    get = lambda key: _setting(settings, key)  # noqa: E731
    sizes = (task.input_size, get("hidden_size"), task.output_size)
    embed_dim = get("embed_dim") if get("use_embedding") else 0
    try:
        return build_params(
            get("init"),
            sizes,
            seed=get("seed"),
            embed_dim=embed_dim,
            dtype=DTYPES[get("dtype")],
            **cell_options(settings),
        )
    except (ValueError, TypeError, KeyError, OSError) as e:
        log.info("analysis: cannot rebuild the initial network (%s)", e)
        return None


def run_sequences(params, activation: str, seqs: Sequences) -> tuple[np.ndarray, np.ndarray]:
    """(states (N, n, H), outputs (N, n, O)) of whole sequences, each from the zero state."""
    states, outputs, _ = _run_blocks(params, activation, seqs)
    return states, outputs


def _run_blocks(params, activation: str, seqs: Sequences):
    """run_sequences, and the gate saturation over every (t, sequence, unit) of the run by gate
    letter ({} for the vanilla cell). Time-major blocks of sequences (``Sequences.block``)
    run one after another, each from the zero state, so memory stays bounded."""
    act = engine.get_activation(activation)
    N, n = seqs.inputs.shape[:2]
    H, O = params.hidden_size, params.W_hy.shape[0]
    states = np.empty((N, n, H), dtype=params.dtype)
    outputs = np.empty((N, n, O), dtype=params.dtype)
    near: dict[str, float] = {}
    per_block = max(1, BLOCK_STEPS // N)
    for start in range(0, n, per_block):
        block = seqs.block(start, start + per_block)
        state = cells.zero_state(cells.cell_of(params), block.n, H, params.dtype)
        cache = cells.forward(params, block.inputs, state, act)
        states[:, start : start + block.n] = cache.hs[1:]
        outputs[:, start : start + block.n] = cache.logits
        for gate, fraction in cells.gate_saturation(cache).items():
            near[gate] = near.get(gate, 0.0) + fraction * block.n
    return states, outputs, {g: v / max(1, n) for g, v in near.items()}


# --------------------------------------------------------------------------------------
# The metrics of each task
# --------------------------------------------------------------------------------------


def copy_metrics(params, activation: str, task: CopyTask) -> dict:
    val = task.validation_set()
    _, logits = run_sequences(params, activation, val)
    N, n = val.targets.shape
    loss, _, _ = softmax_cross_entropy(logits.astype(np.float64), val.targets)
    recall = task.recall_positions()
    recall_loss, _, _ = softmax_cross_entropy(
        logits[recall].astype(np.float64), val.targets[recall]
    )
    hits = logits[recall].argmax(axis=-1) == val.targets[recall]
    return {
        "ce_per_step": loss / N,
        "recall_accuracy": float(hits.mean()),
        "recall_ce": recall_loss / task.keys["length"],
    }


def adding_metrics(params, activation: str, task: AddingTask) -> dict:
    val = task.validation_set()
    _, outputs = run_sequences(params, activation, val)
    answer = outputs[-1, :, 0].astype(np.float64)
    target = val.targets[-1, :, 0].astype(np.float64)
    return {"mse": float(np.mean((answer - target) ** 2))}


def adding_baseline(task: AddingTask) -> float:
    """The MSE of always answering 1 on the held-out set."""
    target = task.validation_set().targets[-1, :, 0].astype(np.float64)
    return float(np.mean((1.0 - target) ** 2))


def _delay_rows(task: MemoryCapacityTask, states: np.ndarray, seqs: Sequences):
    """(X (m, H), Y (m, K)): the states and the past inputs u(t - k) at the steps t >= K."""
    K = task.max_delay
    X = states[K:].reshape(-1, states.shape[-1]).astype(np.float64)
    Y = seqs.targets[K:].reshape(-1, K).astype(np.float64)
    return X, Y


def ridge_fit(X: np.ndarray, Y: np.ndarray, lam: float = RIDGE_LAMBDA):
    """Linear readouts with a bias (by centring): (W (H, K), x_mean, y_mean)."""
    x_mean, y_mean = X.mean(axis=0), Y.mean(axis=0)
    Xc = X - x_mean
    gram = Xc.T @ Xc
    penalty = lam * max(float(np.trace(gram)) / gram.shape[0], 1e-300)
    W = np.linalg.solve(gram + penalty * np.eye(gram.shape[0]), Xc.T @ (Y - y_mean))
    return W, x_mean, y_mean


def squared_correlations(pred: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """(K,) squared correlation of each column of pred with the same column of Y (0 where
    either is constant)."""
    pc, yc = pred - pred.mean(axis=0), Y - Y.mean(axis=0)
    cov = (pc * yc).sum(axis=0)
    var = (pc * pc).sum(axis=0) * (yc * yc).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = np.where(var > 0, cov * cov / var, 0.0)
    return np.nan_to_num(r2)


def memory_capacity_metrics(params, activation: str, task: MemoryCapacityTask) -> dict:
    """Ridge readouts fit on one held-out set (FIT_STREAM), scored on the validation set."""
    fit = task.generate(task.stream(FIT_STREAM), task.keys["val_sequences"])
    test = task.validation_set()
    X_fit, Y_fit = _delay_rows(task, run_sequences(params, activation, fit)[0], fit)
    X_test, Y_test = _delay_rows(task, run_sequences(params, activation, test)[0], test)
    if not (np.all(np.isfinite(X_fit)) and np.all(np.isfinite(X_test))):
        return {"memory_capacity": None, "memory_curve": None}
    W, x_mean, y_mean = ridge_fit(X_fit, Y_fit)
    curve = squared_correlations((X_test - x_mean) @ W + y_mean, Y_test)
    return {"memory_capacity": float(curve.sum()), "memory_curve": curve.tolist()}


METRICS = {
    "copy": copy_metrics,
    "adding": adding_metrics,
    "memory_capacity": memory_capacity_metrics,
}


def baselines(task: SequenceTask, settings: dict) -> dict:
    """The numbers a task's metrics are read against."""
    if isinstance(task, CopyTask):
        return task.baselines()  # memoryless_baseline, recall_chance
    if isinstance(task, AddingTask):
        return {"baseline_mse": adding_baseline(task), "baseline_mse_expected": 1 / 6}
    return {
        "memory_capacity_bound": int(_setting(settings, "hidden_size")),
        "memory_capacity_max_delay": task.max_delay,
    }


# --------------------------------------------------------------------------------------
# The analysis document
# --------------------------------------------------------------------------------------


def analyze_task_params(params, settings: dict, *, compare_init=True) -> dict:
    """The analysis.json document of a sequence-task run (without run_id / steps_done, which
        analyze_run adds): the task's metrics, its baselines, the same metrics of the untrained
        network as ``<metric>_init``; for gated cells ``gate_saturation_<gate>`` on the held-out
    set; lists (curves) and "notes" beside the scalars."""
    task = task_of(settings)
    activation = str(_setting(settings, "activation"))
    measure = METRICS[task.name]
    notes: list[str] = []
    metrics = measure(params, activation, task)
    if metrics.get("memory_capacity", 0) is None:
        notes.append("the hidden states are not finite: no memory capacity")
    metrics.update(baselines(task, settings))
    if cells.cell_of(params) != "rnn":  # gated cells: gates at the ends of their range
        _, _, gates = _run_blocks(params, activation, task.validation_set())
        metrics.update({f"gate_saturation_{g}": v for g, v in gates.items()})
    init = initial_params(settings, task) if compare_init else None
    if init is not None:
        for key, value in measure(init, activation, task).items():
            metrics[f"{key}_init"] = value
    elif compare_init:
        notes.append("the untrained network could not be rebuilt: no *_init metrics")
    return {**metrics, "notes": notes, "details": {}}
