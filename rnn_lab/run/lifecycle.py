"""One run's life around its steps, for the single trainer and the stacked one alike.

Both trainers call these functions for each run (a stacked run: each arm), so a run's
directory is the same whichever trained it:

- the start: :func:`plan_run` (finished, resume, start afresh, or a :class:`RunConflict`
  before any file is touched), :func:`start_run` (the run's TrainState) and
  :func:`write_start_files`;
- after each step: :func:`after_step` does what the schedule (:func:`work_after`, from the
  run's own step) says is due: validation, sample, progress line, checkpoint (the history
  and record rows are written by :func:`rnn_lab.run.step.measure_step` inside the step);
- the end: :func:`loop_outcome` (ok, diverged, interrupted, absurd at the end, with the
  run's time), :func:`finish_run` (final validation, sample, files, summary). The analysis
  hand-off is the app's (rnn_lab.app.main.finish: run/ does not import rnn_lab.inspect), for
  a single run and a stacked arm alike.

The trainers keep only their loops: :mod:`rnn_lab.run.trainer` (one run) and
:mod:`rnn_lab.run.stacked` (many arms in one engine). It never sees a Hydra config.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from rnn_lab.core import cells, engine
from rnn_lab.core.losses import get_loss
from rnn_lab.core.tasks import budget_steps, sequences_seen, time_steps_seen
from rnn_lab.run import init_drawer, input_files, rundir
from rnn_lab.run.integrity import verify_run_dir
from rnn_lab.run.rundir import RunConflict
from rnn_lab.run.schedule import due, history_row_due
from rnn_lab.run.settings import DTYPES, TrainSettings, identity_settings
from rnn_lab.run.state import Recorder, TrainState, saved_settings
from rnn_lab.run.step import absurd_at_end

log = logging.getLogger("rnn_lab")

LN2 = math.log(2.0)

HISTORY_BASE = [
    "step",
    "loss",
    "val_loss",
    "lr",
    "grad_norm",
    "clipped",
    "clip_ratio",
    "clip_fraction",
    "spectral_radius",
]


class TrainError(ValueError):
    """A setting or input that cannot work; the message names the key, value and options."""


# --------------------------------------------------------------------------------------
# Building the pieces
# --------------------------------------------------------------------------------------


def build_task(s: TrainSettings):
    try:
        task = input_files.make_task(
            s.data, s.seq_len, s.batch_size, s.val_fraction, s.val_max_chars, DTYPES[s.dtype]
        )
    except ValueError as e:
        raise TrainError(str(e)) from None
    if s.use_embedding and not getattr(task, "index_inputs", True):
        raise TrainError(
            f"use_embedding=true is not valid with data={s.data.get('name')}: its inputs are "
            "real values, not characters; use use_embedding=false"
        )
    return task


def is_char_task(task) -> bool:
    """A text task (characters: a vocabulary to sample and decode), not a sequence task."""
    return getattr(task, "vocab", None) is not None


def with_budget(s: TrainSettings) -> TrainSettings:
    """The settings with ``steps`` replaced by what ``budget_chars`` buys (when it is > 0):
    the fewest steps that read at least budget_chars characters (time steps x streams)."""
    if s.budget_chars <= 0:
        return s
    return replace(s, steps=budget_steps(s.data, s.seq_len, s.batch_size, s.budget_chars))


def chars_seen(s: TrainSettings, steps: int) -> int:
    """Characters (time steps x streams) the first ``steps`` steps of this run read."""
    return time_steps_seen(s.data, s.seq_len, s.batch_size, steps)


def build_params(s: TrainSettings, task):
    """The run's initial parameters: engine.Params (rnn) or gated.GRUParams / LSTMParams."""
    sizes = (task.input_size, s.hidden_size, task.output_size)
    embed_dim = s.embed_dim if s.use_embedding else 0
    cell = cell_name(s)
    try:
        cells.check_activation(cell, s.activation)
        return input_files.build_params(
            s.init,
            sizes,
            seed=s.seed,
            embed_dim=embed_dim,
            dtype=DTYPES[s.dtype],
            cell=cell,
            forget_bias=s.cell.get("forget_bias"),
        )
    except ValueError as e:
        raise TrainError(str(e)) from None


def cell_name(s: TrainSettings) -> str:
    return (s.cell or {}).get("name", "rnn")


def val_split_chars(task) -> int:
    """Characters of the task's validation split (0: a sequence task, which has none)."""
    return task.n_val if is_char_task(task) else 0


def run_id_of(s: TrainSettings, task) -> str:
    return rundir.run_identity(identity_settings(s, val_split_chars(task)), task.data_sha1)


def sample_text(params, activation, task, rng, length, temperature, prime=" ") -> str:
    vocab = task.vocab
    prime_ids = [vocab.index.get(c, 0) for c in prime] or [0]
    act = engine.get_activation(activation)
    ids = cells.sample(params, act, prime_ids, length, temperature, rng)
    return vocab.decode(ids)


def validation_loss(params, activation: str, task) -> float:
    """Loss per counted position over the validation split, from h = 0, in bounded chunks
    (h carried from chunk to chunk: the same value as one pass over the whole split)."""
    act = engine.get_activation(activation)
    loss_fn = get_loss(task.loss_name)
    cell = cells.cell_of(params)
    total, counted, state = 0.0, 0.0, None
    for batch in task.validation_batches():
        B = batch.inputs.shape[1]  # losses are means over streams: weigh blocks by their size
        if state is None or batch.reset_h:
            state = cells.zero_state(cell, B, params.hidden_size, params.dtype)
        cache = cells.forward(params, batch.inputs, state, act)
        loss, _, n = loss_fn(cache.logits, batch.targets, batch.mask)
        total, counted, state = total + loss * B, counted + n * B, cells.final_state(cache)
    return total / counted if counted else math.nan


# --------------------------------------------------------------------------------------
# Reusing a directory
# --------------------------------------------------------------------------------------


@dataclass
class Plan:
    """What to do in a run directory: return a finished run, resume, or start afresh."""

    complete: dict | None = None  # the summary of a finished run with this identity
    checkpoint: dict | None = None  # the arrays to resume from
    reason: str = ""


def plan_run(s: TrainSettings, run_dir: Path, task) -> Plan:
    """Decide how to use run_dir; raise RunConflict when it belongs to another run.

    Same identity: resume=false starts afresh (the same run again); resume=true returns a
    finished, sound run as it is, resumes from the last sound checkpoint, or starts afresh.
    Asking for fewer steps than a run already did is a conflict (steps cannot be undone).
    With budget_chars > 0 the steps are those the budget buys (see with_budget). task: the
    run's task (its data hash and validation split decide the run identity, run_id_of).
    """
    s = with_budget(s)
    run_id, data_sha1, n_val = run_id_of(s, task), task.data_sha1, val_split_chars(task)
    owner = _owner(run_dir)
    if owner is None:
        return Plan(reason="new run directory")
    owner_id, owner_settings, owner_sha1, summary = owner
    if owner_id != run_id:
        identities = (identity_settings(owner_settings, n_val), identity_settings(s, n_val))
        raise RunConflict(_conflict_message(run_dir, identities, owner_sha1, data_sha1))
    if not s.resume:
        return Plan(reason="resume=false: starting again from step 0")
    done = int(summary.get("steps_done") or 0) if summary else 0
    if done > s.steps:
        raise RunConflict(
            f"{run_dir} holds this run trained for {done} steps; steps={s.steps} asks for "
            f"fewer. Ways out: steps={done} (or more, to extend it), another output directory, "
            "or delete the directory"
        )
    problems = verify_run_dir(run_dir)
    status = summary.get("status") if summary else None
    finished = status == rundir.DIVERGED or (status == rundir.OK and done == s.steps)
    if finished and not problems:
        return Plan(complete=summary, reason=f"already complete ({status})")
    try:
        arrays = rundir.read_checkpoint(run_dir)
    except rundir.RunDirError as e:
        return Plan(reason=f"no sound checkpoint ({e}): starting again from step 0")
    if problems:
        log.warning("%s is damaged (%s): retraining from its checkpoint", run_dir, problems[0])
    return Plan(checkpoint=arrays, reason=f"resuming from the checkpoint at step {arrays['step']}")


def _owner(run_dir: Path):
    """(run_id, settings, data sha1, summary) of the run that wrote run_dir, or None."""
    summary = _read_mapping(run_dir / rundir.SUMMARY_FILE)
    settings = _read_mapping(run_dir / rundir.SETTINGS_FILE)
    vocab = _read_mapping(run_dir / rundir.VOCAB_FILE) or {}
    data_sha1 = vocab.get("text_sha1") or (_read_mapping(run_dir / rundir.TASK_FILE) or {}).get(
        "data_sha1"
    )
    run_id = (summary or {}).get("run_id")
    if run_id is None:
        try:
            arrays = rundir.read_checkpoint(run_dir)
            run_id = str(arrays["run_id"]) if "run_id" in arrays else None
            settings = settings or saved_settings(arrays)
        except rundir.RunDirError:
            pass
    if run_id is None and settings and vocab.get("text_sha1"):
        # A directory written before run ids were stored: its identity from its files.
        run_id = rundir.run_identity(identity_settings(settings), vocab["text_sha1"])
    if run_id is None:
        return None  # nothing identifies an owner: an empty or unreadable directory
    return run_id, settings or {}, data_sha1, summary


def _read_mapping(path: Path) -> dict | None:
    try:
        value = rundir.read_json_or_none(path)
    except (ValueError, OSError):
        return None
    return value if isinstance(value, dict) else None


def _conflict_message(run_dir, identities: tuple[dict, dict], owner_sha1, data_sha1) -> str:
    old = {**identities[0], "data_sha1": owner_sha1}
    new = {**identities[1], "data_sha1": data_sha1}
    diff = rundir.describe_differences(old, new) or "its run identity"
    return (
        f"{run_dir} belongs to another run ({diff}); nothing in it was changed. Ways out: "
        "another output directory (hydra.run.dir=... or hydra.sweep.dir=...), the settings "
        "it was trained with, or delete the directory"
    )


# --------------------------------------------------------------------------------------
# The start
# --------------------------------------------------------------------------------------


def start_run(s: TrainSettings, run_dir: Path, task, plan: Plan) -> TrainState:
    state = _started(s, run_dir, task, plan)
    init_drawer.stop()  # the initial weights exist (or none were drawn): its core is free
    return state


def _started(s: TrainSettings, run_dir: Path, task, plan: Plan) -> TrainState:
    if plan.checkpoint is None:
        rundir.clear_outputs(run_dir)  # no file of an earlier attempt survives a fresh start
        return TrainState.start(build_params(s, task), s.optim, task, s.batch_size, s.seed)
    rows = _sound_history(s, run_dir, int(plan.checkpoint["step"]))
    recorder = _sound_diagnostics(s, run_dir, int(plan.checkpoint["step"]))
    if rows is None or recorder is None:
        log.warning("%s: history or diagnostics do not cover the checkpoint: restarting", run_dir)
        return _started(s, run_dir, task, Plan())
    state = TrainState.from_arrays(plan.checkpoint, s.optim, task, cell_name(s))
    state.rows, state.recorder = rows, recorder
    if (run_dir / rundir.ANALYSIS_FILE).exists():
        (run_dir / rundir.ANALYSIS_FILE).unlink()  # it described the run at an earlier step
    return state


def history_columns(s: TrainSettings) -> list[str]:
    """history.csv's columns for these settings: the base ones; with record, the record ones,
    gradient norms by the cell's parameter names and, for gated cells, each gate block's
    spectral radius and saturation."""
    cell = cell_name(s)
    base = list(HISTORY_BASE)
    if cell != "rnn":
        base += [f"spectral_radius_{g}" for g in cells.gate_names(cell)]
    if not s.record:
        return base
    names = [*cells.param_names(cell), *(("E",) if s.use_embedding else ())]
    record = ["sigma_max", *(f"grad_norm_{n}" for n in names), "saturation"]
    record += [f"gate_saturation_{g}" for g in cells.gate_names(cell)]
    return base + record + ["position_accuracy"]


# Columns every history row has (val_loss only on validation rows).
REQUIRED_COLUMNS = frozenset(HISTORY_BASE) - {"val_loss"}


def _sound_history(s: TrainSettings, run_dir: Path, step: int) -> list[dict] | None:
    """The history rows up to a checkpoint's step, or None when they are not exactly the rows
    the schedule writes (a truncated or edited history.csv cannot be resumed from)."""
    try:
        rows = rundir.read_history_rows(run_dir / rundir.HISTORY_FILE, step)
    except (ValueError, OSError):
        return None
    expected = [t for t in range(1, step + 1) if history_row_due(t, s)]
    if [r["step"] for r in rows] != expected or any(REQUIRED_COLUMNS - r.keys() for r in rows):
        return None
    return rows


def _sound_diagnostics(s: TrainSettings, run_dir: Path, step: int) -> Recorder | None:
    """The recorder up to a checkpoint's step; None when diagnostics.npz is unreadable."""
    path = run_dir / rundir.DIAGNOSTICS_FILE
    if not s.record or not path.exists():
        return Recorder()  # nothing recorded (or nothing yet: no record point was saved)
    try:
        recorder = Recorder.from_arrays(rundir.read_npz(path))
    except rundir.RunDirError:
        return None
    recorder.truncate(step)
    return recorder


def write_start_files(s: TrainSettings, run_dir: Path, state: TrainState, run_id: str) -> None:
    task = state.task
    rundir.atomic_write_json(run_dir / rundir.SETTINGS_FILE, s.to_dict())
    if is_char_task(task):
        vocab = {"chars": task.vocab.chars, "text_sha1": task.data_sha1}
        rundir.atomic_write_json(run_dir / rundir.VOCAB_FILE, vocab)
    else:  # a sequence task: what it is, its sizes, data hash and baselines
        rundir.atomic_write_json(run_dir / rundir.TASK_FILE, task.info())
    rundir.write_summary(run_dir, _summary(s, state, run_id, rundir.RUNNING))
    if state.step == 0:
        log.info(
            "%s | %sH=%d seq_len=%d B=%d%s | init=%s (spectral_radius=%.3f) activation=%s "
            "optim=%s lr=%g clip=%g%s",
            *(_data_note(task), _cell_note(s), s.hidden_size, s.seq_len, s.batch_size),
            _budget_note(s),
            *(s.init.get("name"), cells.spectral_radius(state.params), s.activation),
            *(s.optim.get("name"), s.lr, s.clip, " freeze_whh" if s.freeze_whh else ""),
        )


def _data_note(task) -> str:
    if not is_char_task(task):
        return task.describe()
    return (
        f"corpus {task.n_chars} chars ({task.n_train} train, {task.n_val} val), "
        f"V={task.vocab.size} | validation reads {task.val_sample.describe()}"
    )


def _cell_note(s: TrainSettings) -> str:
    cell = cell_name(s)
    return "" if cell == "rnn" else f"cell={cell} "


def _budget_note(s: TrainSettings) -> str:
    if s.budget_chars <= 0:
        return ""
    return f" | budget_chars={s.budget_chars}: {s.steps} steps read {chars_seen(s, s.steps)}"


# --------------------------------------------------------------------------------------
# After each step
# --------------------------------------------------------------------------------------


@dataclass(slots=True)
class StepWork:
    """What after_step does after one step of a run: the schedule, from the run's own step."""

    validate: bool
    sample: bool
    progress: bool  # the progress line
    checkpoint: bool

    def __bool__(self) -> bool:
        return self.validate or self.sample or self.progress or self.checkpoint


def work_after(s: TrainSettings, step: int) -> StepWork:
    """The work due after ``step`` (the step the run has just done): on most steps none (then
    the stacked trainer skips its per-arm call). A stack's arms share these settings, so
    its surviving arms share the answer; an arm that diverged at this step did not do it."""
    return StepWork(
        validate=due(step, s.val_interval, s.steps),
        sample=due(step, s.sample_interval, s.steps),
        progress=due(step, s.log_interval, s.steps, first=s.log_interval > 0, last=True),
        checkpoint=due(step, s.checkpoint_interval, s.steps) and step < s.steps,
    )


def after_step(
    s: TrainSettings, run_dir: Path, state: TrainState, result, run_id: str, val_loss=None
) -> None:
    """Validation, samples, the progress line and periodic checkpoints after an update, as
    work_after(s, state.step) says. val_loss: the validation loss when the caller computed it
    (run.stacked: all arms at once)."""
    step = state.step
    work = work_after(s, step)
    if work.validate:
        _validate(s, state, val_loss)
        state.rows[-1]["val_loss"] = state.val_loss
    if work.sample and is_char_task(state.task):
        text = sample_text(
            state.params, s.activation, state.task, state.rng, s.sample_length, s.temperature
        )
        state.recorder.add(sample_step=step, sample_text=text)
        log.info("sample at step %d (T=%g): %r", step, s.temperature, text[:80])
    if work.progress:
        row = state.rows[-1] if state.rows and state.rows[-1]["step"] == step else None
        rho = row["spectral_radius"] if row else cells.spectral_radius(state.params)
        # steps/s over the run's training time so far (all sessions); ETA at that rate
        rate = step / max(state.wall_time_s, 1e-9)
        log.info(
            "step %6d/%d | loss %.4f | grad_norm %7.2f | %-7s | lr %.4g | rho %.3f | "
            "%.0f steps/s, ETA %s",
            *(step, s.steps, result.loss, result.grads.total_norm),
            *("clipped" if result.grads.clipped else "", result.lr, rho),
            *(rate, _duration((s.steps - step) / max(rate, 1e-9))),
        )
    if work.checkpoint:
        _save(s, run_dir, state, run_id)


def _duration(seconds: float) -> str:
    """1h02m, 3m10s, 42s: the progress line's ETA."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return (
        f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
    )


def _validate(s: TrainSettings, state: TrainState, val_loss: float | None = None) -> None:
    if val_loss is None:
        val_loss = validation_loss(state.params, s.activation, state.task)
    state.val_loss = val_loss
    if math.isfinite(state.val_loss):
        state.best_val_loss = min(state.best_val_loss, state.val_loss)


def final_validation_due(s: TrainSettings, step: int) -> bool:
    """Does a run that ended ok at this step still need its final validation? Not when the
    last step's own validation computed it (same weights, same value)."""
    return not due(step, s.val_interval, s.steps)


# --------------------------------------------------------------------------------------
# The end
# --------------------------------------------------------------------------------------


@dataclass
class RunTime:
    """A run's training time across sessions: where this session started (its step) and
    the time earlier sessions took."""

    first_step: int
    wall_before: float

    @classmethod
    def of(cls, state: TrainState) -> RunTime:
        return cls(state.step, state.wall_time_s)

    def update(self, state: TrainState, elapsed: float) -> None:
        """The run's wall_time_s after ``elapsed`` seconds of this session."""
        state.wall_time_s = self.wall_before + elapsed

    def steps_per_s(self, state: TrainState, elapsed: float) -> float:
        return (state.step - self.first_step) / max(elapsed, 1e-9)


@dataclass
class LoopOutcome:
    status: str
    error: str | None
    signum: int | None  # the signal that interrupted the run
    steps_per_s: float
    last_grads: engine.Gradients | None


def loop_outcome(
    s: TrainSettings,
    state: TrainState,
    runtime: RunTime,
    elapsed: float,
    last_grads,
    signum: int | None = None,
    diverged: str | None = None,
) -> LoopOutcome:
    """How a run's loop ended, after ``elapsed`` seconds of this session: ``diverged`` (the
    reason train_step gave, before the update), interrupted by ``signum`` (seen after a step:
    checkpointed by finish_run), diverged when the loss is absurd at the last step, else ok."""
    runtime.update(state, elapsed)
    status, error = rundir.OK, None
    if diverged is not None:
        status, error, signum = rundir.DIVERGED, diverged, None
        log.warning("diverged: %s", error)
    elif signum is not None:
        status = rundir.INTERRUPTED
        error = f"stopped by {signal.Signals(signum).name} at step {state.step}"
        log.warning("%s; checkpoint written, resume with resume=true", error)
    elif state.step == s.steps:
        error = absurd_at_end(state, s.diverge_factor)
        status = rundir.DIVERGED if error else status
    speed = runtime.steps_per_s(state, elapsed)
    return LoopOutcome(status, error, signum, speed, last_grads)


def finish_run(s, run_dir: Path, state: TrainState, run_id: str, loop: LoopOutcome, val_loss=None):
    sample = ""
    if loop.status == rundir.OK:
        if final_validation_due(s, state.step):
            _validate(s, state, val_loss)
        if state.rows and state.rows[-1]["step"] == s.steps:
            state.rows[-1]["val_loss"] = state.val_loss
        if is_char_task(state.task):
            rng = np.random.default_rng(s.seed + 1)  # its own stream: the same sample on resume
            sample = sample_text(
                state.params, s.activation, state.task, rng, s.sample_length, s.temperature
            )
    _save(s, run_dir, state, run_id)
    summary = _summary(s, state, run_id, loop.status, loop, sample)
    summary = rundir.write_summary(run_dir, summary)
    log.log(
        logging.INFO if loop.status == rundir.OK else logging.WARNING,  # a sweep's terminal too
        "done: status=%s steps=%d loss=%.4f val_loss=%.4f%s %s spectral_radius=%.3f "
        "in %.1fs (%.0f steps/s) -> %s",
        *(loop.status, state.step, summary["final_loss"] or math.nan, state.val_loss),
        _val_note(summary),
        _done_note(summary),
        *(summary["spectral_radius"] or math.nan, state.wall_time_s, loop.steps_per_s, run_dir),
    )
    return summary


def _val_note(summary: dict) -> str:
    """ " (on 32768 of 256141 validation chars)" when validation read a sample of its split."""
    read, split = summary.get("val_chars_read"), summary.get("val_split_chars")
    if read is None or read == split:
        return ""
    return f" (on {read} of {split} validation chars)"


def _done_note(summary: dict) -> str:
    if summary.get("bits_per_char") is not None:
        return f"bits/char={summary['bits_per_char']:.3f}"
    return f"read {summary.get('chars_seen')} time steps x streams"


def _summary(s, state: TrainState, run_id: str, status: str, loop=None, sample="") -> dict:
    """The trainer's summary.json fields. final_loss and val_loss are the task's loss per
    counted position: nats per character (text), nats per step (copy), the mean squared error
    (adding: at the last step; memory_capacity: per output and counted step); bits per char
    only for text. val_chars_read of val_split_chars: the characters of the validation split
    that validation reads (text; see rnn_lab.core.data.val_sample). chars_seen: characters
    (time steps x streams) read; sequences_seen: whole sequences trained on (sequence tasks;
    None on text)."""
    final_loss = state.final_loss
    val = state.val_loss if status != rundir.RUNNING else math.nan
    finite = all(np.all(np.isfinite(a)) for a in state.params.arrays().values())
    char = is_char_task(state.task)
    summary = {
        "status": status,
        "run_id": run_id,
        "steps": s.steps,
        "steps_done": int(state.step),
        "final_loss": final_loss,
        "val_loss": rundir.finite_or_none(val),
        "best_val_loss": rundir.finite_or_none(state.best_val_loss),
        "bits_per_char": final_loss / LN2 if final_loss is not None and char else None,
        "val_bits_per_char": val / LN2 if math.isfinite(val) and char else None,
        "val_chars_read": state.task.n_val_used if char else None,
        "val_split_chars": state.task.n_val if char else None,
        "spectral_radius": cells.spectral_radius(state.params) if finite else None,
        "final_grad_norm": loop.last_grads.total_norm if loop and loop.last_grads else None,
        "wall_time_s": state.wall_time_s,
        "steps_per_s": loop.steps_per_s if loop else 0.0,
        "chars_seen": chars_seen(s, int(state.step)),
        "sequences_seen": sequences_seen(s.data, s.seq_len, s.batch_size, int(state.step)),
        "sample": sample,
        "error": loop.error if loop else None,
    }
    if loop is not None and loop.signum is not None and status == rundir.INTERRUPTED:
        summary["signal"] = int(loop.signum)
    return summary


def _save(s: TrainSettings, run_dir: Path, state: TrainState, run_id: str) -> None:
    # Order matters: diagnostics and history first, the checkpoint last, so a checkpoint
    # never refers to files older than itself (resume drops rows after its step).
    if s.record and state.recorder.arrays:
        # Compressed only at the end: a periodic save compresses the whole growing record again
        # (~25 ms at 30,000 steps, ~2% of a seed run), while the final file is what is kept.
        final = state.step >= s.steps
        rundir.atomic_write_npz(
            run_dir / rundir.DIAGNOSTICS_FILE, state.recorder.to_npz_dict(), compress=final
        )
    rundir.atomic_write_csv(run_dir / rundir.HISTORY_FILE, state.rows, history_columns(s))
    rundir.write_checkpoint(run_dir, state.to_arrays(s.to_dict(), run_id))


# Signals that stop a run after its step, with a checkpoint: Ctrl-C, SIGTERM (kill, timeout,
# scancel) and SIGUSR2 (SLURM's warning before a preemption or the time limit, sent at
# sbatch's --signal; rnn_lab.app.sweep hands it on to submitit, which requeues the job).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)


def diverging_quietly():
    """The numeric context of a training loop. A diverging run overflows (inf, then nan) for a
    step or two before its loss is non-finite; the loop then ends it as diverged, with the step
    and the loss in its log and summary. NumPy's overflow warnings on the way would only say
    the same on the terminal, as raw lines from inside the engine."""
    return np.errstate(over="ignore", invalid="ignore")


class StopFlag:
    """Set by a STOP_SIGNALS signal: the loop finishes its step, checkpoints and returns."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def install(self):
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers only work in the main thread (e.g. not in Ray actors)
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.signum = signum

    def restore(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
