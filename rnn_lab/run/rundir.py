"""docs/run_directory.md as code: what a run directory holds and the one way to write it.

Every module that reads or writes a run's files names them through this module (nothing else
spells ``"summary.json"``), writes through its atomic writers (temp file in the same
directory, then ``os.replace``: a reader never sees half a file, an interrupted write leaves
the previous version) and follows its rules:

- **summary.json** has one writer rule (:func:`write_summary`): the trainer's fields, plus the
  analysis scalars only when the analysis belongs to the same run identity and step.
- **run identity** (:func:`run_identity`): a hash of every setting that changes results and of
  the data's content. A directory is reused only by the run that owns it.
- **one writer at a time**: :func:`lock_run_dir` takes an exclusive ``flock`` on ``run.lock``;
  the kernel drops it when the holder dies, so a killed run never leaves a stale lock.

This module is NumPy and the standard library only: the collector and the report read run
directories through it without importing the engine or the training loop.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import hashlib
import io
import json
import math
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

# ---- file names (docs/run_directory.md) ----------------------------------------------------
SUMMARY_FILE = "summary.json"
SETTINGS_FILE = "settings.json"
VOCAB_FILE = "vocab.json"
TASK_FILE = "task.json"  # a sequence task's definition, sizes, data hash and baselines
HISTORY_FILE = "history.csv"
DIAGNOSTICS_FILE = "diagnostics.npz"
CHECKPOINT_FILE = "checkpoint.npz"
ANALYSIS_FILE = "analysis.json"
LOG_FILE = "train.log"
LOCK_FILE = "run.lock"
HYDRA_DIR = ".hydra"
HYDRA_CONFIG_FILE = "config.yaml"  # in HYDRA_DIR: the job's composed config
HYDRA_HYDRA_FILE = "hydra.yaml"  # in HYDRA_DIR: Hydra's own config (choices, overrides)
HYDRA_OVERRIDES_FILE = "overrides.yaml"  # in HYDRA_DIR: the job's overrides
HYDRA_FILES = (HYDRA_CONFIG_FILE, HYDRA_HYDRA_FILE, HYDRA_OVERRIDES_FILE)
# The .hydra files of the run that owns the directory, kept so a refused re-use can put back
# what Hydra overwrote before the task function could look (see restore_hydra_files).
HYDRA_ACCEPTED_DIR = "accepted"
PLOTS_GLOB = "*.png"
# Files the trainer and analysis (re)write: a fresh start removes them so no file of an
# earlier run survives next to the new one.
RUN_OUTPUTS = (
    SUMMARY_FILE,
    SETTINGS_FILE,
    VOCAB_FILE,
    TASK_FILE,
    HISTORY_FILE,
    DIAGNOSTICS_FILE,
    CHECKPOINT_FILE,
    ANALYSIS_FILE,
)

# ---- sweep-level names -------------------------------------------------------------------
MULTIRUN_FILE = "multirun.yaml"  # Hydra's
SWEEP_STATE_DIR = ".rnn_lab"  # rnn_lab's own bookkeeping inside a sweep folder
SWEEP_LOCK_FILE = "sweep.lock"  # in SWEEP_STATE_DIR: held while a sweep writes the folder
SWEEP_INTERRUPTED_FILE = "interrupted.json"  # in SWEEP_STATE_DIR: the sweep was stopped
CONFLICTS_DIR = "conflicts"  # in SWEEP_STATE_DIR: one JSON per job refused (run_conflict)
DECLARATIONS_FILE = "declarations.json"  # in SWEEP_STATE_DIR: what a study declared at each start
ATTEMPTS_DIR = "attempts"  # in SWEEP_STATE_DIR: one JSON per job: which sweep started it, how often
RESULTS_CSV = "results.csv"
RESULTS_PARQUET = "results.parquet"
REPORT_FILE = "report.md"
SWEEP_LOG_FILE = "sweep.log"  # the launching process's log (Hydra's job listing, launcher lines)
# Tracking and tuning (rnn_lab.app.tracking, rnn_lab.app.tuning):
MLFLOW_DB_FILE = "mlflow.db"  # logger=mlflow: the default store, in the sweep (or run) folder
MLFLOW_STATE_FILE = "mlflow.json"  # in SWEEP_STATE_DIR: the sweep's store and parent run
MLFLOW_ARTIFACTS_DIR = "mlartifacts"  # in SWEEP_STATE_DIR beside a SQLite store: artifacts
OPTUNA_DB_FILE = "optuna.db"  # a tuning study's Optuna storage, in its sweep folder
OPTUNA_RESULTS_FILE = "optimization_results.yaml"  # Hydra's Optuna sweeper: the best trial
OPTUNA_BUDGET_ATTR = "rnn_lab.n_trials"  # an Optuna study's user attribute: its trial budget

# ---- statuses ----------------------------------------------------------------------------
# Written by the trainer into summary.json:
RUNNING, OK, DIVERGED, FAILED, INTERRUPTED = "running", "ok", "diverged", "failed", "interrupted"
TRAINER_STATUSES = (RUNNING, OK, DIVERGED, FAILED, INTERRUPTED)
# Assigned by the collector when it reads a directory:
INCOMPLETE = "incomplete"  # summary says running, but nobody is (the job was killed)
DAMAGED = "damaged"  # a file is missing, truncated or unreadable; the reason is recorded
CONFLICT = "conflict"  # a job refused to reuse a directory that belongs to another run
COLLECT_STATUSES = (OK, DIVERGED, FAILED, INTERRUPTED, INCOMPLETE, DAMAGED, CONFLICT)
# The fields the trainer writes into summary.json (docs/run_directory.md); analysis scalars
# merged into a summary never overwrite them.
TRAINER_SUMMARY_KEYS = (
    "status",
    "run_id",
    "steps",
    "steps_done",
    "final_loss",
    "val_loss",
    "best_val_loss",
    "bits_per_char",
    "val_bits_per_char",
    "val_chars_read",
    "val_split_chars",
    "spectral_radius",
    "final_grad_norm",
    "wall_time_s",
    "steps_per_s",
    "chars_seen",
    "sequences_seen",
    "sample",
    "error",
    "signal",
)
# A run that ended and needs no more training (with the same identity and steps).
FINISHED_STATUSES = (OK, DIVERGED)


class RunDirError(ValueError):
    """A run directory that cannot be read (missing, or without the file asked for)."""


class RunConflict(ValueError):
    """A directory holds another run (other settings or data); the message says what differs."""


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write_stream(path, lambda f: f.write(data))


def atomic_write_stream(path: str | Path, write: Callable[[BinaryIO], object]) -> None:
    """write(f) into a temporary file beside path, then rename it over path: a reader (another
    run of a sweep) sees no file or a whole one, never a part. write may write in pieces (a
    cached text's ids, GBs, are never held as one bytes object)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _finite_or_none(o):
    """JSON has no NaN: write null for NaN/inf so every reader can parse the file."""
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _finite_or_none(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_finite_or_none(v) for v in o]
    return o


def atomic_write_json(path: str | Path, obj) -> None:
    text = json.dumps(_finite_or_none(obj), indent=2, default=_json_default, allow_nan=False)
    atomic_write_text(path, text + "\n")


def atomic_write_npz(
    path: str | Path, arrays: dict[str, np.ndarray], compress: bool = True
) -> None:
    buf = io.BytesIO()
    (np.savez_compressed if compress else np.savez)(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def atomic_write_csv(path: str | Path, rows: list[dict], columns: list[str]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: _csv_value(row.get(k)) for k in columns})
    atomic_write_text(path, buf.getvalue())


def _csv_value(v):
    if v is None:
        return ""
    if isinstance(v, bool | np.bool_):
        return int(v)
    if isinstance(v, float | np.floating):
        # repr keeps every bit, so a history read back is the history written.
        return repr(float(v))
    return v


def read_json(path: str | Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_json_or_none(path: str | Path):
    """The JSON at path, or None when the file is absent."""
    path = Path(path)
    return read_json(path) if path.exists() else None


# ---- run identity --------------------------------------------------------------------------


def run_identity(result_settings: dict, data_sha1: str) -> str:
    """A short hash of everything that decides a run's results: its result-changing settings
    (see rnn_lab.run.settings.result_settings) and the content hash of its data."""
    text = json.dumps({"settings": result_settings, "data_sha1": data_sha1}, sort_keys=True)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def describe_differences(old: dict, new: dict, limit: int = 6) -> str:
    """'lr: 0.01 -> 0.5, init.name: orthogonal -> xavier' for the keys whose values differ."""
    flat_old, flat_new = _flatten(old), _flatten(new)
    keys = [k for k in sorted(set(flat_old) | set(flat_new)) if flat_old.get(k) != flat_new.get(k)]
    parts = [f"{k}: {flat_old.get(k)!r} -> {flat_new.get(k)!r}" for k in keys[:limit]]
    if len(keys) > limit:
        parts.append(f"and {len(keys) - limit} more")
    return ", ".join(parts)


def _flatten(node, prefix: str = "") -> dict:
    if not isinstance(node, dict):
        return {prefix: node}
    out = {}
    for k, v in node.items():
        out.update(_flatten(v, f"{prefix}{k}."))
    return {k.rstrip("."): v for k, v in out.items()}


# ---- summary.json: the one rule ------------------------------------------------------------


def write_summary(run_dir: str | Path, summary: dict) -> dict:
    """Write summary.json: the given fields, plus the scalars of analysis.json when that
    analysis belongs to this run (same ``run_id`` and ``steps_done``). Returns what was written.

    Every writer (the trainer, failure recording, the analysis) goes through here, so a field
    of an earlier run can never survive into a new summary.
    """
    run_dir = Path(run_dir)
    out = dict(summary)
    analysis = read_json_or_none(run_dir / ANALYSIS_FILE)
    if isinstance(analysis, dict) and analysis_matches(analysis, out):
        scalars = analysis_scalars(analysis)
        out.update({k: v for k, v in scalars.items() if k not in TRAINER_SUMMARY_KEYS})
    atomic_write_json(run_dir / SUMMARY_FILE, out)
    return out


def analysis_matches(analysis: dict, summary: dict) -> bool:
    """An analysis belongs to a summary when both name the same run and the same step."""
    return (
        analysis.get("run_id") is not None
        and analysis.get("run_id") == summary.get("run_id")
        and analysis.get("steps_done") == summary.get("steps_done")
    )


def analysis_scalars(analysis: dict) -> dict:
    """The scalar metrics of analysis.json (it also holds curves, texts and coordinates)."""
    skip = {"run_id", "steps_done"}
    return {
        k: v
        for k, v in analysis.items()
        if k not in skip
        and (v is None or isinstance(v, bool | int | float) or isinstance(v, str) and len(v) < 200)
    }


def record_failure(run_dir: str | Path, status: str, message: str, **fields) -> dict:
    """Mark a run failed (or interrupted...) keeping what its summary already recorded."""
    run_dir = Path(run_dir)
    previous = {}
    with contextlib.suppress(ValueError, OSError):
        previous = read_json_or_none(run_dir / SUMMARY_FILE) or {}
    if not isinstance(previous, dict):
        previous = {}
    summary = {"steps_done": 0, "final_loss": None, "val_loss": None, **previous, **fields}
    summary.update(status=status, error=message)
    return write_summary(run_dir, summary)


# ---- history.csv -------------------------------------------------------------------------


def read_history_rows(path: str | Path, max_step: int | None = None) -> list[dict]:
    """History rows (up to max_step), values parsed back exactly as written (repr floats)."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    with path.open(newline="") as f:
        for rec in csv.DictReader(f):
            row: dict = {}
            for k, v in rec.items():
                if v == "" or v is None or k is None:
                    continue
                if k == "step":
                    row[k] = int(v)
                elif k == "clipped":
                    row[k] = bool(int(v))
                else:
                    row[k] = float(v)
            if "step" in row and (max_step is None or row["step"] <= max_step):
                rows.append(row)
    return rows


# ---- checkpoint.npz ----------------------------------------------------------------------


def write_checkpoint(run_dir: str | Path, arrays: dict[str, np.ndarray]) -> None:
    atomic_write_npz(Path(run_dir) / CHECKPOINT_FILE, arrays, compress=False)


def read_checkpoint(run_dir: str | Path) -> dict[str, np.ndarray]:
    """Every array of checkpoint.npz, loaded (no pickles). Raises RunDirError when unreadable."""
    return read_npz(Path(run_dir) / CHECKPOINT_FILE)


def read_npz(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.exists():
        raise RunDirError(f"{path}: missing")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as e:  # truncated zip, garbage bytes, pickled payload
        raise RunDirError(f"{path.name} is unreadable ({type(e).__name__}: {e})") from None


# ---- .hydra: what Hydra writes before the task function runs -------------------------------


def save_accepted_hydra(run_dir: str | Path) -> None:
    """Keep a copy of the .hydra files of the run that owns this directory."""
    hydra = Path(run_dir) / HYDRA_DIR
    if not hydra.is_dir():
        return
    accepted = hydra / HYDRA_ACCEPTED_DIR
    accepted.mkdir(exist_ok=True)
    for name in HYDRA_FILES:
        if (hydra / name).exists():
            atomic_write_bytes(accepted / name, (hydra / name).read_bytes())


def restore_hydra_files(run_dir: str | Path) -> bool:
    """Put back the owner's .hydra files (Hydra rewrote them for a job that was refused).
    Returns False when no copy was kept (a directory from before copies were kept)."""
    hydra = Path(run_dir) / HYDRA_DIR
    accepted = hydra / HYDRA_ACCEPTED_DIR
    if not accepted.is_dir():
        return False
    for name in HYDRA_FILES:
        if (accepted / name).exists():
            atomic_write_bytes(hydra / name, (accepted / name).read_bytes())
    return True


# ---- fresh starts ----------------------------------------------------------------------


def clear_outputs(run_dir: str | Path) -> list[str]:
    """Remove every output of an earlier run (a fresh start): the files the trainer and the
    analysis write, and the run's plots. .hydra/ and train.log stay (they are Hydra's)."""
    run_dir = Path(run_dir)
    removed = []
    for name in RUN_OUTPUTS:
        p = run_dir / name
        if p.exists():
            p.unlink()
            removed.append(name)
    for p in run_dir.glob(PLOTS_GLOB):
        p.unlink()
        removed.append(p.name)
    return removed


# ---- one writer at a time ------------------------------------------------------------------


class LockHeld(RuntimeError):
    """Another live process holds the lock; the message names it."""


@contextlib.contextmanager
def file_lock(path: str | Path, what: str) -> Iterator[None]:
    """Hold an exclusive flock on path for the block, writing who holds it into the file.

    flock is released by the kernel when the holder exits, however it exits, so a lock left by
    a killed process is free again: the next taker sees the old holder's note and takes over.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip() or "unknown"
            raise LockHeld(
                f"{what} {path.parent} is in use by another process ({holder})"
            ) from None
        note = json.dumps(
            {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%H:%M:%S")}
        )
        os.ftruncate(fd, 0)
        os.pwrite(fd, note.encode(), 0)
        yield
    finally:
        os.close(fd)  # closing drops the flock


# ---- sweep-level records ---------------------------------------------------------------


def sweep_state_dir(sweep_dir: str | Path) -> Path:
    return Path(sweep_dir) / SWEEP_STATE_DIR


def _job_record(sweep_dir: str | Path, folder: str, job_dir: str | Path) -> tuple[Path, str]:
    """(the JSON file in the sweep's state folder that records something about a job, the
    job's folder relative to the sweep); the file's folder exists."""
    job_dir = Path(job_dir)
    try:
        rel = str(job_dir.relative_to(sweep_dir))
    except ValueError:
        rel = str(job_dir)
    name = hashlib.sha1(rel.encode()).hexdigest()[:12] + ".json"
    out = sweep_state_dir(sweep_dir) / folder / name
    out.parent.mkdir(parents=True, exist_ok=True)
    return out, rel


def record_conflict(sweep_dir: str | Path, job_dir: str | Path, message: str) -> Path:
    """Note in the sweep folder that a job was refused (its own folder stays untouched)."""
    out, rel = _job_record(sweep_dir, CONFLICTS_DIR, job_dir)
    atomic_write_json(out, {"status": CONFLICT, "job_dir": rel, "error": message})
    return out


def record_attempt(sweep_dir: str | Path, job_dir: str | Path, launcher: dict) -> int:
    """Count a start of the job in job_dir by the sweep whose launching process is
    ``launcher`` (pid, host, start); returns which start of it this is (1: the first). A
    start by another sweep (a re-run of the command) counts from 1 again."""
    out, rel = _job_record(sweep_dir, ATTEMPTS_DIR, job_dir)
    try:
        before = read_json_or_none(out)
    except (ValueError, OSError):
        before = None
    same = isinstance(before, dict) and before.get("launcher") == launcher
    attempt = int(before.get("attempt", 0)) + 1 if same else 1
    atomic_write_json(out, {"job_dir": rel, "launcher": launcher, "attempt": attempt})
    return attempt


def read_conflicts(sweep_dir: str | Path) -> list[dict]:
    folder = sweep_state_dir(sweep_dir) / CONFLICTS_DIR
    out = []
    for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        with contextlib.suppress(ValueError, OSError):
            out.append(read_json(p))
    return out


def finite_or_none(x) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None
