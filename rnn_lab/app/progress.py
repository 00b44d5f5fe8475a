"""A sweep's progress in the launching terminal: one line per finished job, whatever the launcher.

    [12/36] init=xavier,activation=relu seed=2 ok val_loss 1.05 (7.9 s) | elapsed 1m40s, ETA 3m10s

conf/config.yaml enables :class:`ProgressCallback` after the sweep and report callbacks, so it
starts once the sweep holds its folder and ends first (its last line comes before the report).

How a line gets to the terminal, for every launcher (basic, joblib, Ray, submitit): Hydra
pickles the callback into each job's process with the rest of its context, and there
``on_job_end`` writes one small JSON file per finished job into
``<sweep>/.rnn_lab/progress/`` (the job's overrides, status, metric and seconds, read from its
``summary.json``). In the launching process a :class:`ProgressWatcher` thread, started by
``on_multirun_start``, polls that folder and prints a line per new file, numbered in the order
the jobs finished; with the basic launcher the job ends in the launching process itself, which
prints its line at once. Only the sweep's own folder is shared, so this works across processes
and, for SLURM, across hosts.

The total is the number of jobs Hydra will launch: Hydra's basic sweeper expands the grid
(the config's ``hydra.sweeper.params`` with the command line's overrides on top) exactly as
:func:`planned_jobs` does; a sweeper with a trial budget (Optuna's ``n_trials``) gives that.
ETA = elapsed / done x remaining: the average wall time per finished job so far (parallel jobs
included) times the jobs still to finish.

Each line is written by a single ``print(..., flush=True)`` of the whole line and its newline, so
a progress line never shares a terminal line with a log line.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from rnn_lab.app.sweep import stop_requested
from rnn_lab.run import rundir
from rnn_lab.third_party import job_return_value, resolve

log = logging.getLogger(__name__)

PROGRESS_DIR = "progress"  # in the sweep's state folder (rundir.sweep_state_dir): a JSON per job
POLL_S = 0.5  # how often the launching process looks for finished jobs
NOTE_CHARS = 80  # an error message is cut to this many characters on a progress line


# --------------------------------------------------------------------------- formatting


def format_duration(seconds: float) -> str:
    """42s, 1m40s, 2h05m: whole seconds under an hour, whole minutes above."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def eta_seconds(elapsed: float, done: int, total: int | None) -> float | None:
    """elapsed / done x remaining; None when nothing is done yet or the total is unknown."""
    if total is None or done <= 0:
        return None
    return elapsed / done * max(0, total - done)


@dataclass
class JobEnd:
    """What one finished job reports (the JSON file a job writes, as an object)."""

    overrides: list[str]
    seed: Any
    status: str
    metric: str
    value: float | None
    seconds: float
    note: str = ""


def job_label(overrides: list[str], swept: list[str]) -> str:
    """ "init=xavier,activation=relu": the job's values of the swept keys, seed left out."""
    values = dict(o.split("=", 1) for o in overrides if "=" in o)
    values = {k.lstrip("+~"): v for k, v in values.items()}
    return ",".join(f"{k}={values[k]}" for k in swept if k != "seed" and k in values)


def format_line(
    job: JobEnd, done: int, total: int | None, elapsed: float, swept, already: int = 0
) -> str:
    """ "[12/36] init=xavier,activation=relu seed=2 ok val_loss 1.05 (7.9 s) | elapsed 1m40s,
    ETA 3m10s" (ETA = elapsed / done x remaining, counting only this session's jobs: a resumed
    tuning sweep's `already` finished trials took none of the elapsed time)."""
    words = [f"[{done}/{total if total is not None else '?'}]"]
    label = job_label(job.overrides, swept)
    if label:
        words.append(label)
    if job.seed is not None:
        words.append(f"seed={job.seed}")
    words.append(job.status)
    if job.value is not None and math.isfinite(job.value):
        words.append(f"{job.metric} {format(job.value, '#.3g').rstrip('.')}")  # 3.00, 1.05
    if job.note:
        words.append(f"({job.note})" if job.status == rundir.OK else f"- {job.note}")
    words.append(f"({job.seconds:.1f} s)")
    eta = eta_seconds(elapsed, done - already, None if total is None else total - already)
    tail = f"elapsed {format_duration(elapsed)}"
    if total is not None and done >= total:
        tail += ", all done"
    elif eta is not None:
        tail += f", ETA {format_duration(eta)}"
    return " ".join(words) + " | " + tail


# --------------------------------------------------------------------------- the job count


def planned_jobs(config: DictConfig) -> tuple[int | None, list[str]]:
    """(jobs the sweeper will launch or None when unknown, keys swept over > 1 value).

    For Hydra's basic sweeper: the config's hydra.sweeper.params and then the task overrides
    of the command line, expanded with Hydra's own parser and BasicSweeper.split_arguments (a
    key on the command line replaces the config's grid for it, as in Hydra). For a sweeper
    with a trial budget (Optuna): its n_trials.
    """
    sweeper = OmegaConf.select(config, "hydra.sweeper", default=None) or {}
    n_trials = OmegaConf.select(config, "hydra.sweeper.n_trials", default=None)
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
    task = list(OmegaConf.select(config, "hydra.overrides.task", default=None) or [])
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        arguments = [f"{k}={v}" for k, v in params.items()] + task
        overrides = OverridesParser.create().parse_overrides(arguments)
        final = {o.get_key_element().lstrip("+~"): o for o in overrides}  # the last one wins
        swept = [key for key, o in final.items() if _sweeps_over_several(o)]
        if n_trials is not None:
            return int(n_trials), swept
        if "BasicSweeper" not in str(sweeper.get("_target_", "")):
            return None, swept
        split_arguments = resolve("hydra.split_arguments")  # the basic sweeper's, private
        return len(split_arguments(overrides, None)[0]), swept
    except Exception as e:  # a sweep Hydra itself will refuse, or a grammar we cannot expand
        log.debug("progress: cannot count the sweep's jobs (%s)", e)
        return (int(n_trials) if n_trials is not None else None), []


def _sweeps_over_several(override) -> bool:
    """A sweep over more than one value; a range Optuna samples from (interval) counts."""
    if not override.is_sweep_override():
        return False
    if not override.is_discrete_sweep():
        return True
    return len(list(override.sweep_string_iterator())) > 1


# --------------------------------------------------------------------------- job side


def job_outcome(
    run_dir: Path, started: float, job_return: Any, metric: str, stopped: bool = False
) -> JobEnd:
    """What the job that ran in run_dir (started at `started`) ended with; `stopped`: the
    sweep had been told to stop (a job without a summary was then skipped for that)."""
    from hydra.core.utils import JobStatus

    def end(status: str, value=None, note="") -> JobEnd:
        return JobEnd([], None, status, metric, value, time.time() - started, note)

    if getattr(job_return, "status", None) == JobStatus.FAILED:
        return end("error", note=_one_line(job_return_value(job_return, "")))
    path = run_dir / rundir.SUMMARY_FILE
    try:
        fresh = path.stat().st_mtime >= started - 1
        summary = rundir.read_json(path)
    except (OSError, ValueError):
        why = "the sweep was stopped before it started" if stopped else "it wrote no summary"
        return end("skipped", note=why)
    if not isinstance(summary, dict):
        return end("skipped", note="unreadable summary")
    status = str(summary.get("status"))
    value = summary.get(metric)
    value = float(value) if isinstance(value, int | float) else None
    if fresh:
        error = summary.get("error") if status != rundir.OK else None
        return end(status, value, _one_line(error or ""))
    returned = job_return_value(job_return)
    if status == rundir.OK and not (isinstance(returned, int | float) and math.isfinite(returned)):
        # main.run returns +inf without touching the folder when it holds another run
        return end(rundir.CONFLICT, note="its folder holds another run (see the report)")
    return end(status, value, "already done, not retrained")


def _one_line(text) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= NOTE_CHARS else text[: NOTE_CHARS - 3] + "..."


def write_job_end(folder: Path, num: int, job: JobEnd) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rundir.atomic_write_json(folder / f"{num:06d}.json", job.__dict__)


def read_job_end(path: Path) -> JobEnd | None:
    try:
        data = rundir.read_json(path)
        return JobEnd(**data)
    except (OSError, ValueError, TypeError):
        return None


# --------------------------------------------------------------------------- launching side


class ProgressWatcher:
    """Prints a line per job-end file that appears in `folder` (a thread, and on demand)."""

    def __init__(
        self, folder: Path, total: int | None, swept: list[str], printer=print, already: int = 0
    ):
        self.folder, self.total, self.swept = folder, total, swept
        # `already`: jobs a resumed tuning sweep finished in earlier sessions (not relaunched)
        self.done, self.already = already, already
        self._seen: set[str] = set()
        self._start = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._print = printer

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="rnn_lab-progress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self.drain()
            except Exception:  # the progress display must never take a sweep down
                log.debug("progress: poll failed", exc_info=True)

    def drain(self) -> None:
        """Print a line for every job that reported since the last look."""
        with self._lock:
            for path in self._new_files():
                job = read_job_end(path)
                if job is None:
                    continue  # retried at the next look
                self._seen.add(path.name)
                self.done += 1
                elapsed = time.monotonic() - self._start
                line = format_line(
                    job, self.done, self.total, elapsed, self.swept, already=self.already
                )
                self._print(f"{line}\n", end="", flush=True)  # one write: whole lines only

    def _new_files(self) -> list[Path]:
        try:
            entries = [
                e
                for e in os.scandir(self.folder)
                if e.name.endswith(".json") and not e.name.startswith(".")
                if e.name not in self._seen
            ]
        except FileNotFoundError:
            return []
        entries.sort(key=lambda e: (e.stat().st_mtime_ns, e.name))
        return [Path(e.path) for e in entries]

    def stop(self) -> None:
        """Stop polling; print what came in meanwhile, and say so when jobs never reported."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self.drain()
        if self.total is not None and self.done < self.total:
            elapsed = format_duration(time.monotonic() - self._start)
            self._print(
                f"[{self.done}/{self.total}] jobs reported after {elapsed}; the other "
                f"{self.total - self.done} did not end (stopped or killed)\n",
                end="",
                flush=True,
            )


class ProgressCallback(Callback):
    """One terminal line per finished job of a sweep; see the module docstring."""

    def __init__(self) -> None:
        self._sweep_dir: Path | None = None  # absolute: jobs may run in another directory
        self._folder: Path | None = None  # <sweep>/.rnn_lab/progress
        self._launcher_pid: int | None = None
        self._watcher: ProgressWatcher | None = None
        self._job_start: float | None = None

    # ---- pickled into job processes: where to report, nothing else ----
    def __getstate__(self) -> dict:
        return {k: self.__dict__[k] for k in ("_sweep_dir", "_folder", "_launcher_pid")}

    def __setstate__(self, state: dict) -> None:
        self.__init__()
        self.__dict__.update(state)

    # ---- the launching process ----
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        folder = rundir.sweep_state_dir(sweep_dir) / PROGRESS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.json"):  # an earlier sweep's jobs (the folder is ours now)
            old.unlink(missing_ok=True)
        total, swept = planned_jobs(config)
        from rnn_lab.app import tuning

        already = tuning.completed_trials(config) if tuning.is_optuna_sweep(config) else 0
        self._sweep_dir, self._folder, self._launcher_pid = sweep_dir, folder, os.getpid()
        self._watcher = ProgressWatcher(folder, total, swept, already=already)
        self._watcher.start()
        atexit.register(self._finish)  # Hydra skips on_multirun_end when the launcher raises

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        atexit.unregister(self._finish)
        self._finish()

    def _finish(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            with contextlib.suppress(Exception):
                watcher.stop()

    # ---- every process that runs a job ----
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._job_start = time.time()

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if self._folder is None or self._job_start is None:
            return  # a single run, not a sweep
        run_dir = Path(str(OmegaConf.select(config, "hydra.runtime.output_dir")))
        metric = str(OmegaConf.select(config, "optimized_metric", default="val_loss"))
        stopped = stop_requested(self._sweep_dir)
        job = job_outcome(run_dir, self._job_start, job_return, metric, stopped)
        job.overrides = [str(o) for o in OmegaConf.select(config, "hydra.overrides.task") or []]
        job.seed = OmegaConf.select(config, "seed", default=None)
        num = int(OmegaConf.select(config, "hydra.job.num", default=0))
        write_job_end(self._folder, num, job)
        if self._watcher is not None and self._launcher_pid == os.getpid():
            self._watcher.drain()  # basic launcher: the line right after the job's own output
