"""Many arms, one engine: a group of runs trained together, each into its own run directory.

``train_group(jobs)`` trains runs ("arms") that share an engine: the same data, chunk length,
batch, hidden size, steps, dtype, optimiser type, embedding, cell and every schedule key
(``group_key`` says which runs can; None = never stacked). The arms differ in what the
engine takes per arm: activation, init and seed, lr and its decay, clip and clip_mode,
freeze_whh, the optimiser's hyperparameters, temperature and diverge_factor.

Every arm leaves EXACTLY the run directory :func:`rnn_lab.run.trainer.train` writes: what
happens around its steps is :mod:`rnn_lab.run.lifecycle`'s, called per arm as the single
trainer calls it per run (plan, TrainState, start files, the schedule after each step from
the arm's own step, the end), and its checkpoint is the single run's format, so a stacked
run resumes through the single-run trainer and the other way round. Each arm holds its run
lock and is planned (conflicts refused before any work) like a single run. This module
keeps the grouping and the batched loop; the engine batches only what must be batched
(forward, loss, BPTT, the optimiser over the arm axis).

The arms share one data stream: they start at the same step, so one ``next_batch()`` per
step is every arm's batch (arms resuming from different steps are trained one start step
after another). A diverging arm ends ``diverged`` at the step it would diverge alone (before
its update), its files are finished then and it leaves the stack; the others go on as if it
had never been there. SIGINT/SIGTERM: every arm finishes its step, checkpoints and ends
``interrupted``, as a single run does.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import json
import logging
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rnn_lab.core import engine as core_engine
from rnn_lab.core import gated
from rnn_lab.core import stacked_engine as stacked_core
from rnn_lab.core.data import loss_name_of
from rnn_lab.core.losses import LOSSES
from rnn_lab.core.optim import OPTIMIZERS, step_decay_lr
from rnn_lab.core.stacked_losses import STACKED_LOSSES, stacked_loss
from rnn_lab.core.stacked_optim import STACKED_OPTIMIZERS, make_stacked_optimizer
from rnn_lab.run import lifecycle, rundir
from rnn_lab.run.rundir import LockHeld, RunConflict
from rnn_lab.run.schedule import profile_due
from rnn_lab.run.settings import TrainSettings
from rnn_lab.run.state import TrainState
from rnn_lab.run.step import (
    Spectrum,
    StepResult,
    divergence,
    measure_step,
    radii_of,
    spectrum_due,
    spectrum_is_current,
    train_step,
)

log = logging.getLogger("rnn_lab")

# What may differ between the arms of one stack: what the engine takes per arm, and the
# bookkeeping of each job. Every other setting is shared (the group key).
PER_ARM_KEYS = frozenset(
    {
        "activation",
        "init",
        "seed",
        "lr",
        "lr_decay_rate",
        "lr_decay_every",
        "clip",
        "clip_mode",
        "freeze_whh",
        "temperature",
        "diverge_factor",
        "budget_chars",  # replaced by the steps it buys (shared)
        "resume",
        "analyze",
        "plots",
        "optimized_metric",
    }
)
STACKABLE_CELLS = ("rnn",)  # gated cells (gru, lstm) always run alone


def without_stacked_form() -> dict[str, list[str]]:
    """The optimisers and losses of the single run (rnn_lab.core.optim.OPTIMIZERS,
    rnn_lab.core.losses.LOSSES) that have no stacked form (STACKED_OPTIMIZERS,
    STACKED_LOSSES): a run using one never stacks (group_key is None). Meant to be empty
    (tests/test_stacked_launcher.py asserts it): add the stacked form with the single one."""
    return {
        "optim": sorted(set(OPTIMIZERS) - set(STACKED_OPTIMIZERS)),
        "loss": sorted(set(LOSSES) - set(STACKED_LOSSES)),
    }


def _has_stacked_form(s: TrainSettings) -> bool:
    """The run's cell, optimiser and loss all have a stacked form."""
    cell = s.cell or {}
    if (cell.get("name", "rnn") if isinstance(cell, dict) else cell) not in STACKABLE_CELLS:
        return False
    try:
        loss = loss_name_of(s.data)
    except ValueError:
        return False  # a data name the task builder refuses: the single run says why
    return (s.optim or {}).get("name", "sgd") in STACKED_OPTIMIZERS and loss in STACKED_LOSSES


def group_key(settings: TrainSettings) -> str | None:
    """The runs that may share a stacked engine have equal keys; None: never stacked (a
    gated cell, or an optimiser or loss without a stacked form: such a run trains alone)."""
    s = lifecycle.with_budget(settings)
    if not _has_stacked_form(s):
        return None
    d = s.to_dict()
    shared = {k: v for k, v in d.items() if k not in PER_ARM_KEYS}
    shared["optim"] = (d.get("optim") or {}).get("name", "sgd")  # its hyperparameters: per arm
    return json.dumps(shared, sort_keys=True, default=str)


def work_estimate(settings: TrainSettings) -> float:
    """A run's training work, roughly (steps x seq_len x batch x H (H + 64) x the cell's gate
    blocks, 1 for the vanilla cell): only for the launcher's plan (where to cut stacks so the
    workers end together, which units start first)."""
    s = lifecycle.with_budget(settings)
    gated_cell = gated.CELLS.get(lifecycle.cell_name(s))
    blocks = gated_cell.n_gates if gated_cell is not None else 1
    H = s.hidden_size
    return float(s.steps * s.seq_len * s.batch_size * H * (H + 64) * blocks)


# --------------------------------------------------------------------------------------
# Which arm a log line belongs to (the launcher routes each arm's lines to its train.log)
# --------------------------------------------------------------------------------------

_ARM: contextvars.ContextVar[str | None] = contextvars.ContextVar("rnn_lab_arm", default=None)


@contextlib.contextmanager
def arm_context(run_dir: str | Path | None) -> Iterator[None]:
    """Log lines inside the block belong to the arm training into run_dir."""
    token = _ARM.set(None if run_dir is None else str(Path(run_dir)))
    try:
        yield
    finally:
        _ARM.reset(token)


class ArmLogFilter(logging.Filter):
    """Passes the lines of one arm, and the lines of no arm in particular (the group's)."""

    def __init__(self, run_dir: str | Path):
        super().__init__()
        self.run_dir = str(Path(run_dir))

    def filter(self, record: logging.LogRecord) -> bool:
        arm = _ARM.get()
        return arm is None or arm == self.run_dir


# --------------------------------------------------------------------------------------
# The arms
# --------------------------------------------------------------------------------------


@dataclass
class ArmJob:
    """One run of a group: its settings and its run directory."""

    settings: TrainSettings
    run_dir: Path


@dataclass
class _Arm:
    index: int  # position in the jobs given to train_group
    s: TrainSettings  # with the budget applied
    run_dir: Path
    run_id: str
    locks: contextlib.ExitStack
    plan: lifecycle.Plan | None = None
    state: TrainState | None = None
    last_grads: object = None
    runtime: lifecycle.RunTime | None = None  # set when its stack starts

    @property
    def key(self) -> str:
        """The arm's name for log routing (see arm_context)."""
        return str(self.run_dir)

    def release(self) -> None:
        self.locks.close()


@dataclass
class _Results:
    """What train_group returns, per job: a summary, or the exception that stopped it."""

    values: list = field(default_factory=list)

    def set(self, arm: _Arm, value) -> None:
        self.values[arm.index] = value


def train_group(jobs, *, task=None) -> list:
    """Train the jobs (ArmJob or (settings, run_dir)) as one stack; return, per job, its
    summary (as trainer.train returns it) or the exception that ended it: RunConflict or
    LockHeld (refused before any work), or any error raised while training (the app records
    it as failed). Every job must have the same group_key (not None)."""
    jobs = [j if isinstance(j, ArmJob) else ArmJob(j[0], Path(j[1])) for j in jobs]
    if not jobs:
        return []
    settings = [lifecycle.with_budget(j.settings) for j in jobs]
    keys = {group_key(s) for s in settings}
    if None in keys or len(keys) != 1:
        raise ValueError("train_group: the jobs do not share an engine (their group keys differ)")
    results = _Results([None] * len(jobs))
    task = lifecycle.build_task(settings[0]) if task is None else task
    arms = _plan_arms(jobs, settings, task, results)
    stop = lifecycle.StopFlag()
    stop.install()
    try:
        for stack in _stacks(arms, task, results):
            with lifecycle.diverging_quietly():
                _train_stack(stack, stop, results)
    finally:
        stop.restore()
        for arm in arms:
            arm.release()
    return results.values


def _plan_arms(jobs, settings, task, results: _Results) -> list[_Arm]:
    """Lock and plan every arm (before any work); the refused and complete ones are answered
    in results, the rest returned to train."""
    arms = []
    for i, (job, s) in enumerate(zip(jobs, settings)):
        run_dir = Path(job.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        arm = _Arm(i, s, run_dir, lifecycle.run_id_of(s, task), contextlib.ExitStack())
        with arm_context(run_dir):
            try:
                arm.locks.enter_context(
                    rundir.file_lock(run_dir / rundir.LOCK_FILE, "run directory")
                )
                plan = lifecycle.plan_run(s, run_dir, task)
            except (RunConflict, LockHeld) as e:
                arm.release()
                results.set(arm, e)
                continue
            log.info("%s: %s", run_dir, plan.reason)
        if plan.complete is not None:
            arm.release()
            results.set(arm, plan.complete)
            continue
        arm.plan = plan
        arms.append(arm)
    return arms


def _stacks(arms: list[_Arm], task, results: _Results) -> Iterator[list[_Arm]]:
    """Start every arm as the trainer does and yield them in stacks of one start step, each
    stack sharing one task (its data pointer) in that step's position."""
    by_step: dict[int, list[_Arm]] = {}
    for arm in arms:
        with arm_context(arm.run_dir):
            try:
                # A resumed arm moves its own copy of the task to its checkpoint's pointer.
                own = task if arm.plan.checkpoint is None else copy.copy(task)
                arm.state = lifecycle.start_run(arm.s, arm.run_dir, own, arm.plan)
                lifecycle.write_start_files(arm.s, arm.run_dir, arm.state, arm.run_id)
            except Exception as e:
                log.exception("%s: could not start", arm.run_dir)
                arm.release()
                results.set(arm, e)
                continue
        by_step.setdefault(arm.state.step, []).append(arm)
    for step in sorted(by_step):
        stack = by_step[step]
        shared = next((a.state.task for a in stack if a.state.task is not task), task)
        for arm in stack:
            arm.state.task = shared
        yield stack


# --------------------------------------------------------------------------------------
# Training one stack
# --------------------------------------------------------------------------------------


class _LoopEngine:
    """The reference engine: each arm's own single-run step, one arm after another."""

    def __init__(self, arms: list[_Arm]):
        self.arms = list(arms)

    def step(self, batch) -> list[StepResult]:
        return [train_step(arm.state, batch, arm.s) for arm in self.arms]

    def select(self, keep: list[int]) -> None:
        self.arms = [self.arms[i] for i in keep]

    def validation_losses(self) -> dict[int, float]:
        return {}  # each arm validates itself (lifecycle.validation_loss)


class _ArmOptimizer:
    """An arm's optimiser as its TrainState sees it: ``.state`` is the single run's
    optimizer.state (the checkpoint's optim.* arrays), read from the stacked optimiser."""

    def __init__(self, engine: _StackedEngine, arm: _Arm):
        self.engine, self.arm = engine, arm

    @property
    def state(self) -> dict:
        return self.engine.optimizer_state(self.arm)


class _LeftOptimizer:
    """The optimiser state of an arm that left the stack (diverged): kept as it was."""

    def __init__(self, state: dict):
        self.state = state


class _StackedEngine:
    """The arms in one rnn_lab.core.stacked_engine. Each arm's TrainState holds views of
    its row (params, h) and an optimiser whose state is its row of the stacked one; the
    step is train_step's, with forward, loss, BPTT and the update done for all arms at once
    and the per-arm bookkeeping by step.measure_step on each arm's views.

    Why step / validation_losses repeat run.step.train_step and lifecycle.validation_loss
    with an arm axis instead of the single run being their K = 1 case: the single-run ones
    serve every cell (GRU and LSTM have no stacked form) and the stacked path is slower for
    one arm: `rnn-lab bench --stacked --ks 1,6 --clock cpu` (2026-12-07, load ~2): K = 1
    takes +26% (float64) and +34% (float32) time per step against the single-run path. The
    loss is one copy (rnn_lab.core.losses' arm-axis forms; the single run is K = 1); the
    optimisers stay two (see rnn_lab.core.stacked_optim). The bit-identity tests
    (tests/test_stacked_launcher.py, tests/test_stacked_engine.py) hold the pairs together."""

    def __init__(self, arms: list[_Arm]):
        order = stacked_core.activation_order(
            [stacked_core.ArmSettings(a.s.activation, a.s.freeze_whh) for a in arms]
        )
        self.arms = [arms[i] for i in order]  # a run per activation, its frozen arms last
        states = [a.state for a in self.arms]
        self.sp = stacked_core.StackedParams.stack([st.params for st in states])
        self.optimizer = make_stacked_optimizer(
            self.arms[0].s.optim.get("name", "sgd"), [a.s.optim for a in self.arms]
        )
        for k, st in enumerate(states):
            self.optimizer.load_arm_state(k, st.optimizer.state)
        self.h = np.stack([st.h for st in states])  # (K, B, H)
        self._rebind()

    def _rebind(self) -> None:
        self.settings = [
            stacked_core.ArmSettings(a.s.activation, a.s.freeze_whh, a.s.clip, a.s.clip_mode)
            for a in self.arms
        ]
        self.n_trainable = self.sp.n_trainable(self.settings)
        for k, arm in enumerate(self.arms):
            arm.state.params = self.sp.arm(k)
            arm.state.optimizer = _ArmOptimizer(self, arm)
            arm.state.h = self.h[k]

    def optimizer_state(self, arm: _Arm) -> dict:
        return self.optimizer.arm_state(self.arms.index(arm))

    def select(self, keep: list[int]) -> None:
        """Only the arms ``keep`` go on; the others keep their last state as it is."""
        for k, arm in enumerate(self.arms):
            if k not in keep:
                state = {n: np.array(v) for n, v in self.optimizer.arm_state(k).items()}
                arm.state.optimizer = _LeftOptimizer(state)
        self.arms = [self.arms[k] for k in keep]
        if self.arms:
            self.sp = self.sp.select(keep)
            self.optimizer = self.optimizer.select(keep)
            self.h = self.h[np.asarray(keep, dtype=np.intp)]
            self._rebind()

    def validation_losses(self) -> dict[int, float]:
        """lifecycle.validation_loss of every arm (by id), in one stacked pass."""
        task, sp = self.arms[0].state.task, self.sp
        total, counted, h = np.zeros(sp.K), 0.0, None
        for batch in task.validation_batches():
            B = batch.inputs.shape[1]  # losses are means over streams: weigh blocks by size
            if h is None or batch.reset_h:
                h = np.zeros((sp.K, B, sp.hidden_size), dtype=sp.dtype)
            cache = stacked_core.forward(sp, batch.inputs, h, self.settings)
            loss, _, n = stacked_loss(task.loss_name, cache.logits, batch.targets, batch.mask)
            total, counted, h = total + loss * B, counted + n * B, cache.h_last
        values = total / counted if counted else np.full(sp.K, math.nan)
        return {id(arm): float(v) for arm, v in zip(self.arms, values)}

    def _forward(self, batch):
        cache = stacked_core.forward(self.sp, batch.inputs, self.h, self.settings)
        loss_name = self.arms[0].state.task.loss_name
        return cache, *stacked_loss(loss_name, cache.logits, batch.targets, batch.mask)

    def step(self, batch) -> list[StepResult]:
        """train_step for every arm: an arm whose loss diverges gets its StepResult with
        ``diverged`` and no update (it must be dropped with select before the next step)."""
        arms, step = self.arms, self.arms[0].state.step + 1
        if batch.reset_h:
            self.h = np.zeros_like(self.h)
            for k, arm in enumerate(arms):
                arm.state.h = self.h[k]
        lrs = [step_decay_lr(step, a.s.lr, a.s.lr_decay_rate, a.s.lr_decay_every) for a in arms]
        cache, loss_sum, dlogits, n_counted = self._forward(batch)
        out: dict[int, StepResult] = {}
        n_outputs = cache.logits.shape[-1]
        for k, arm in enumerate(arms):
            loss = float(loss_sum[k]) / n_counted if n_counted > 0 else math.nan
            why = (
                divergence(loss, arm.state, arm.s.diverge_factor, n_outputs) if n_counted else None
            )
            if why is not None:
                out[id(arm)] = StepResult(loss, None, lrs[k], diverged=f"{why} at step {step}")
        if out:  # they leave before BPTT: the others' step is computed without them
            order = list(arms)
            self.select([k for k, a in enumerate(arms) if id(a) not in out])
            if self.arms:
                out.update({id(a): r for a, r in zip(self.arms, self._update(batch, step))})
            return [out[id(a)] for a in order]
        return self._update(batch, step, (cache, loss_sum, dlogits, n_counted), lrs)

    def _update(self, batch, step: int, forward=None, lrs=None) -> list[StepResult]:
        arms, s = self.arms, self.arms[0].s
        if forward is None:
            forward = self._forward(batch)
            lrs = [step_decay_lr(step, a.s.lr, a.s.lr_decay_rate, a.s.lr_decay_every) for a in arms]
        cache, loss_sum, dlogits, n_counted = forward
        profile = profile_due(step, s)
        grads = stacked_core.backward(self.sp, cache, dlogits, self.settings, profile=profile)
        self._spectra(step, s)
        results = []
        losses = [v / n_counted if n_counted > 0 else math.nan for v in loss_sum.tolist()]
        for k, (arm, g) in enumerate(zip(arms, _arm_gradients(grads))):
            measure_step(arm.state, arm.s, step, lrs[k], _ArmCache(cache, k), g, batch, losses[k])
            results.append(StepResult(losses[k], g, lrs[k]))
        self.optimizer.step(self.sp.flat, grads.flat, np.array(lrs), self.n_trainable)
        self.h = cache.h_last  # carried; the gradient is truncated here
        for k, arm in enumerate(arms):
            arm.state.h = self.h[k]
            arm.state.step = step
        return results

    def _spectra(self, step: int, s) -> None:
        """On the steps that record them, every arm's eigenvalues and sigma_max of W_hh in one
        batched np.linalg call each over the (K, H, H) stack (LAPACK per matrix, as each
        arm's own call: the same values), left in the arms' spectrum memos for measure_step.
        Arms whose W_hh has not changed since their last spectrum (freeze_whh) keep it."""
        eigen, sigma = spectrum_due(step, s)
        if not (eigen or sigma):
            return
        finite = np.isfinite(self.sp.W_hh).all(axis=(1, 2)).tolist()
        todo = [  # (a non-finite W_hh would fail the whole batch: such an arm goes alone)
            k for k, arm in enumerate(self.arms) if finite[k] and not spectrum_is_current(arm.state)
        ]
        if not todo:
            return
        W = self.sp.W_hh if len(todo) == self.sp.K else self.sp.W_hh[todo]  # (n, H, H)
        eigenvalues = np.linalg.eigvals(W) if eigen else None
        singular = np.linalg.svd(W, compute_uv=False) if sigma else None
        for i, k in enumerate(todo):
            state = self.arms[k].state
            ev = None if eigenvalues is None else (eigenvalues[i], radii_of(eigenvalues[i]))
            sv = None if singular is None else float(np.max(singular[i]))
            state.spectrum_memo = Spectrum(state.params, eigen=ev, sigma_max=sv)


class _LazyViews(Mapping):
    """An arm's gradients by name, made only when asked for (the bookkeeping reads the
    norms, not the arrays: building the views every step costs ~5% of a stacked step)."""

    def __init__(self, flat: np.ndarray, shapes: dict):
        self._flat, self._shapes, self._views = flat, shapes, None

    def _get(self) -> dict:
        if self._views is None:
            self._views = core_engine.flat_views(self._flat, self._shapes)
        return self._views

    def __getitem__(self, name):
        return self._get()[name]

    def __iter__(self):
        return iter(self._get())

    def __len__(self):
        return len(self._shapes)


def _arm_gradients(grads) -> list[core_engine.Gradients]:
    """[grads.arm(k) for every k], with the named views made lazily and the (K,) arrays
    turned into Python scalars in one call each (the same values float() and bool() give)."""
    K, shapes = grads.flat.shape[0], grads.shapes
    last, norms = grads.last_loss_grad_norm, grads.param_grad_norms
    return [
        core_engine.Gradients(
            grads=_LazyViews(flat, shapes),
            flat=flat,
            total_norm=total_norm,
            clipped=clipped,
            clip_ratio=clip_ratio,
            per_step_grad_norm=per_step,
            last_loss_grad_norm=None if last is None else last[k],
            param_grad_norms=None if norms is None else norms[k],
        )
        for k, flat, total_norm, clipped, clip_ratio, per_step in zip(
            range(K),
            grads.flat,
            grads.total_norm.tolist(),
            grads.clipped.tolist(),
            grads.clip_ratio.tolist(),
            grads.per_step_grad_norm,
        )
    ]


class _ArmCache:
    """cache.arm_cache(k), made only when the bookkeeping reads it (record and Jacobian
    steps): most steps never look at the forward cache."""

    __slots__ = ("_stacked", "_k", "_cache")

    def __init__(self, stacked: stacked_core.StackedCache, k: int):
        self._stacked, self._k, self._cache = stacked, k, None

    def __getattr__(self, name):
        if self._cache is None:
            self._cache = self._stacked.arm_cache(self._k)
        return getattr(self._cache, name)


# "stacked": rnn_lab.core.stacked_engine; "loop": each arm's train_step (the reference).
ENGINE = "stacked"


def make_engine(arms: list[_Arm]):
    if ENGINE == "loop":
        return _LoopEngine(arms)
    return _StackedEngine(arms)


def _train_stack(stack: list[_Arm], stop, results: _Results) -> None:
    s = stack[0].s  # the shared settings (steps, schedules, data)
    stopped = False
    t0 = time.perf_counter()
    active = list(stack)
    for arm in active:
        arm.runtime = lifecycle.RunTime.of(arm.state)
    try:
        engine = make_engine(active)
        active = list(engine.arms)  # the engine's order
        task = active[0].state.task
        while active and active[0].state.step < s.steps:
            batch = task.next_batch()
            step_results = engine.step(batch)
            # The step the surviving arms are at: an arm that diverged in this update was
            # not advanced, so active[0] (if it diverged) would name the step before.
            step = next((a.state.step for a, r in zip(active, step_results) if not r.diverged), 0)
            work = lifecycle.work_after(s, step)  # the schedules are shared by the arms
            val = engine.validation_losses() if engine.arms and work.validate else {}
            elapsed = time.perf_counter() - t0
            keep = []
            for i, (arm, result) in enumerate(zip(active, step_results)):
                if result.diverged is None:
                    arm.last_grads = result.grads
                    arm.runtime.update(arm.state, elapsed)
                    keep.append(i)
                    if not work:
                        continue
                token = _ARM.set(arm.key)  # (arm_context without its cost)
                try:
                    if result.diverged is not None:
                        why, grads = result.diverged, arm.last_grads
                        args = (arm.s, arm.state, arm.runtime, elapsed, grads)
                        _end(arm, lifecycle.loop_outcome(*args, diverged=why), results)
                        continue
                    args = (arm.s, arm.run_dir, arm.state, result, arm.run_id)
                    # (through the module: a test wraps lifecycle.after_step for both trainers)
                    lifecycle.after_step(*args, val_loss=val.get(id(arm)))
                finally:
                    _ARM.reset(token)
            if len(keep) < len(active):
                active = [active[i] for i in keep]
                if len(engine.arms) != len(active):
                    engine.select(keep)
            if stop.signum is not None:
                stopped = True
                break
    except Exception as e:
        log.exception("the stack of %d arms failed", len(active))
        for arm in active:
            results.set(arm, e)
        return
    elapsed = time.perf_counter() - t0
    final_val = active and not stopped and lifecycle.final_validation_due(s, active[0].state.step)
    val = engine.validation_losses() if final_val else {}
    for arm in active:
        with arm_context(arm.run_dir):
            signum = stop.signum if stopped else None
            args = (arm.s, arm.state, arm.runtime, elapsed, arm.last_grads, signum)
            _end(arm, lifecycle.loop_outcome(*args), results, val.get(id(arm)))


def _end(arm: _Arm, outcome: lifecycle.LoopOutcome, results: _Results, val_loss=None) -> None:
    """Finish an arm's files as the trainer does, release its lock and answer its job."""
    try:
        summary = lifecycle.finish_run(arm.s, arm.run_dir, arm.state, arm.run_id, outcome, val_loss)
        results.set(arm, summary)
    except Exception as e:
        log.exception("%s: could not write the run's files", arm.run_dir)
        results.set(arm, e)
    finally:
        arm.release()


__all__ = ["ArmJob", "ArmLogFilter", "arm_context", "group_key", "train_group"]
