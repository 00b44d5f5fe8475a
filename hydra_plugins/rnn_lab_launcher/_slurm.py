"""The SLURM launcher's work in the launching process (see cluster_launchers.py).

Submission is Hydra's submitit launcher's (the same executor parameters, one job array, the
launcher object as the job, so a requeued job runs it again); the waiting is rnn_lab's:
job states from ``squeue`` where the cluster keeps no accounting, queued jobs cancelled when
the sweep is stopped, and a job without a result returned as a lost job, not raised.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import submitit
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from omegaconf import OmegaConf
from submitit.core.utils import FailedJobError, UncompletedJobError
from submitit.slurm.slurm import SlurmInfoWatcher

from rnn_lab.app.sweep import before_stop, stop_requested

from .cluster_launchers import lost_job

log = logging.getLogger(__name__)

POLL_S = 1.0  # how often the launcher looks at its jobs (result files; squeue at most every 2 s)
# States squeue shows for a job that may still run (submitit's own list of unfinished states).
WAITING_STATES = ("PENDING", "REQUEUED", "REQUEUE_HOLD", "CONFIGURING")
ENDED = "ENDED"  # a job squeue no longer lists: it ended before the cluster's MinJobAge


def launch(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int):
    config = launcher.config
    sweep_dir = Path(str(config.hydra.sweep.dir))
    executor = _executor(launcher.params)
    log.info("Submitit 'slurm' sweep output dir : %s", sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if "mode" in config.hydra.sweep:
        os.chmod(sweep_dir, mode=int(str(config.hydra.sweep.mode), 8))
    job_params = []
    for i, overrides in enumerate(job_overrides):
        idx = initial_job_idx + i
        log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
        state = Singleton.get_state()
        job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", state))
    jobs = executor.map_array(launcher, *zip(*job_params))
    log.info("submitted %d jobs as SLURM job array %s", len(jobs), jobs[0].job_id.split("_")[0])
    watcher = _watcher()
    if watcher is not None:
        for job in jobs:
            job.watcher = watcher  # this job's states from squeue (submitit's: sacct)
    with before_stop(lambda: _cancel_pending(jobs)):
        _wait(jobs, sweep_dir)
    return [_job_return(job, overrides) for job, overrides in zip(jobs, job_overrides)]


def _executor(params: dict) -> submitit.AutoExecutor:
    """The executor Hydra's submitit launcher builds from the launcher's parameters."""
    init_keys = {"submitit_folder", "max_num_timeout"}
    executor = submitit.AutoExecutor(
        cluster="slurm",
        folder=params["submitit_folder"],
        slurm_max_num_timeout=params["max_num_timeout"],
    )
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(
        **{k if k in base else f"slurm_{k}": v for k, v in params.items() if k not in init_keys}
    )
    return executor


class SqueueWatcher(SlurmInfoWatcher):
    """submitit's SLURM job watcher, reading squeue instead of sacct (for a cluster without
    accounting, where sacct fails). A job squeue no longer lists ended more than the cluster's
    MinJobAge ago: it is done (its result file, or its absence, says how)."""

    def _make_command(self) -> list[str] | None:
        if not self._registered - self._finished:
            return None
        return ["squeue", "--me", "--noheader", "--array", "--states=all", "--format=%i|%T|%N"]

    def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
        text = string.decode() if isinstance(string, bytes) else string
        info = super().read_info("JobID|State|NodeList\n" + text)  # sacct's --parsable2 form
        for job_id in self._registered - self._finished - set(info):
            info[job_id] = {"JobID": job_id, "State": ENDED, "NodeList": ""}
        return info


def _watcher() -> SqueueWatcher | None:
    """A squeue watcher when the cluster keeps no accounting; None: submitit's own (sacct)."""
    try:
        out = subprocess.run(
            ["scontrol", "show", "config"], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"^AccountingStorageType\s*=\s*(\S*)", out, re.MULTILINE)
    storage = found.group(1) if found else None
    if storage not in ("accounting_storage/none", "(null)", ""):
        return None
    log.info("SLURM keeps no accounting here (sacct cannot work): watching the jobs with squeue")
    return SqueueWatcher(delay_s=60)


def _cancel_pending(jobs: list) -> None:
    """Cancel the array's tasks SLURM still holds in its queue (its own state, not the
    watcher's cached one), at once: called before the running jobs are told to stop."""
    arrays = sorted({job.job_id.split("_")[0] for job in jobs})
    done = subprocess.run(
        ["scancel", "--state=PENDING", *arrays], capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        log.warning("scancel --state=PENDING %s: %s", " ".join(arrays), done.stderr.strip())


def _wait(jobs: list, sweep_dir: Path) -> None:
    """Until every job is done; once the sweep is stopped (Ctrl-C / SIGTERM: the running jobs
    checkpoint and end), the jobs still waiting in the queue are cancelled, not started
    (_cancel_pending did it already; this also catches a job requeued since)."""
    cancelled = False
    while not all(job.done() for job in jobs):
        if not cancelled and stop_requested(sweep_dir):
            waiting = [job for job in jobs if job.state in WAITING_STATES]
            for job in waiting:
                job.cancel(check=False)
            if waiting:
                log.warning("the sweep was stopped: cancelled %d queued jobs", len(waiting))
            cancelled = True
        time.sleep(POLL_S)


def _job_return(job, overrides: Sequence[str]) -> JobReturn:
    """The job's JobReturn; a job that ended without one is a lost job (see lost_job)."""
    if not job.paths.result_pickle.exists() and job.state not in ("COMPLETED", "COMPLETING"):
        # Cancelled before it ran, or killed: no result will come (submitit would wait 15 s).
        return lost_job(overrides, f"SLURM job {job.job_id} ended {job.state} without a result")
    try:
        return job.results()[0]
    except (UncompletedJobError, FailedJobError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return lost_job(overrides, f"SLURM job {job.job_id} ended without a result ({first})")
