"""``launcher=submitit_slurm`` and ``launcher=ray``: Hydra's own plugins, with what a real
cluster needs (the presets in conf/launcher/ point ``_target_`` here; every other key is the
plugin's own).

- SLURM: on a cluster without accounting (no slurmdbd), jobs are watched through ``squeue``
  instead of ``sacct`` (which fails there, with a warning on every poll, and then never sees a
  job end); a job that ends without a result (cancelled, lost) is a job of the sweep whose run
  directory says what happened, not an exception that ends the sweep without its report; jobs
  still waiting in the queue are cancelled when the sweep is stopped (Ctrl-C / SIGTERM).
- Ray: pointed at an existing cluster (``hydra.launcher.ray.init.address=HOST:PORT``), the
  arguments that only start a local Ray (object_store_memory, num_cpus, _temp_dir, ...) are
  left out instead of making ``ray.init`` refuse; the sweep folder is sent as an absolute path
  (workers on other nodes run elsewhere); a job whose node or worker died is retried by Ray
  (``max_retries``) and resumes from its checkpoint; a job lost for good is recorded, not
  raised.

The work is in ``_slurm.py`` and ``_ray.py``, imported when a sweep launches (not when Hydra
scans plugins). A base plugin that is not installed leaves its launcher out.
"""

# No `from __future__ import annotations`: Hydra's plugin scan executes this module outside
# sys.modules (see stacked_launcher.py).
import logging
from collections.abc import Sequence

from hydra.core.utils import JobReturn, JobStatus

log = logging.getLogger(__name__)

try:
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
        SlurmLauncher as _HydraSlurmLauncher,
    )
except ImportError:  # the submitit launcher is not installed
    _HydraSlurmLauncher = None

try:
    from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher as _HydraRayLauncher
except ImportError:  # the Ray launcher is not installed
    _HydraRayLauncher = None


if _HydraSlurmLauncher is not None:

    class SlurmLauncher(_HydraSlurmLauncher):
        """Hydra's submitit SLURM launcher; its jobs (``__call__``, requeue through
        ``checkpoint``) are Hydra's, the waiting for them is rnn_lab's."""

        def launch(
            self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
        ) -> Sequence[JobReturn]:
            from . import _slurm

            return _slurm.launch(self, job_overrides, initial_job_idx)


if _HydraRayLauncher is not None:

    class RayLauncher(_HydraRayLauncher):
        """Hydra's Ray launcher, able to use an existing cluster."""

        def launch(
            self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
        ) -> Sequence[JobReturn]:
            from . import _ray

            return _ray.launch(self, job_overrides, initial_job_idx)


def lost_job(overrides: Sequence[str], what: str) -> JobReturn:
    """The return of a job the cluster ended without a result (cancelled, its node lost for
    good): what a job that ended badly returns (+inf, the value of a run that did not end ok),
    so the sweep goes on to its report. The job's run directory says how far it got
    (interrupted with a checkpoint, or incomplete); running the study again resumes it."""
    from rnn_lab.app.main import NOT_OK

    log.warning(
        "job %s: %s; its run resumes when the study is run again", " ".join(overrides), what
    )
    return JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=NOT_OK)
