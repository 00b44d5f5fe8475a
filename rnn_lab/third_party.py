"""What rnn_lab takes from other libraries beyond their public API, in one place.

Each entry of :data:`RELIANCES` is a patch (a library's function replaced for a while) or a
private API (an underscore name or module, or a copy of a library's internal steps), with the
packages and version ranges it was written and checked for, and who uses it. The code reaches
them only through this module (:func:`resolve`, :func:`wrap` and the Optuna helpers below), so
the list is complete: tests/test_third_party.py fails when an installed version leaves an
entry's range (read with importlib.metadata), when a listed name is gone, or when a module
outside this one names a private attribute or module of another library. Checked on numpy
2.4.6, hydra-core 1.3.8, joblib 1.5.3, submitit 1.5.4, hydra-ray-launcher 1.2.2,
hydra-optuna-sweeper 1.3.0, optuna 2.10.1, SQLAlchemy 2.1.9.

A root module (not in app/) because the engine needs one entry and core imports no app; it
imports no third-party package until an entry is used.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Reliance:
    """One thing taken from a library beyond its public API."""

    kind: str  # "patch" (replaced for a while), "private" (read or called), "copy" (mirrored)
    requires: tuple[tuple[str, str], ...]  # (distribution, PEP 440 range) it was written for
    module: str  # the module that holds it
    attribute: str  # dotted path inside the module ("" = the module itself)
    used_by: str  # where rnn_lab uses it
    why: str  # what for, and what happens without it

    @property
    def target(self) -> str:
        return f"{self.module}.{self.attribute}" if self.attribute else self.module


_HYDRA = (("hydra-core", ">=1.3.2,<1.4"),)
_JOBLIB = (("joblib", ">=1.5,<1.6"),)

RELIANCES: dict[str, Reliance] = {
    "numpy.undispatched_dot": Reliance(
        "private", (("numpy", ">=1.26,<2.5"),), "numpy", "dot._implementation",
        "rnn_lab/core/engine.py (_dot; core/gated_*.py and the stacked engine through it)",
        "np.dot without its __array_function__ dispatch: the same C function, ~0.3 us less "
        "per call, ~5% of a step at the walkthrough's sizes; absent, np.dot itself",
    ),
    "hydra.split_arguments": Reliance(
        "private", _HYDRA, "hydra._internal.core_plugins.basic_sweeper",
        "BasicSweeper.split_arguments", "rnn_lab/app/progress.py (planned_jobs)",
        "the basic sweeper's own expansion of a grid, to count a sweep's jobs for the progress "
        "line; absent, the count is unknown",
    ),
    "hydra.save_config": Reliance(
        "private", _HYDRA, "hydra.core.utils", "_save_config",
        "hydra_plugins/rnn_lab_launcher/_core.py (_begin)",
        "writes a stacked job's .hydra/ files exactly as run_job does",
    ),
    "hydra.flush_loggers": Reliance(
        "private", _HYDRA, "hydra.core.utils", "_flush_loggers",
        "hydra_plugins/rnn_lab_launcher/_core.py (_complete)",
        "flushes a stacked job's log handlers as run_job does",
    ),
    "hydra.job_return_value": Reliance(
        "private", _HYDRA, "hydra.core.utils", "JobReturn._return_value",
        "rnn_lab/app/progress.py (job_end, through job_return_value)",
        "a job's value or exception without raising it (JobReturn.return_value re-raises a "
        "failed job's exception)",
    ),
    "hydra.run_job": Reliance(
        "copy", _HYDRA, "hydra.core.utils", "run_job",
        "hydra_plugins/rnn_lab_launcher/_core.py (_begin, _complete)",
        "the stacked launcher does run_job's steps for each arm of a stack (output dir, "
        "JobReturn fields, logging, .hydra/ files, callbacks), as hydra-core 1.3 does them",
    ),
    "loky.fork_exec": Reliance(
        "patch", _JOBLIB, "joblib.externals.loky.backend.fork_exec", "fork_exec",
        "rnn_lab/app/callbacks.py (launcher=joblib and stacked)",
        "loky workers start with SIGINT blocked: Ctrl-C while one boots killed the pool",
    ),
    "loky.executor": Reliance(
        "private", _JOBLIB, "joblib.externals.loky.reusable_executor", "_executor",
        "rnn_lab/app/callbacks.py (_shutdown_pools)",
        "shuts joblib's reusable loky executor down at the sweep's end (its idle workers "
        "would live 300 s more); read only when joblib has imported it",
    ),
    "ray_launcher.start_ray": Reliance(
        "patch", (("hydra-ray-launcher", ">=1.2,<1.3"),),
        "hydra_plugins.hydra_ray_launcher._core", "start_ray",
        "rnn_lab/app/callbacks.py (launcher=ray; patched), hydra_plugins/rnn_lab_launcher/"
        "_ray.py (launch: called)",
        "puts the sweep's SIGINT/SIGTERM handlers back after ray.init() replaced them; "
        "rnn_lab's Ray launcher starts or joins Ray through it",
    ),
    "ray_launcher.launch_job_on_ray": Reliance(
        "private", (("hydra-ray-launcher", ">=1.2,<1.3"),),
        "hydra_plugins.hydra_ray_launcher._launcher_util", "launch_job_on_ray",
        "hydra_plugins/rnn_lab_launcher/_ray.py (launch)",
        "sends one job to Ray as Hydra's Ray launcher does; rnn_lab's Ray launcher keeps the "
        "rest of it (joining an existing cluster, absolute sweep folder, lost jobs recorded)",
    ),
    "submitit.slurm_info_watcher": Reliance(
        "private", (("submitit", ">=1.5,<1.6"),), "submitit.slurm.slurm",
        "SlurmInfoWatcher._make_command",
        "hydra_plugins/rnn_lab_launcher/_slurm.py (SqueueWatcher: overrides _make_command, "
        "reads _registered and _finished)",
        "watches SLURM jobs with squeue where the cluster keeps no accounting (sacct fails "
        "there and submitit's own watcher never sees a cancelled job end)",
    ),
    "submitit.start_controller": Reliance(
        "patch", (("submitit", ">=1.5,<1.6"),), "submitit.local.local", "start_controller",
        "rnn_lab/app/callbacks.py (launcher=submitit_local)",
        "job controllers start with SIGINT blocked: Ctrl-C killed them with a traceback and "
        "SIGKILLed their jobs",
    ),
    "optuna_sweeper.sweep": Reliance(
        "patch", (("hydra-optuna-sweeper", ">=1.3,<1.4"),),
        "hydra_plugins.hydra_optuna_sweeper._impl", "OptunaSweeperImpl.sweep",
        "rnn_lab/app/tuning.py (TuningCallback, _tuning_sweep)",
        "a total trial budget, resumable trials and a clean stop; reads the sweeper's "
        "sweep_dir, n_trials, storage, study_name, sampler, config and replaces its "
        "launcher.launch while the sweep runs",
    ),
    "optuna.schema_stamp": Reliance(
        "private", (("optuna", ">=2.10,<2.11"), ("sqlalchemy", ">=2.0,<2.2")),
        "optuna.storages._rdb.storage", "_VersionManager._create_alembic_script",
        "rnn_lab/app/tuning.py (prepare_storage, through optuna2_prepare_storage)",
        "Optuna 2 writes its schema version in a transaction SQLAlchemy 2 never commits: the "
        "tables (optuna.storages._rdb.models) and the alembic stamp are made here first",
    ),
    "optuna.trial_storage": Reliance(
        "private", (("optuna", ">=2.10,<4"),), "optuna.study", "Study",
        "rnn_lab/app/tuning.py (resume_study, through optuna_fail_trial)",
        "a trial left RUNNING by a killed sweep is set FAIL through Study._storage and "
        "FrozenTrial._trial_id (Optuna has no public call for another process's trial)",
    ),
}  # fmt: skip

_MISSING = object()


def _walk(obj, dotted: str):
    for part in dotted.split(".") if dotted else ():
        obj = getattr(obj, part)
    return obj


def resolve(key: str, default=_MISSING, *, imported_only: bool = False):
    """The object entry ``key`` names (its module imported first, unless ``imported_only``:
    then only if some other code imported it). Absent: ``default``, or the error."""
    entry = RELIANCES[key]
    try:
        if imported_only:
            module = sys.modules.get(entry.module)
            if module is None:
                raise ImportError(f"{entry.module} is not imported")
        else:
            module = importlib.import_module(entry.module)
        return _walk(module, entry.attribute)
    except (ImportError, AttributeError):
        if default is _MISSING:
            raise
        return default


def wrap(key: str, wrapper: Callable, missing_ok: bool = True) -> Callable[[], None]:
    """Until the returned undo is called, entry ``key``'s function calls
    ``wrapper(original, *args, **kwargs)`` instead (a method gets its instance as the first
    argument). Without the library or the name: nothing changes (or, unless ``missing_ok``,
    the error), and the undo does nothing."""
    entry = RELIANCES[key]
    if entry.kind != "patch":
        raise ValueError(f"{key}: a {entry.kind} entry, not a patch")
    owner_path, _, name = entry.attribute.rpartition(".")
    try:
        owner = _walk(importlib.import_module(entry.module), owner_path)
        original = getattr(owner, name)
    except (ImportError, AttributeError):
        if not missing_ok:
            raise
        return lambda: None

    @functools.wraps(original)
    def patched(*args, **kwargs):
        return wrapper(original, *args, **kwargs)

    setattr(owner, name, patched)
    return lambda: setattr(owner, name, original)


def job_return_value(job_return, default=None):
    """What a Hydra job returned, or its exception when it failed, without raising it."""
    return getattr(job_return, "_return_value", default)


# ---- Optuna's private storage calls (the "optuna.*" entries) ------------------------------


def optuna2_prepare_storage(url: str) -> None:
    """A storage Optuna 2 can open under SQLAlchemy 2: its tables and its schema version
    (alembic stamp), committed. Other pairs initialise their storage themselves."""
    import optuna
    import sqlalchemy

    if int(optuna.__version__.split(".")[0]) >= 3 or int(sqlalchemy.__version__[0]) < 2:
        return
    from alembic.migration import MigrationContext
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _VersionManager

    engine = sqlalchemy.create_engine(url)
    try:
        models.BaseModel.metadata.create_all(engine)
        with engine.begin() as connection:
            context = MigrationContext.configure(connection)
            if context.get_current_revision() is None:
                versions = object.__new__(_VersionManager)  # for its migration scripts only
                versions.url = url
                script = versions._create_alembic_script()
                context.stamp(script, script.get_current_head())
    finally:
        engine.dispose()


def optuna_fail_trial(study, trial) -> None:
    """Set a trial of ``study`` (a FrozenTrial) to FAIL, as a killed sweep's trial."""
    from optuna.trial import TrialState

    storage = study._storage
    if hasattr(storage, "set_trial_state_values"):  # Optuna >= 3
        storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    else:
        storage.set_trial_state(trial._trial_id, TrialState.FAIL)
