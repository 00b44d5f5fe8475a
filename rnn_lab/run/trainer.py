"""Truncated-BPTT training of the character RNN: a plain function on plain settings.

``train(settings, run_dir)`` builds the task and the parameters, walks the data in seq_len
chunks (h carries forward, the gradient does not), records the training dynamics, writes the
run directory described in docs/run_directory.md, and returns the summary. It never sees a
Hydra config: :mod:`rnn_lab.train` turns the config into a :class:`TrainSettings`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import signal
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from rnn_lab.core import engine
from rnn_lab.core.data import CharTextTask, make_task
from rnn_lab.core.inits import init_params, load_params_file
from rnn_lab.core.losses import get_loss
from rnn_lab.core.optim import make_optimizer, step_decay_lr
from rnn_lab.run.rundir import (
    atomic_write_csv,
    atomic_write_json,
    atomic_write_npz,
    read_json,
)

log = logging.getLogger("rnn_lab")

LN2 = math.log(2.0)


@dataclass
class TrainSettings:
    """Every hyperparameter of a run, as plain values (defaults: the seed's run)."""

    steps: int = 30000
    hidden_size: int = 64
    seq_len: int = 25
    lr: float = 0.01
    clip: float = 5.0  # global-norm threshold; 0 disables
    clip_mode: str = "norm"  # norm | value (element-wise, min-char-rnn)
    seed: int = 42
    lr_decay_rate: float = 1.0  # 1.0 = constant lr
    lr_decay_every: int = 1000
    val_fraction: float = 0.1
    val_interval: int = 500  # 0 disables periodic validation (still done at the end)
    temperature: float = 1.0
    freeze_whh: bool = False
    use_embedding: bool = False
    embed_dim: int = 16
    batch_size: int = 1
    dtype: str = "float64"
    init: dict = field(default_factory=lambda: {"name": "orthogonal", "scale": 1.0, "path": None})
    activation: str = "tanh"
    # The seed's SGD: momentum as a moving average of the gradients (= conf/optim/sgd.yaml).
    optim: dict = field(
        default_factory=lambda: {
            "name": "sgd",
            "momentum": 0.9,
            "dampening": 0.9,
            "nesterov": False,
        }
    )
    data: dict = field(default_factory=lambda: {"name": "elman", "seed": 42, "num_sentences": 600})
    # bookkeeping
    checkpoint_interval: int = 5000  # 0 = only at the end
    resume: bool = False
    log_interval: int = 1000  # console progress every N steps; 0 = start and end only
    # recording (history.csv rows and diagnostics.npz)
    record: bool = True
    record_interval: int = 100
    record_dense_interval: int = 10
    record_dense_until: int = 500
    jacobian_interval: int = 2000  # 0 disables
    jacobian_lags: int = 10
    sample_interval: int = 5000  # 0 disables
    sample_length: int = 200
    record_weights: bool = False
    analyze: bool = True  # run the analysis of the trained network at the end
    plots: bool = True  # draw the run's plots at the end (with analyze)

    def to_dict(self) -> dict:
        return asdict(self)


# Settings that may differ between an interrupted run and its resumption.
RESUMABLE_DIFFERENCES = {
    "steps",
    "resume",
    "log_interval",
    "checkpoint_interval",
    "analyze",
    "plots",
}

DTYPES = {"float64": np.float64, "float32": np.float32}


def is_record_step(step: int, s: TrainSettings) -> bool:
    """The recording schedule: dense early, then every record_interval, plus the last step."""
    if step == 1 or step == s.steps:
        return True
    if step <= s.record_dense_until and s.record_dense_interval > 0:
        return step % s.record_dense_interval == 0
    return s.record_interval > 0 and step % s.record_interval == 0


def _validation_loss(params, activation, task) -> float:
    batch = task.validation_batch()
    B = batch.inputs.shape[1]
    h0 = np.zeros((B, params.hidden_size), dtype=params.dtype)
    cache = engine.forward(params, batch.inputs, h0, activation)
    loss, _, n = get_loss(task.loss_name)(cache.logits, batch.targets, batch.mask)
    return loss / n


def _saturation(hs: np.ndarray, act: engine.Activation) -> float:
    """tanh/sigmoid: fraction of unit-steps within 0.05 of a bound; relu: fraction of dead units."""
    h = hs[1:]  # (T, B, H)
    if act.high is None:
        return float(np.mean(np.all(h <= 0.0, axis=(0, 1))))
    return float(np.mean((h - act.low < 0.05) | (act.high - h < 0.05)))


class _StopFlag:
    """Set by SIGINT/SIGTERM: the loop finishes its step, checkpoints and returns."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def install(self):
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers only work in the main thread (e.g. not in Ray actors)
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.signum = signum

    def restore(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


@dataclass
class _Recorder:
    """Diagnostics kept in memory and written to diagnostics.npz at checkpoints."""

    arrays: dict[str, list] = field(default_factory=dict)

    def add(self, **values):
        for k, v in values.items():
            self.arrays.setdefault(k, []).append(v)

    def truncate(self, max_step: int):
        """Drop entries recorded after max_step (on resume from an earlier checkpoint)."""
        for step_key, keys in _DIAG_GROUPS.items():
            steps = self.arrays.get(step_key)
            if not steps:
                continue
            keep = [i for i, s in enumerate(steps) if s <= max_step]
            for k in (step_key, *keys):
                if k in self.arrays:
                    self.arrays[k] = [self.arrays[k][i] for i in keep]

    def to_npz_dict(self) -> dict[str, np.ndarray]:
        out = {}
        for k, v in self.arrays.items():
            if k == "sample_text":
                out[k] = np.array(v, dtype=np.str_)
            else:
                out[k] = np.asarray(v)
        return out

    @classmethod
    def from_npz(cls, path: Path) -> _Recorder:
        rec = cls()
        with np.load(path, allow_pickle=False) as z:
            for k in z.files:
                rec.arrays[k] = list(z[k])
        return rec


_DIAG_GROUPS = {
    "record_step": (
        "eigenvalues",
        "per_step_grad_norm",
        "last_loss_grad_norm",
        "position_accuracy",
    ),
    "jacobian_step": ("jacobian_step_norm", "jacobian_product_norm", "jacobian_product_radius"),
    "sample_step": ("sample_text",),
    "weights_step": ("W_hh_snapshots",),
}

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
HISTORY_RECORD = [
    "sigma_max",
    "grad_norm_W_xh",
    "grad_norm_W_hh",
    "grad_norm_W_hy",
    "grad_norm_b_h",
    "grad_norm_b_y",
    "grad_norm_E",
    "saturation",
    "position_accuracy",
]


class TrainError(ValueError):
    """A setting or input that cannot work; the message names the key, value and options."""


def build_task(s: TrainSettings) -> CharTextTask:
    try:
        return make_task(s.data, s.seq_len, s.batch_size, s.val_fraction)
    except ValueError as e:
        raise TrainError(str(e)) from None


def build_params(s: TrainSettings, task) -> engine.Params:
    dtype = DTYPES[s.dtype]
    embed_dim = s.embed_dim if s.use_embedding else 0
    V, O = task.input_size, task.output_size
    name = s.init.get("name", "orthogonal")
    scale = float(s.init.get("scale", 1.0) or 1.0)
    try:
        if name == "file":
            return load_params_file(
                s.init.get("path") or "",
                V,
                s.hidden_size,
                O,
                seed=s.seed,
                embed_dim=embed_dim,
                scale=scale,
                dtype=dtype,
            )
        return init_params(
            V,
            s.hidden_size,
            O,
            init=name,
            scale=scale,
            seed=s.seed,
            embed_dim=embed_dim,
            dtype=dtype,
        )
    except ValueError as e:
        raise TrainError(str(e)) from None


def sample_text(params, activation, task, rng, length, temperature, prime=" ") -> str:
    vocab = task.vocab
    prime_ids = [vocab.index.get(c, 0) for c in prime] or [0]
    ids = engine.sample(params, activation, prime_ids, length, temperature, rng)
    return vocab.decode(ids)


def _optimizer_settings(optim: dict) -> tuple[str, dict]:
    settings = {k: v for k, v in optim.items() if k != "name" and v is not None}
    return optim.get("name", "sgd"), settings


def train(settings: TrainSettings, run_dir: str | Path, *, task=None) -> dict:
    """Train one run into run_dir; return its summary (also written to summary.json).

    A loss that becomes NaN/inf ends the run with status "diverged"; SIGINT/SIGTERM ends it
    with status "interrupted" after a checkpoint. Unexpected errors propagate to the caller,
    which records them (see rnn_lab.train).
    """
    s = settings
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if task is None:
        task = build_task(s)
    act = engine.get_activation(s.activation)
    loss_fn = get_loss(task.loss_name)
    dtype = DTYPES[s.dtype]
    ckpt_path = run_dir / "checkpoint.npz"
    summary_path = run_dir / "summary.json"

    # ---- resume or start --------------------------------------------------------------
    resumed_from = 0
    if s.resume and summary_path.exists() and ckpt_path.exists():
        previous = read_json(summary_path)
        # A run that ended (ok, or diverged: deterministic, it would diverge again) with the
        # same number of steps asked for is complete; failed and interrupted runs go on.
        if previous.get("status") in ("ok", "diverged") and previous.get("steps") == s.steps:
            log.info(
                "run in %s is already complete (%s); nothing to do", run_dir, previous["status"]
            )
            return previous
    state = None
    if s.resume and ckpt_path.exists():
        state = _load_checkpoint(ckpt_path, s)
        resumed_from = int(state["step"])
        log.info("resuming from checkpoint at step %d in %s", resumed_from, run_dir)
    elif s.resume:
        log.info("resume=true but no checkpoint in %s: starting from scratch", run_dir)

    # Packed: all arrays are views of one buffer, so clip and update are one call each.
    params = engine.pack(build_params(s, task) if state is None else state["params"])
    n_train = params.n_trainable(s.freeze_whh)
    trainable = {"flat": params.flat[:n_train]}  # a frozen W_hh is the untouched tail
    optim_name, optim_kwargs = _optimizer_settings(s.optim)
    opt = make_optimizer(optim_name, **optim_kwargs)
    B, H = s.batch_size, s.hidden_size
    h = np.zeros((B, H), dtype=dtype)
    sample_rng = np.random.default_rng(s.seed)
    recent_losses: deque[float] = deque(maxlen=100)
    best_val = math.inf
    last_val = math.nan
    rows: list[dict] = []
    recorder = _Recorder()
    acc = {"loss_sum": 0.0, "n": 0, "clipped": 0}
    wall_before = 0.0
    if state is not None:
        opt.state = state["optim_state"]
        h = state["h"]
        task.load_state_dict(state["task"])
        sample_rng.bit_generator.state = state["rng_state"]
        recent_losses.extend(state["recent_losses"])
        best_val, last_val = state["best_val_loss"], state["val_loss"]
        acc = state["acc"]
        wall_before = state["wall_time_s"]
        rows = _read_history(run_dir / "history.csv", resumed_from)
        if (run_dir / "diagnostics.npz").exists():
            recorder = _Recorder.from_npz(run_dir / "diagnostics.npz")
            recorder.truncate(resumed_from)

    atomic_write_json(run_dir / "settings.json", s.to_dict())
    # The text's hash lets analysis notice a data file that changed after training.
    text_sha1 = hashlib.sha1(task.text.encode("utf-8")).hexdigest()
    atomic_write_json(run_dir / "vocab.json", {"chars": task.vocab.chars, "text_sha1": text_sha1})
    _write_summary(
        summary_path,
        s,
        "running",
        resumed_from,
        None,
        recent_losses,
        last_val,
        best_val,
        params,
        wall_before,
        0.0,
        None,
        sample="",
    )

    if resumed_from == 0:
        log.info(
            "corpus %d chars (%d train, %d val), V=%d | H=%d seq_len=%d B=%d | init=%s "
            "(spectral_radius=%.3f) activation=%s optim=%s lr=%g clip=%g%s",
            len(task.text),
            len(task.train_ids),
            len(task.val_ids),
            task.vocab.size,
            H,
            s.seq_len,
            B,
            s.init.get("name"),
            engine.spectral_radius(params.W_hh),
            s.activation,
            optim_name,
            s.lr,
            s.clip,
            " freeze_whh" if s.freeze_whh else "",
        )

    def save_everything(step_done: int, wall_time: float) -> None:
        # A closure: it reads the loop's current state (h, losses, rows, ...) when called.
        _save_all(
            run_dir,
            s,
            params,
            opt,
            h,
            task,
            sample_rng,
            recent_losses,
            best_val,
            last_val,
            acc,
            rows,
            recorder,
            step_done,
            wall_time,
        )

    stop = _StopFlag()
    stop.install()
    status, error = "ok", None
    step = resumed_from
    t0 = time.perf_counter()
    last_grads = None
    try:
        for step in range(resumed_from + 1, s.steps + 1):
            batch = task.next_batch()
            if batch.reset_h:
                h = np.zeros((B, H), dtype=dtype)
            lr = step_decay_lr(step, s.lr, s.lr_decay_rate, s.lr_decay_every)
            cache = engine.forward(params, batch.inputs, h, act)
            loss_sum, dlogits, n_counted = loss_fn(cache.logits, batch.targets, batch.mask)
            if not math.isfinite(loss_sum):
                status = "diverged"
                error = f"loss became {loss_sum} at step {step}"
                log.warning("diverged: %s", error)
                break
            recording = is_record_step(step, s)
            grads = engine.backward(
                params,
                cache,
                dlogits,
                act,
                freeze_whh=s.freeze_whh,
                clip=s.clip,
                clip_mode=s.clip_mode,
                profile=recording and s.record,
            )
            last_grads = grads
            loss_per_char = loss_sum / n_counted
            recent_losses.append(loss_per_char)
            acc["loss_sum"] += loss_per_char
            acc["n"] += 1
            acc["clipped"] += int(grads.clipped)

            val_now = s.val_interval > 0 and step % s.val_interval == 0
            if recording or val_now:
                # Diagnostics describe the weights that produced this chunk (before the update).
                row = {
                    "step": step,
                    "loss": acc["loss_sum"] / acc["n"],
                    "lr": lr,
                    "grad_norm": grads.total_norm,
                    "clipped": grads.clipped,
                    "clip_ratio": grads.clip_ratio,
                    "clip_fraction": acc["clipped"] / acc["n"],
                }
                acc = {"loss_sum": 0.0, "n": 0, "clipped": 0}
                eigenvalues = np.linalg.eigvals(params.W_hh)
                row["spectral_radius"] = float(np.max(np.abs(eigenvalues)))
                if s.record and recording:
                    _record_step(row, recorder, step, params, cache, grads, eigenvalues, batch, act)
                rows.append(row)
            if s.record and s.jacobian_interval > 0 and step % s.jacobian_interval == 0:
                jac = engine.jacobian_products(params, cache.hs, act, s.jacobian_lags)
                recorder.add(jacobian_step=step, **jac)
            if s.record and s.record_weights and recording:
                recorder.add(weights_step=step, W_hh_snapshots=params.W_hh.copy())

            # ---- the update ----
            opt.step(trainable, {"flat": grads.flat[:n_train]}, lr)
            h = cache.h_last  # carried forward; the gradient is truncated here

            if val_now:
                last_val = _validation_loss(params, act, task)
                best_val = min(best_val, last_val) if math.isfinite(last_val) else best_val
                rows[-1]["val_loss"] = last_val
            if s.sample_interval > 0 and step % s.sample_interval == 0:
                text = sample_text(params, act, task, sample_rng, s.sample_length, s.temperature)
                recorder.add(sample_step=step, sample_text=text)
                log.info("sample at step %d (T=%g): %r", step, s.temperature, text[:80])
            if (
                s.log_interval > 0 and (step % s.log_interval == 0 or step == 1)
            ) or step == s.steps:
                _log_progress(step, s, loss_per_char, grads, lr, params)
            if s.checkpoint_interval > 0 and step % s.checkpoint_interval == 0 and step < s.steps:
                save_everything(step, wall_before + time.perf_counter() - t0)
            if stop.signum is not None:
                status = "interrupted"
                error = f"stopped by signal {signal.Signals(stop.signum).name} at step {step}"
                log.warning("%s; checkpoint written, resume with resume=true", error)
                break
    finally:
        stop.restore()

    wall = wall_before + time.perf_counter() - t0
    steps_done = step if status in ("ok", "interrupted") else step - 1
    if status == "ok":
        last_val = _validation_loss(params, act, task)
        if math.isfinite(last_val):
            best_val = min(best_val, last_val)
        if rows and rows[-1]["step"] == s.steps:
            rows[-1]["val_loss"] = last_val
    final_sample = ""
    if status == "ok":
        final_sample = sample_text(
            params, act, task, np.random.default_rng(s.seed + 1), s.sample_length, s.temperature
        )
    save_everything(steps_done, wall)
    summary = _write_summary(
        summary_path,
        s,
        status,
        steps_done,
        error,
        recent_losses,
        last_val,
        best_val,
        params,
        wall,
        (steps_done - resumed_from) / max(time.perf_counter() - t0, 1e-9),
        last_grads,
        sample=final_sample,
    )
    if status == "interrupted":
        summary["signal"] = int(stop.signum)
    log.info(
        "done: status=%s steps=%d loss=%.4f val_loss=%.4f bits/char=%.3f spectral_radius=%.3f "
        "in %.1fs (%.0f steps/s) -> %s",
        status,
        steps_done,
        summary["final_loss"] or math.nan,
        last_val,
        summary["bits_per_char"] or math.nan,
        summary["spectral_radius"] or math.nan,
        wall,
        summary["steps_per_s"],
        run_dir,
    )
    return summary


def _record_step(row, recorder, step, params, cache, grads, eigenvalues, batch, act):
    row["sigma_max"] = float(np.linalg.norm(params.W_hh, 2))
    for name, norm in grads.param_grad_norms.items():
        row[f"grad_norm_{name}"] = norm  # before clipping, as the total is
    row["saturation"] = _saturation(cache.hs, act)
    if np.issubdtype(batch.targets.dtype, np.integer):
        correct = (cache.logits.argmax(axis=-1) == batch.targets).astype(np.float64)  # (T, B)
        if batch.mask is not None:
            per_pos = (correct * batch.mask).sum(1) / np.maximum(batch.mask.sum(1), 1)
        else:
            per_pos = correct.mean(axis=1)
    else:
        per_pos = np.full(batch.targets.shape[0], np.nan)
    row["position_accuracy"] = float(np.nanmean(per_pos)) if np.isfinite(per_pos).any() else None
    recorder.add(
        record_step=step,
        eigenvalues=eigenvalues.astype(np.complex128),
        per_step_grad_norm=grads.per_step_grad_norm,
        last_loss_grad_norm=grads.last_loss_grad_norm,
        position_accuracy=per_pos,
    )


def _log_progress(step, s, loss, grads, lr, params):
    log.info(
        "step %6d/%d | loss %.4f | grad_norm %7.2f | %-7s | lr %.4g | rho %.3f",
        step,
        s.steps,
        loss,
        grads.total_norm,
        "clipped" if grads.clipped else "",
        lr,
        engine.spectral_radius(params.W_hh),
    )


def _write_summary(
    path,
    s,
    status,
    steps_done,
    error,
    recent_losses,
    val_loss,
    best_val,
    params,
    wall,
    steps_per_s,
    grads,
    sample,
) -> dict:
    final_loss = float(np.mean(recent_losses)) if recent_losses else None
    finite = params is not None and all(np.all(np.isfinite(a)) for a in params.arrays().values())
    summary = {
        "status": status,
        "steps": s.steps,
        "steps_done": int(steps_done),
        "final_loss": final_loss,
        "val_loss": val_loss if status != "running" else None,
        "best_val_loss": best_val if math.isfinite(best_val) else None,
        "bits_per_char": final_loss / LN2 if final_loss is not None else None,
        "val_bits_per_char": val_loss / LN2 if math.isfinite(val_loss) else None,
        "spectral_radius": engine.spectral_radius(params.W_hh) if finite else None,
        "final_grad_norm": grads.total_norm if grads is not None else None,
        "wall_time_s": wall,
        "steps_per_s": steps_per_s,
        "sample": sample,
        "error": error,
    }
    previous = read_json(path) if path.exists() else {}
    # Keep analysis metrics merged by an earlier analysis (rnn-lab analyze) of the same run.
    for k, v in previous.items():
        if k not in summary and status != "running":
            summary[k] = v
    atomic_write_json(path, summary)
    return summary


def _save_all(
    run_dir,
    s,
    params,
    opt,
    h,
    task,
    rng,
    recent_losses,
    best_val,
    last_val,
    acc,
    rows,
    recorder,
    step,
    wall,
):
    # Order matters: diagnostics and history first, the checkpoint last, so a checkpoint
    # never refers to files older than itself (resume drops rows after its step).
    if s.record and recorder.arrays:
        atomic_write_npz(run_dir / "diagnostics.npz", recorder.to_npz_dict())
    columns = HISTORY_BASE + (HISTORY_RECORD if s.record else [])
    if not s.use_embedding and "grad_norm_E" in columns:
        columns = [c for c in columns if c != "grad_norm_E"]
    atomic_write_csv(run_dir / "history.csv", rows, columns)
    # The five arrays under their plain names, so a checkpoint also works as init=file.
    arrays = dict(params.arrays())
    arrays.update({f"optim.{k}": np.asarray(v) for k, v in opt.state.items()})
    arrays["h"] = h
    arrays["step"] = np.array(step)
    arrays["task_state"] = np.array(json.dumps(task.state_dict()))
    arrays["rng_state"] = np.array(json.dumps(rng.bit_generator.state))
    arrays["recent_losses"] = np.array(list(recent_losses), dtype=np.float64)
    arrays["best_val_loss"] = np.array(best_val)
    arrays["val_loss"] = np.array(last_val)
    arrays["acc"] = np.array(json.dumps(acc))
    arrays["wall_time_s"] = np.array(wall)
    arrays["settings"] = np.array(json.dumps(s.to_dict(), sort_keys=True))
    atomic_write_npz(run_dir / "checkpoint.npz", arrays, compress=False)


def _load_checkpoint(path: Path, s: TrainSettings) -> dict:
    with np.load(path, allow_pickle=False) as z:
        saved = json.loads(str(z["settings"]))
        now = s.to_dict()
        diffs = [
            k
            for k in sorted(set(saved) | set(now))
            if k not in RESUMABLE_DIFFERENCES and saved.get(k) != now.get(k)
        ]
        if diffs:
            detail = ", ".join(
                f"{k}: checkpoint {saved.get(k)!r} vs now {now.get(k)!r}" for k in diffs
            )
            raise TrainError(
                f"resume: the checkpoint {str(path)!r} was written with other settings "
                f"({detail}); use the same settings, another output directory, or resume=false"
            )
        params = engine.Params.from_arrays(z)
        optim_state = {k[len("optim.") :]: z[k].copy() for k in z.files if k.startswith("optim.")}
        state = {
            "params": params,
            "optim_state": optim_state,
            "h": z["h"].copy(),
            "step": int(z["step"]),
            "task": json.loads(str(z["task_state"])),
            "rng_state": json.loads(str(z["rng_state"])),
            "recent_losses": [float(x) for x in z["recent_losses"]],
            "best_val_loss": float(z["best_val_loss"]),
            "val_loss": float(z["val_loss"]),
            "acc": json.loads(str(z["acc"])),
            "wall_time_s": float(z["wall_time_s"]),
        }
    return state


def _read_history(path: Path, max_step: int) -> list[dict]:
    """History rows up to max_step, values parsed back exactly as written."""
    if not path.exists():
        return []
    import csv

    rows = []
    with path.open(newline="") as f:
        for rec in csv.DictReader(f):
            row = {}
            for k, v in rec.items():
                if v == "":
                    continue
                if k == "step":
                    row[k] = int(v)
                elif k == "clipped":
                    row[k] = bool(int(v))
                else:
                    row[k] = float(v)
            if row["step"] <= max_step:
                rows.append(row)
    return rows
