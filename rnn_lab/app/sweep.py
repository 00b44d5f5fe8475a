"""Sweep-wide state shared by the launching process and its jobs, and how a sweep stops.

One sweep writes into a sweep folder at a time: the launching process holds an exclusive
``flock`` on ``.rnn_lab/sweep.lock`` for the whole sweep (:class:`SweepLock`). The kernel drops
it when the holder dies, so a folder left by a killed sweep is taken over, never blocked.

Ctrl-C / SIGTERM on a sweep, whatever the launcher:

- the launching process catches it (:class:`LauncherSignals`) instead of dying, and writes
  ``.rnn_lab/interrupted.json`` (signal, time, pid): jobs that start afterwards do no work
  (:func:`stop_requested`, checked by the task function);
- every process running a job watches that marker (:class:`JobGuard`, a thread) and sends
  the signal to its own main thread, where the trainer's handler finishes the step, writes a
  checkpoint and returns ``interrupted``. This reaches the jobs a signal to the launcher alone
  does not (``timeout`` signals only the parent; Ray workers sit in their own process groups;
  SLURM tasks on other hosts share only the file system);
- a job process also stops by itself when the launching process is gone (killed with
  SIGKILL), so no job trains on, orphaned, in a folder whose lock is free again; except a
  SLURM job, which the cluster runs whether or not its submitter is still there;
- the launcher then returns normally, the report is built, and the sweep exits 128+signal.

What a cluster does to a job:

- SIGUSR2 (:data:`PREEMPT_SIGNAL`: SLURM's warning before a preemption or the time limit,
  as submitit asks for it) stops the trainer like SIGTERM, with a checkpoint; then
  :func:`hand_on_preemption` gives the signal to the handler that was there before (submitit's:
  requeue the job and exit);
- a job started again by the same sweep (a requeued SLURM job, a Ray task retried after its
  node died) is the same run: :func:`retry_of` says so, and it resumes from its checkpoint
  whatever ``resume`` says.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import socket
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from rnn_lab.run import rundir

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# SLURM's signal before a preemption or the time limit (sbatch --signal=USR2@120, as submitit
# asks for it; scancel --signal=USR2 sends it by hand). The trainer stops on it too
# (rnn_lab.run.lifecycle.STOP_SIGNALS); hand_on_preemption then passes it on.
PREEMPT_SIGNAL = signal.SIGUSR2
POLL_S = 0.2  # how often a job process looks at the marker and at the launcher
RESEND_S = 1.0  # a stop signal is sent again this often while the job still runs (see _watch)


def interrupted_marker(sweep_dir: str | Path) -> Path:
    return rundir.sweep_state_dir(sweep_dir) / rundir.SWEEP_INTERRUPTED_FILE


def stop_requested(sweep_dir: str | Path) -> bool:
    """True when the sweep writing into sweep_dir was told to stop."""
    return interrupted_marker(sweep_dir).exists()


def read_interrupted(sweep_dir: str | Path) -> dict | None:
    """The marker's fields, or None when the sweep was not stopped (or the file is garbage)."""
    try:
        data = rundir.read_json_or_none(interrupted_marker(sweep_dir))
    except (ValueError, OSError):
        return None
    return data if isinstance(data, dict) else None


def mark_interrupted(sweep_dir: str | Path, signum: int) -> None:
    marker = interrupted_marker(sweep_dir)
    marker.parent.mkdir(parents=True, exist_ok=True)
    when = datetime.now().astimezone().isoformat(timespec="seconds")
    rundir.atomic_write_json(marker, {"signal": int(signum), "time": when, "pid": os.getpid()})


# What the launching process must do before its jobs learn of a stop (see before_stop).
_BEFORE_STOP: list = []


@contextlib.contextmanager
def before_stop(action):
    """Run action() in the launching process when the sweep is stopped, before the marker is
    written: the SLURM launcher cancels its queued jobs there, while the running jobs still
    hold their CPUs (cancelled after the marker, a queued job can be started in the CPU a
    stopping job has just freed, and ends COMPLETED with nothing done instead of CANCELLED)."""
    _BEFORE_STOP.append(action)
    try:
        yield
    finally:
        _BEFORE_STOP.remove(action)


def clear_interrupted(sweep_dir: str | Path) -> None:
    interrupted_marker(sweep_dir).unlink(missing_ok=True)


def stop_signal(value) -> int:
    """SIGINT or SIGTERM from a recorded value; SIGTERM for anything else."""
    return int(value) if value in (int(s) for s in STOP_SIGNALS) else int(signal.SIGTERM)


# ---- processes -----------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks since boot) of a process, None when it does not exist."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the name in (...) may hold spaces
    return fields[0], int(fields[19])


@dataclass(frozen=True)
class ProcessRef:
    """A process named so that it can be recognised later, even after its pid is reused."""

    pid: int
    host: str
    start: int | None

    @classmethod
    def current(cls) -> ProcessRef:
        stat = _proc_stat(os.getpid())
        return cls(os.getpid(), socket.gethostname(), stat[1] if stat else None)

    def is_current(self) -> bool:
        return self.pid == os.getpid() and self.host == socket.gethostname()

    def gone(self) -> bool:
        """True when the process has ended (a zombie counts as ended). Only known on its own
        host: a process elsewhere (a SLURM job's launcher) is never reported gone."""
        if self.host != socket.gethostname() or self.start is None:
            return False
        stat = _proc_stat(self.pid)
        return stat is None or stat[0] == "Z" or stat[1] != self.start


# ---- the sweep lock --------------------------------------------------------------------------


class SweepBusy(RuntimeError):
    """Another live sweep writes into the folder; the message names it (one line)."""


def _holder(note: str) -> str:
    try:
        who = json.loads(note)
        return f"pid {who['pid']} on host {who['host']}, since {who['since']}"
    except (ValueError, KeyError, TypeError):
        return note.strip() or "unknown"


class SweepLock:
    """The exclusive lock on a sweep folder, held from the sweep's start to its end.

    The holder's note (pid, host, since) stays in the lock file while it holds the lock and is
    emptied on a clean release, so a note found by the next taker means its writer was killed.
    """

    def __init__(self, sweep_dir: str | Path):
        self.sweep_dir = Path(sweep_dir)
        self.path = rundir.sweep_state_dir(sweep_dir) / rundir.SWEEP_LOCK_FILE
        self._stack = contextlib.ExitStack()

    def acquire(self) -> str | None:
        """Take the lock; returns the holder a killed sweep left (taken over), else None.
        Raises SweepBusy when a live sweep holds it; then no file is changed."""
        left = self.path.read_text(errors="replace") if self.path.exists() else ""
        try:
            self._stack.enter_context(rundir.file_lock(self.path, "sweep folder"))
        except rundir.LockHeld:
            note = self.path.read_text(errors="replace") if self.path.exists() else ""
            raise SweepBusy(
                f"the sweep folder {self.sweep_dir} is in use by another sweep "
                f"({_holder(note)}); wait for it to end or stop it first"
            ) from None
        return _holder(left) if left.strip() else None

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.truncate(self.path, 0)  # still held here: a clean end leaves no note
        self._stack.close()


# ---- the launching process -----------------------------------------------------------------


class LauncherSignals:
    """SIGINT/SIGTERM handlers of the process that launches the jobs.

    The launcher must not die of the signal (joblib would kill its workers before they write
    their checkpoint; a parent killed by ``timeout`` would leave them running): the handler
    only writes the marker, which every job process acts on, and remembers the signal.
    """

    def __init__(self, sweep_dir: str | Path):
        self.sweep_dir = Path(sweep_dir)
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    @property
    def installed(self) -> bool:
        return bool(self._previous)

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # signal.signal only works there; the sweep then stops as before
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def reinstall(self) -> None:
        """Put the handlers back after a library replaced them (keeping the originals)."""
        if self.installed and threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def stop(self, signum: int) -> bool:
        """Mark the sweep stopped by signum; False when it was already stopping."""
        if self.signum is not None:
            return False
        self.signum = stop_signal(signum)
        for action in list(_BEFORE_STOP):
            try:
                action()
            except Exception:  # the jobs must still be told to stop
                log.exception("could not run %r before stopping the sweep", action)
        mark_interrupted(self.sweep_dir, self.signum)
        _tell(
            f"rnn_lab: {signal.Signals(self.signum).name}: stopping the sweep: running jobs "
            "write a checkpoint, jobs not started are skipped (re-run the same command to resume)"
        )
        return True

    def _handle(self, signum, frame) -> None:
        if self.stop(signum):
            return
        if time.monotonic() - JOB_GUARD.last_self_signal > RESEND_S:  # not our own watcher's
            _tell(f"rnn_lab: {signal.Signals(signum).name}: already stopping, waiting for jobs")


def _tell(line: str) -> None:
    # os.write, not print: a signal handler may run while the main thread writes to stderr.
    with contextlib.suppress(OSError):
        os.write(2, (line + "\n").encode())


@contextlib.contextmanager
def sigint_blocked():
    """SIGINT held back in the calling thread for the block: a process started inside inherits
    the block (it does not see the terminal's Ctrl-C until it unblocks it); a SIGINT sent to
    this process meanwhile goes to another thread, or waits for the block's end."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


# ---- a process that runs jobs ----------------------------------------------------------------


def _is_interpreter_default(handler) -> bool:
    return handler in (signal.SIG_DFL, signal.default_int_handler, None)


@dataclass
class _RunningJob:
    sweep_dir: Path
    blocked: set  # signals the main thread blocks (Ray blocks SIGINT in its workers)
    last_sent: float = -math.inf  # monotonic time the stop signal was last sent


class JobGuard:
    """What a process that runs jobs does for the sweep (one per process: :data:`JOB_GUARD`).

    - :meth:`protect` (job processes other than the launcher): a stop signal that arrives
      outside the trainer's own handler is swallowed instead of killing the process (a loky
      worker dying of Ctrl-C between jobs breaks the pool, and the sweep ends without report).
    - :meth:`start_job` / :meth:`end_job` bracket a job; a watcher thread (:meth:`_watch`)
      stops the job when the sweep is stopped or its launcher is gone, and ends a job process
      left without a launcher between jobs (loky workers would idle for 300 s, Ray's and
      submitit's would wait for nothing).
    """

    def __init__(self):
        self._previous: dict[int, object] = {}
        self._launcher: ProcessRef | None = None
        self._bound = True  # the job ends when its launcher is gone (not a SLURM job)
        self._job: _RunningJob | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.last_self_signal = -math.inf  # monotonic time of the watcher's last signal

    @property
    def launcher(self) -> ProcessRef | None:
        """The launching process of the sweep whose job this process runs (None: no sweep)."""
        return self._launcher

    def protect(self, launcher: ProcessRef, bound: bool = True) -> None:
        """bound=False: the job runs on when its launcher is gone (a SLURM job: the cluster
        runs it whether or not the process that submitted it still waits for it)."""
        self._launcher, self._bound = launcher, bound
        self._ensure_watching()
        if threading.current_thread() is not threading.main_thread():
            return  # no handler can be installed: the process keeps its launcher's behaviour
        for sig in STOP_SIGNALS:
            current = signal.getsignal(sig)
            if current != self._swallow:
                self._previous[sig] = current
                signal.signal(sig, self._swallow)
        # Started with SIGINT blocked (a loky worker, a submitit task: see callbacks), the job
        # now takes the terminal's Ctrl-C itself; one that came while it booted is swallowed.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)

    def _swallow(self, signum, frame) -> None:
        """The job goes on to its end; the watcher re-sends the signal while it runs."""

    def start_job(self, sweep_dir: Path, launcher: ProcessRef) -> None:
        self._launcher = launcher
        blocked = set(signal.pthread_sigmask(signal.SIG_BLOCK, []))
        with self._lock:
            self._job = _RunningJob(sweep_dir, blocked)
        self._ensure_watching()

    def _ensure_watching(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._watch, name="rnn_lab-sweep", daemon=True)
            self._thread.start()

    def end_job(self, restore: bool = True) -> None:
        with self._lock:  # from here on the watcher sends nothing more
            self._job = None
        if not restore or threading.current_thread() is not threading.main_thread():
            return
        # A launcher's own handler (Ray's SIGTERM, submitit's) comes back after the job. The
        # interpreter's defaults do not: a pool worker outlives its job and must survive a
        # late Ctrl-C, or the pool breaks with the sweep's report unwritten.
        for sig, handler in list(self._previous.items()):
            if not _is_interpreter_default(handler):
                signal.signal(sig, handler)
                del self._previous[sig]

    def _watch(self) -> None:
        while True:
            time.sleep(POLL_S)
            launcher = self._launcher
            orphaned = (
                self._bound
                and launcher is not None
                and not launcher.is_current()
                and launcher.gone()
            )
            with self._lock:
                job = self._job
                if job is None and orphaned:
                    log.warning("the sweep's launcher (pid %d) is gone: exiting", launcher.pid)
                    logging.shutdown()
                    os._exit(128 + signal.SIGTERM)
                if job is not None:
                    signum = signal.SIGTERM if orphaned else _stop_signal_of(job.sweep_dir)
                    if signum is not None:
                        self._send(job, signum)

    def _send(self, job: _RunningJob, signum: int) -> None:
        """The stop signal to the main thread, where the trainer's handler is. Sent again every
        RESEND_S: one that lands just before the trainer installs its handler is swallowed.
        Called with the lock held: never after end_job, when a launcher's own handler (Ray's
        SIGTERM: exit) may be back."""
        now = time.monotonic()
        if now - job.last_sent < RESEND_S:
            return
        if signum in job.blocked:
            signum = next((s for s in STOP_SIGNALS if s not in job.blocked), signum)
        if job.last_sent == -math.inf:
            log.warning("the sweep is stopping (%s): this job stops", signal.Signals(signum).name)
        job.last_sent = self.last_self_signal = now
        with contextlib.suppress(ProcessLookupError):
            # Not os.kill: a process-wide signal may be taken by this thread, and a main
            # thread blocked in a system call would not wake up to run the handler.
            signal.pthread_kill(threading.main_thread().ident, signum)


def _stop_signal_of(sweep_dir: Path) -> int | None:
    if not stop_requested(sweep_dir):
        return None
    return stop_signal((read_interrupted(sweep_dir) or {}).get("signal"))


JOB_GUARD = JobGuard()


# ---- what a cluster does to a job ------------------------------------------------------------


def retry_of(sweep_dir: Path | None, job_dir: Path) -> str | None:
    """Why this start of the job is a retry of the same run (None: it is not): SLURM started
    it again (``SLURM_RESTART_COUNT``: requeued after a preemption, a time limit or a node
    failure), or the same sweep started this job before (a Ray task retried on another node).
    Counts this start in the sweep folder."""
    restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
    attempt = 1
    launcher = JOB_GUARD.launcher
    if sweep_dir is not None and launcher is not None:
        attempt = rundir.record_attempt(sweep_dir, job_dir, asdict(launcher))
    if restarts.isdigit() and int(restarts) > 0:
        return f"SLURM started this job again (SLURM_RESTART_COUNT={restarts})"
    if attempt > 1:
        return f"start {attempt} of this job in the same sweep (its worker or node was lost)"
    return None


def hand_on_preemption() -> None:
    """After the trainer stopped on PREEMPT_SIGNAL and wrote its checkpoint: the signal goes
    to the handler the process had before training (submitit's, in a SLURM job: requeue the
    job, then exit). A handler that declines (submitit: timed out too many times) leaves the
    run interrupted, to resume with the next run of the study. Without a handler (a run
    outside submitit) nothing more happens."""
    handler = signal.getsignal(PREEMPT_SIGNAL)
    if not callable(handler):
        return
    try:
        handler(PREEMPT_SIGNAL, None)
    except Exception as e:  # SystemExit (requeued: the process ends) passes
        log.warning("not requeued (%s): the run stays interrupted; run it again to resume", e)
