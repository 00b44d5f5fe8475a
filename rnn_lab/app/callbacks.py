"""Hydra callbacks of a sweep: one writer per sweep folder, a clean stop on Ctrl-C / SIGTERM,
and the report at the end. conf/config.yaml enables both, in this order:

    hydra:
      callbacks:
        sweep:
          _target_: rnn_lab.app.callbacks.SweepCallback
        report:
          _target_: rnn_lab.app.callbacks.ReportCallback

Hydra calls ``on_multirun_end`` in reverse order, so the report is built before
SweepCallback ends the sweep (and exits 128+signal when the sweep was stopped).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from rnn_lab import third_party
from rnn_lab.app import sweep
from rnn_lab.run import rundir

log = logging.getLogger(__name__)


def build_sweep_report(sweep_dir: str | Path) -> None:
    """report.md, tables and plots of the sweep; a failure is logged, never raised: the runs
    are on disk and `rnn-lab report DIR` rebuilds the report later."""
    try:
        from rnn_lab.study.report import build_report  # imported late: matplotlib is slow

        report = build_report(Path(sweep_dir))
        log.info("sweep report: %s", report)
        print(f"sweep report: {report}")
    except Exception:
        log.exception("could not build the sweep report (run `rnn-lab report DIR` to retry)")


class ReportCallback(Callback):
    """Writes report.md, tables and plots into the sweep directory after the last job."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            sweep_dir = Path(str(config.hydra.sweep.dir))
        except Exception:
            log.exception("could not build the sweep report (run `rnn-lab report DIR` to retry)")
            return
        build_sweep_report(sweep_dir)


class SweepCallback(Callback):
    """The sweep folder's lock and the sweep's reaction to Ctrl-C / SIGTERM (rnn_lab.app.sweep).

    One instance lives in the launching process; Hydra pickles it into every job process
    (loky worker, Ray worker, submitit task) with the rest of its context, where
    ``__setstate__`` makes that process survive stop signals outside training and the job
    hooks watch for the sweep being stopped.
    """

    def __init__(self) -> None:
        self._sweep_dir: Path | None = None  # absolute: jobs may run in another directory
        self._launcher: sweep.ProcessRef | None = None
        self._bound = True  # jobs end when the launcher is gone (False: SLURM runs them on)
        self._lock: sweep.SweepLock | None = None
        self._signals: sweep.LauncherSignals | None = None
        self._undo: list = []  # what on_multirun_start changed in this process, undone at end
        self._job: tuple[Path, float] | None = None  # (output dir, start time) of the job

    # ---- pickled into job processes: only what a job needs ----
    def __getstate__(self) -> dict:
        return {"_sweep_dir": self._sweep_dir, "_launcher": self._launcher, "_bound": self._bound}

    def __setstate__(self, state: dict) -> None:
        self.__init__()
        self.__dict__.update(state)
        if self._launcher is not None and not self._launcher.is_current():
            # As early as possible in a fresh worker: the rest of the job's unpickling imports
            # the task function, long enough for a Ctrl-C to land.
            sweep.JOB_GUARD.protect(self._launcher, self._bound)

    # ---- the launching process ----
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        _refuse_two_studies(config)
        study = _study_of(config)
        if study:
            _refuse_bad_claims(study)
        lock = sweep.SweepLock(sweep_dir)
        try:
            killed = lock.acquire()
        except sweep.SweepBusy as e:
            print(f"rnn_lab: error: {e}", file=sys.stderr)
            sys.exit(2)  # SystemExit passes through Hydra's callback wrapper: no sweep starts
        if killed:
            log.warning("took over the sweep folder from a sweep that was killed (%s)", killed)
        self._sweep_dir, self._lock = sweep_dir, lock
        self._launcher = sweep.ProcessRef.current()
        if study:
            try:
                _record_declaration(sweep_dir, study, config)
            except OSError:  # the runs still go ahead; the report then says nothing was recorded
                log.exception("could not record the study's declaration in %s", sweep_dir)
        if sweep.stop_requested(sweep_dir):
            log.info("resuming a sweep that was stopped (%s)", sweep.read_interrupted(sweep_dir))
            sweep.clear_interrupted(sweep_dir)
        self._signals = sweep.LauncherSignals(sweep_dir)
        self._signals.install()
        self._undo.append(self._signals.restore)
        target = str(OmegaConf.select(config, "hydra.launcher._target_", default=""))
        # A SLURM job runs whether or not its submitter waits for it (submit, log out, read
        # the report later): it must not stop when the launching process is gone.
        self._bound = "slurm" not in target.lower()
        self._adapt_launcher(target)
        # Hydra skips on_multirun_end when the launcher raises: the lock, the pools and the
        # report of a stopped sweep are then dealt with at exit.
        atexit.register(self._at_exit)
        self._undo.append(lambda: atexit.unregister(self._at_exit))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._signals is None:
            return  # on_multirun_start refused or never ran
        signum = self._signals.signum
        self._end()
        if signum is not None:
            log.warning("the sweep was stopped by %s: its report is partial", _name(signum))
            sys.exit(128 + signum)  # the shell's convention, as a single run: 130, 143

    def _at_exit(self) -> None:
        """The launcher raised after the sweep was stopped: the report of what ended is still
        built, by `rnn-lab report` in a fresh process (this one is shutting down, and the
        imports the report needs can no longer start threads)."""
        if self._signals is None:
            return
        if self._signals.signum is not None:
            with contextlib.suppress(Exception):
                subprocess.run(
                    [sys.executable, "-m", "rnn_lab.app.cli", "report", str(self._sweep_dir)],
                    check=False,
                )
        self._end()

    def _end(self) -> None:
        """Stop what the sweep started in this process, then let the folder go."""
        _shutdown_pools()
        for undo in reversed(self._undo):
            with contextlib.suppress(Exception):
                undo()
        self._undo.clear()
        self._signals = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _adapt_launcher(self, target: str) -> None:
        """What joblib, Ray and submitit do in the launching process that would break a clean
        stop. A library version without the name patched keeps its own behaviour (the patched
        names and the versions they were written for: rnn_lab.third_party)."""
        if "joblib" in target or "rnn_lab_launcher" in target:  # stacked: loky workers too
            # A loky worker that gets Ctrl-C while it boots (seconds: it imports numpy before
            # it can run anything of ours) dies, and the pool with it. Started with SIGINT
            # blocked (inherited), it lets the signal in once it is protected (JobGuard).
            # Blocked right at the fork: loky's resource tracker unblocks SIGINT on its way.
            self._undo.append(third_party.wrap("loky.fork_exec", _with_sigint_blocked))
        if "ray" in target.lower():  # Hydra's RayLauncher or rnn_lab's (cluster_launchers)
            # ray.init() replaces the SIGTERM handler twice: in Python by sys.exit, and in C
            # by its crash handler, which aborts. Either kills the launcher in ray.get with
            # every job cut off: ours are put back once Ray has started.
            def start_ray(original, *args, **kwargs):
                original(*args, **kwargs)
                if self._signals is not None:
                    self._signals.reinstall()

            self._undo.append(third_party.wrap("ray_launcher.start_ray", start_ray))
        if "submitit" in target:
            # A job controller in the terminal's process group dies of Ctrl-C with a traceback
            # and SIGKILLs its job 1 s later, checkpoint or not: started with SIGINT blocked.
            self._undo.append(third_party.wrap("submitit.start_controller", _with_sigint_blocked))

    # ---- every process that runs a job (the launcher itself with the basic launcher) ----
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if self._launcher is None:
            return  # a single run, not a sweep
        if not self._launcher.is_current():
            # Again: a launcher may have set its own handlers since the unpickling.
            sweep.JOB_GUARD.protect(self._launcher, self._bound)
        self._job = (Path(HydraConfig.get().runtime.output_dir), time.time())
        sweep.JOB_GUARD.start_job(self._sweep_dir, self._launcher)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if self._launcher is None:
            return
        sweep.JOB_GUARD.end_job(restore=not self._launcher.is_current())
        job, self._job = self._job, None
        if self._signals is not None and job is not None:
            # The basic launcher runs the job here: the trainer's handler, not ours, caught
            # the signal. The jobs after it must not start.
            signum = _interrupted_by(*job)
            if signum is not None:
                self._signals.stop(signum)


def _interrupted_by(run_dir: Path, since: float) -> int | None:
    """The signal that stopped the job in run_dir, when its summary (written since) says so."""
    path = run_dir / rundir.SUMMARY_FILE
    try:
        if path.stat().st_mtime < since - 1:  # an earlier attempt's summary, not this job's
            return None
        summary = rundir.read_json(path)
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or summary.get("status") != rundir.INTERRUPTED:
        return None
    return sweep.stop_signal(summary.get("signal"))


def _study_of(config: DictConfig) -> dict | None:
    """The sweep's `study:` block as plain data (None for a sweep that is not a study)."""
    study = OmegaConf.select(config, "study", default=None)
    if study is None:
        return None
    return OmegaConf.to_container(study, resolve=True) if OmegaConf.is_config(study) else None


def _refuse_two_studies(config: DictConfig) -> None:
    """study=A experiment=B (the group and its old name) would merge two studies: refused."""
    from rnn_lab.study.grid import chosen_study

    try:
        chosen_study(OmegaConf.select(config, "hydra.runtime.choices", default=None) or {})
    except ValueError as e:
        print(f"rnn_lab: error: {e}", file=sys.stderr)
        sys.exit(2)


def _refuse_bad_claims(study: dict) -> None:
    """A claim that cannot be checked stops the study before any folder is touched."""
    from rnn_lab.study.claims import ClaimError, check_claims

    try:
        check_claims(study.get("claims") or [])
    except ClaimError as e:
        print(
            f"rnn_lab: error: the study declares a claim that cannot be checked: {e}",
            file=sys.stderr,
        )
        sys.exit(2)


def _record_declaration(sweep_dir: Path, study: dict, config: DictConfig) -> None:
    """The study's claims, grid and seeds as declared at this start (rnn_lab.study.declaration)."""
    from rnn_lab.study.declaration import record_declaration
    from rnn_lab.study.grid import declared_grid

    params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
    task = OmegaConf.select(config, "hydra.overrides.task", default=None) or []
    info = {
        "sweeper_params": OmegaConf.to_container(params) if OmegaConf.is_config(params) else {},
        "task_overrides": list(task),
    }
    entry = record_declaration(sweep_dir, study, declared_grid(info))
    if entry is not None and entry["finished_runs"]:
        log.warning(
            "the study's declaration changed after %d runs had ended: the report marks what "
            "was declared after the results",
            entry["finished_runs"],
        )


def _with_sigint_blocked(original, *args, **kwargs):
    with sweep.sigint_blocked():
        return original(*args, **kwargs)


def _name(signum: int) -> str:
    return signal.Signals(signum).name


def _shutdown_pools() -> None:
    """No worker outlives the sweep: joblib's reusable loky executor would keep its idle
    workers for 300 s, and Ray its local cluster until interpreter exit."""
    executor = third_party.resolve("loky.executor", None, imported_only=True)
    if executor is not None:
        with contextlib.suppress(Exception):
            executor.shutdown(wait=True)
    ray = sys.modules.get("ray")
    if ray is not None and getattr(ray, "is_initialized", lambda: False)():
        with contextlib.suppress(Exception):
            ray.shutdown()
