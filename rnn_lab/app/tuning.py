"""Tuning sweeps with Hydra's Optuna sweeper: a fixed budget of trials that survives a stop.

A tuning study (experiments/tune_*.yaml) sets ``hydra/sweeper: optuna`` with a storage in its
sweep folder (``sqlite:///<sweep>/optuna.db``) and registers :class:`TuningCallback`. For the
duration of the sweep the callback wraps the sweeper (as rnn_lab.app.callbacks adapts the
launchers), so that:

- ``hydra.sweeper.n_trials`` is the study's total budget: a re-run asks only for the trials
  still missing, so an interrupted study continues where it stopped and ends with exactly
  ``n_trials`` finished trials;
- a trial whose run did not end (interrupted by Ctrl-C / SIGTERM, cut off by a kill, skipped
  because the sweep was stopped) is a failed Optuna trial, not a result: the sweeper gets
  :class:`NotAResult` instead of the job's +inf (a value that is no number, which the sweeper
  records as a failed trial), and the next run of the study tries its parameters again first
  (the run resumes from its checkpoint). A trial left RUNNING by a killed sweep is marked
  failed the same way;
- once the sweep is stopped no more jobs are launched;
- the sweep's config is saved as multirun.yaml, as Hydra's basic sweeper does;
- Optuna 2.x (the only one hydra-optuna-sweeper 1.3 accepts) works with SQLAlchemy 2: it
  writes its schema version in a transaction SQLAlchemy 2 never commits, so a new storage is
  initialised here first.

A diverged or failed run is a result: its task function returns +inf (rnn_lab.app.main), which
Optuna keeps as a complete trial with the worst value, and the sampler learns to avoid it.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import warnings
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from rnn_lab import third_party
from rnn_lab.app.sweep import stop_requested
from rnn_lab.run import rundir

log = logging.getLogger(__name__)

# Run statuses that are results (the run ended by itself): ok, diverged, failed.
RESULT_STATUSES = (rundir.OK, rundir.DIVERGED, rundir.FAILED)


def is_optuna_sweep(config: DictConfig) -> bool:
    return "optuna" in str(OmegaConf.select(config, "hydra.sweeper._target_", default=""))


# --------------------------------------------------------------------------- the storage


def sqlite_file(url: str | None) -> Path | None:
    prefix = "sqlite:///"
    if not isinstance(url, str) or not url.startswith(prefix):
        return None
    return Path(url[len(prefix) :].split("?", 1)[0])


def completed_trials(config: DictConfig) -> int:
    """How many trials of an Optuna sweep's study are complete already (0 for a new study):
    a resumed tuning sweep only runs the rest, and its progress count starts from these."""
    url = OmegaConf.select(config, "hydra.sweeper.storage", default=None)
    path = sqlite_file(url)
    if path is None or not path.exists():
        return 0  # no storage yet (opening one here would create it)
    import optuna
    from optuna.trial import TrialState

    try:
        name = OmegaConf.select(config, "hydra.sweeper.study_name", default=None)
        study = optuna.load_study(study_name=name, storage=str(url))
    except Exception:  # no such study in the file, or an unreadable file: count none
        return 0
    return sum(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False))


def prepare_storage(url: str) -> None:
    """Make a SQLite storage's folder and, for Optuna 2.x under SQLAlchemy 2, a storage Optuna
    can open: its tables and its schema version (alembic stamp), committed."""
    path = sqlite_file(url)
    if path is not None:
        path.absolute().parent.mkdir(parents=True, exist_ok=True)
    third_party.optuna2_prepare_storage(url)


def _params_key(params: dict) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


def resume_study(url: str, study_name: str | None) -> tuple[int, int]:
    """Prepare a study that ran before: trials left RUNNING by a killed sweep fail, the
    parameters of every trial that did not finish are queued again (once). Returns how many
    trials are complete, and how many there are."""
    import optuna
    from optuna.trial import TrialState

    try:
        study = optuna.load_study(study_name=study_name, storage=url)
    except KeyError:
        return 0, 0  # a new study
    trials = study.get_trials(deepcopy=False)
    queued = {_params_key(t.params) for t in trials if t.state == TrialState.COMPLETE}
    queued |= {_params_key(t.system_attrs.get("fixed_params", {})) for t in trials if _waiting(t)}
    for trial in trials:
        if trial.state == TrialState.RUNNING:  # its sweep was killed while it ran
            third_party.optuna_fail_trial(study, trial)
        if trial.state in (TrialState.RUNNING, TrialState.FAIL) and trial.params:
            key = _params_key(trial.params)
            if key not in queued:
                with warnings.catch_warnings():  # "experimental" in Optuna 2 (stable in 3)
                    warnings.simplefilter("ignore")
                    study.enqueue_trial(dict(trial.params))
                queued.add(key)
    return sum(t.state == TrialState.COMPLETE for t in trials), len(trials)


def _waiting(trial) -> bool:
    from optuna.trial import TrialState

    return trial.state == TrialState.WAITING


def _record_budget(url: str, study_name: str | None, budget: int) -> None:
    import optuna

    with contextlib.suppress(KeyError):
        optuna.load_study(study_name=study_name, storage=url).set_user_attr(
            rundir.OPTUNA_BUDGET_ATTR, budget
        )


# --------------------------------------------------------------------------- the job returns


class NotAResult:
    """A trial's return when its run did not end. Not a number: the sweeper cannot turn it into
    a value and records a failed trial, with this text in its warning."""

    def __init__(self, why: str):
        self.why = why

    def __float__(self) -> float:
        raise ValueError(self.why)

    def __str__(self) -> str:
        return f"not a result: {self.why}; re-run the study to try these parameters again"


def job_result(ret: JobReturn) -> JobReturn:
    """The job's return as a trial value: NaN (a failed trial) when its run did not end."""
    if ret.status != JobStatus.COMPLETED:
        return ret  # the sweeper records an exception as a failed trial itself
    run_dir = Path(str(OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir")))
    try:
        summary = rundir.read_json_or_none(run_dir / rundir.SUMMARY_FILE) or {}
    except (OSError, ValueError):
        summary = {}
    if not isinstance(summary, dict) or summary.get("status") not in RESULT_STATUSES:
        status = summary.get("status") if isinstance(summary, dict) else None
        ret.return_value = NotAResult(f"the run {status or 'did not start'}")
    return ret


def skipped_job(overrides) -> JobReturn:
    """A trial the stopped sweep does not launch: no job, no folder, a failed trial."""
    ret = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED)
    ret.return_value = NotAResult("the sweep was stopped before this trial")
    return ret


# --------------------------------------------------------------------------- the sweeper


def _tuning_sweep(original, sweeper, arguments: list[str]):
    """OptunaSweeperImpl.sweep with a total budget, resumable trials and a clean stop."""
    sweep_dir = Path(str(sweeper.sweep_dir))
    budget = int(sweeper.n_trials)
    # The sweep as configured, as Hydra's basic sweeper records it (Optuna's does not): the
    # collector and the report read the search space, budget and storage there.
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(sweeper.config, sweep_dir / rundir.MULTIRUN_FILE)
    if sweeper.storage:
        prepare_storage(str(sweeper.storage))
        done, asked = resume_study(str(sweeper.storage), sweeper.study_name)
        sweeper.n_trials = max(0, budget - done)
        if asked and hasattr(sweeper.sampler, "reseed_rng"):
            # A seeded sampler starts its random numbers afresh in each session: continuing
            # a study, it would suggest its first trials again.
            sweeper.sampler.reseed_rng()
        log.info("tuning: %d of %d trials done, %d to go", done, budget, sweeper.n_trials)
    launch = sweeper.launcher.launch  # replaced while the sweep runs (see rnn_lab.third_party)

    def launch_unless_stopped(job_overrides, initial_job_idx):
        if stop_requested(sweep_dir):
            return [skipped_job(o) for o in job_overrides]
        return [job_result(r) for r in launch(job_overrides, initial_job_idx=initial_job_idx)]

    sweeper.launcher.launch = launch_unless_stopped
    try:
        result = original(sweeper, arguments)
    except ValueError as e:
        # Stopped before any trial completed: nothing to call best, and nothing is wrong.
        if not (stop_requested(sweep_dir) and "No trials are completed yet" in str(e)):
            raise
        log.warning("tuning: stopped before any trial completed")
        result = None
    finally:
        sweeper.launcher.launch = launch
    if sweeper.storage:
        _record_budget(str(sweeper.storage), sweeper.study_name, budget)
    return result


class TuningCallback(Callback):
    """Makes Hydra's Optuna sweeper resumable with a total budget (see the module doc).

    Registered by a tuning study under ``hydra.callbacks``; its hooks run in the launching
    process, where the sweeper runs. Without the Optuna sweeper it does nothing.
    """

    def __init__(self) -> None:
        self._undo: list = []

    def __getstate__(self) -> dict:
        return {}  # nothing of it is needed in a job process

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not is_optuna_sweep(config):
            return
        self._undo.append(third_party.wrap("optuna_sweeper.sweep", _tuning_sweep, missing_ok=False))
        atexit.register(self._restore)
        self._undo.append(lambda: atexit.unregister(self._restore))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._restore()

    def _restore(self) -> None:
        for undo in reversed(self._undo):
            with contextlib.suppress(Exception):
                undo()
        self._undo.clear()
