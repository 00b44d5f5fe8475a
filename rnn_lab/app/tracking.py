"""MLflow tracking (``logger=mlflow``): runs and sweeps in an MLflow store.

Each run becomes an MLflow run when it ends (ok, diverged, failed or interrupted), logged by
:func:`tracked`, the wrapper around the task function: its flattened config as params, its
history rows as metrics over steps, the numeric fields of summary.json (final metrics and the
analysis scalars) at its last step, its status, study, arm and seed as tags, and its plots,
summary.json, history.csv (and analysis.json, settings.json) as artifacts.

A sweep is a parent run with the jobs as children. :class:`TrackedReportCallback` (registered
by conf/logger/mlflow.yaml in the report callback's place) opens the parent in the launching
process, after the sweep folder is locked, and writes its id to
``<sweep>/.rnn_lab/mlflow.json``; every job reads it there, whichever process or host it runs
in. When the sweep ends the report is built, then logged on the parent (report.md, tables,
plots) and the parent is closed (KILLED when the sweep was stopped).

The store is ``logger.tracking_uri``, or by default a SQLite database in the sweep folder
(``sqlite:///<sweep>/mlflow.db``; a single run: ``<run dir>/mlflow.db``), whose artifacts go to
``.rnn_lab/mlartifacts`` beside it. Re-running a sweep reuses its parent, and a run whose
summary.json has not changed since it was logged is not logged again (a changed one replaces
its earlier MLflow run).

Tracking never fails a run: every error is one warning line and the run's own files are
complete either way. mlflow is imported only when ``logger=mlflow`` (the ``tracking`` extra).
"""

from __future__ import annotations

import atexit
import contextlib
import csv
import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from rnn_lab.app.callbacks import ReportCallback
from rnn_lab.app.sweep import stop_requested
from rnn_lab.run import rundir

log = logging.getLogger(__name__)

MLFLOW = "mlflow"
DEFAULT_EXPERIMENT = "rnn_lab"
# Our tags (MLflow's own: mlflow.parentRunId, mlflow.runName).
ROLE_TAG = "rnn_lab.role"  # "sweep" (a parent) or "run"
KEY_TAG = "rnn_lab.key"  # a hash of the run or sweep folder's absolute path
FINGERPRINT_TAG = "rnn_lab.summary_sha1"  # the summary.json that was logged
PARENT_TAG = "mlflow.parentRunId"
# rnn_lab status -> MLflow run status
RUN_STATUS = {
    rundir.OK: "FINISHED",
    rundir.DIVERGED: "FAILED",
    rundir.FAILED: "FAILED",
    rundir.INTERRUPTED: "KILLED",
    rundir.RUNNING: "KILLED",
}
# MLflow's per-request limits (log_batch) and value lengths.
MAX_METRICS, MAX_PARAMS, MAX_TAGS = 1000, 100, 100
MAX_PARAM_LEN, MAX_TAG_LEN = 6000, 5000
# A tracking server that does not answer must not hold a job for minutes (MLflow's own
# defaults: 7 retries, 120 s timeout). Set in the environment to change them.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "20"}
# Files of a run logged as artifacts (plots: every *.png of the run folder, under plots/).
RUN_ARTIFACTS = (
    rundir.SUMMARY_FILE,
    rundir.HISTORY_FILE,
    rundir.ANALYSIS_FILE,
    rundir.SETTINGS_FILE,
)
# Files of a sweep folder logged on the parent: the report, its tables, Hydra's records.
SWEEP_ARTIFACT_SUFFIXES = (".md", ".csv", ".yaml")
PLOTS_DIR = "plots"  # the report's plots folder (rnn_lab.study.figures.PLOTS_DIR)


@dataclass(frozen=True)
class Target:
    """Where a run is logged: the store, the experiment, and the sweep's parent run."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str | None = None


# --------------------------------------------------------------------------- config


def logger_options(cfg: DictConfig | dict) -> dict | None:
    """The logger group's keys when the tracker is MLflow, else None."""
    node = OmegaConf.select(cfg, "logger") if isinstance(cfg, DictConfig) else cfg.get("logger")
    if node is None:
        return None
    options = OmegaConf.to_container(node) if isinstance(node, DictConfig) else dict(node)
    return options if options.get("name") == MLFLOW else None


def default_tracking_uri(folder: str | Path) -> str:
    """The SQLite store inside a sweep (or run) folder."""
    return f"sqlite:///{(Path(folder) / rundir.MLFLOW_DB_FILE).absolute()}"


def tracking_uri_for(options: dict, folder: Path) -> str:
    """logger.tracking_uri (a relative SQLite path made absolute: jobs may run elsewhere), or
    the default store in the folder."""
    uri = options.get("tracking_uri")
    if not uri:
        return default_tracking_uri(folder)
    db = sqlite_path(uri)
    return uri if db is None else f"sqlite:///{db.absolute()}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI (relative to the working directory or absolute)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    return Path(uri[len(prefix) :].split("?", 1)[0])


def artifact_location(uri: str) -> str | None:
    """Artifacts of a new experiment: beside a SQLite store, in its .rnn_lab/ (never walked as
    run folders by the collector); a server's own default otherwise."""
    db = sqlite_path(uri)
    if db is None:
        return None
    folder = rundir.sweep_state_dir(db.absolute().parent) / rundir.MLFLOW_ARTIFACTS_DIR
    return folder.as_uri()


def experiment_name(options: dict, study_name: str | None) -> str:
    return options.get("experiment") or study_name or DEFAULT_EXPERIMENT


def path_key(path: str | Path) -> str:
    return hashlib.sha1(str(Path(path).absolute()).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- the client


@functools.lru_cache(maxsize=8)
def client_for(tracking_uri: str):
    """An MlflowClient for the store (one per process and store); quiet migrations."""
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    try:
        from mlflow import MlflowClient  # slow to import: only with logger=mlflow
    except ImportError as e:
        raise ImportError(f"{e}: logger=mlflow needs pip install -e '.[tracking]'") from None

    for name in ("alembic", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.WARNING)
    db = sqlite_path(tracking_uri)
    if db is not None:
        db.absolute().parent.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=tracking_uri)
    client.search_experiments(max_results=1)  # opens (or creates) the store now: fail early
    return client


def experiment_id_for(client, name: str, tracking_uri: str) -> str:
    """The experiment's id, created on first use (a concurrent creator wins the race)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location(tracking_uri))
    except Exception:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _find_runs(client, experiment_id: str, tags: dict[str, str]) -> list:
    where = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    return list(client.search_runs([experiment_id], filter_string=where, max_results=10))


# --------------------------------------------------------------------------- what is logged


def param_text(value: Any) -> str:
    """A config value as a param: YAML spelling for true/false/null, JSON for lists."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, list | tuple | dict):
        text = json.dumps(value, default=str)
    else:
        text = str(value)
    return text[:MAX_PARAM_LEN]


NOT_PARAMS = ("hydra", "logger")  # Hydra's own node; the tracker's (its URI may hold a password)


def flat_params(config: dict, prefix: str = "") -> dict[str, str]:
    """{"init.name": "orthogonal", "lr": "0.01", ...}: every key but Hydra's and the tracker's."""
    out: dict[str, str] = {}
    for key, value in config.items():
        if not prefix and key in NOT_PARAMS:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat_params(value, f"{name}."))
        else:
            out[name] = param_text(value)
    return out


def history_metrics(rows: Iterable[dict], timestamp_ms: int) -> list:
    """Every history column but the step, as a metric at its step."""
    from mlflow.entities import Metric

    out = []
    for row in rows:
        step = int(row["step"])
        for key, value in row.items():
            if key != "step" and isinstance(value, int | float):
                out.append(Metric(key, float(value), timestamp_ms, step))
    return out


def summary_metrics(summary: dict, timestamp_ms: int) -> list:
    """The numeric fields of summary.json (final and analysis metrics) at the last step; logged
    after the history (a later timestamp), so they are each metric's latest value."""
    from mlflow.entities import Metric

    step = int(summary.get("steps_done") or 0)
    return [
        Metric(key, float(value), timestamp_ms, step)
        for key, value in summary.items()
        if isinstance(value, int | float) and key != "signal"
    ]


def _fingerprint(summary: dict) -> str:
    return hashlib.sha1(json.dumps(summary, sort_keys=True, default=str).encode()).hexdigest()


def _chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _log_batch(client, run_id: str, metrics=(), params=None, tags=None) -> None:
    from mlflow.entities import Param, RunTag

    for chunk in _chunks([Param(k, v) for k, v in (params or {}).items()], MAX_PARAMS):
        client.log_batch(run_id, params=chunk)
    for chunk in _chunks([RunTag(k, str(v)) for k, v in (tags or {}).items()], MAX_TAGS):
        client.log_batch(run_id, tags=chunk)
    for chunk in _chunks(list(metrics), MAX_METRICS):
        client.log_batch(run_id, metrics=chunk)


# --------------------------------------------------------------------------- one run


@dataclass
class RunRecord:
    """What a finished job logs: read from its folder once it ended."""

    run_dir: Path
    config: dict
    summary: dict
    name: str  # the MLflow run name: "arm, seed=N" in a sweep, else DATE/TIME of the run folder
    arm: str


def log_run(target: Target, record: RunRecord) -> str | None:
    """Log one run (replacing an earlier MLflow run of the same folder whose summary differs);
    returns its MLflow run id, or None when it was logged already."""
    client = client_for(target.tracking_uri)
    key, fingerprint = path_key(record.run_dir), _fingerprint(record.summary)
    for earlier in _find_runs(client, target.experiment_id, {KEY_TAG: key, ROLE_TAG: "run"}):
        tags = earlier.data.tags
        if tags.get(FINGERPRINT_TAG) == fingerprint and tags.get(PARENT_TAG) == (
            target.parent_run_id
        ):
            return None  # this very run is in the store already (a re-run sweep)
        client.delete_run(earlier.info.run_id)
    summary = record.summary
    study = record.config.get("study") if isinstance(record.config.get("study"), dict) else {}
    tags = {
        "status": summary.get("status"),
        "study": study.get("name") or "",
        "arm": record.arm,
        "seed": record.config.get("seed"),
        "rnn_lab.run_id": summary.get("run_id"),
        "rnn_lab.run_dir": str(record.run_dir.absolute()),
        ROLE_TAG: "run",
        KEY_TAG: key,
        FINGERPRINT_TAG: fingerprint,
    }
    if summary.get("error"):
        tags["error"] = str(summary["error"])[:MAX_TAG_LEN]
    if target.parent_run_id:
        tags[PARENT_TAG] = target.parent_run_id
    run = client.create_run(target.experiment_id, run_name=record.name, tags=tags)
    run_id = run.info.run_id
    now = int(time.time() * 1000)
    history = rundir.read_history_rows(record.run_dir / rundir.HISTORY_FILE)
    metrics = history_metrics(history, now) + summary_metrics(summary, now + 1)
    _log_batch(client, run_id, metrics, params=flat_params(record.config))
    for name in RUN_ARTIFACTS:
        if (record.run_dir / name).is_file():
            client.log_artifact(run_id, str(record.run_dir / name))
    for plot in sorted(record.run_dir.glob(rundir.PLOTS_GLOB)):
        client.log_artifact(run_id, str(plot), artifact_path=PLOTS_DIR)
    client.set_terminated(run_id, status=RUN_STATUS.get(summary.get("status"), "FAILED"))
    return run_id


# --------------------------------------------------------------------------- in a job


def tracked(task: Callable[[DictConfig], float]) -> Callable[[DictConfig], float]:
    """The task function, then (however it ended) its run logged when ``logger=mlflow``."""

    @functools.wraps(task)
    def run_and_log(cfg: DictConfig) -> float:
        try:
            return task(cfg)
        finally:
            if logger_options(cfg) is not None:
                log_job(cfg)

    return run_and_log


def log_job(cfg: DictConfig) -> None:
    """Log the job that just ended; a warning, never an error, when that fails."""
    run_dir = None
    try:
        hydra = HydraConfig.get()
        run_dir = Path(hydra.runtime.output_dir).absolute()
        summary = rundir.read_json_or_none(run_dir / rundir.SUMMARY_FILE)
        if not isinstance(summary, dict):
            return  # nothing ran here (refused before any work, or skipped)
        config = _job_config(cfg, run_dir)
        multirun = hydra.mode == RunMode.MULTIRUN
        sweep_dir = Path(hydra.sweep.dir).absolute() if multirun else None
        target = _job_target(logger_options(cfg) or {}, config, run_dir, sweep_dir)
        if target is None:
            return
        arm = _arm(config, read_sweep_state(sweep_dir).get("arm_keys") if multirun else None)
        if arm is None:  # not a sweep of ours: the job's own overrides name it
            arm = (hydra.job.override_dirname or "defaults").replace(",", ", ")
        name = f"{arm}, seed={config.get('seed')}" if multirun else _relative_name(run_dir, None)
        log_run(target, RunRecord(run_dir, config, summary, name, arm))
    except Exception as e:
        log.warning("MLflow: run %s not logged (%s: %s)", run_dir, type(e).__name__, _short(e))


def _job_config(cfg: DictConfig, run_dir: Path) -> dict:
    """The run's composed config as its folder records it (.hydra/config.yaml: the owner's, also
    for a job refused because the folder holds another run), else the job's own."""
    path = run_dir / rundir.HYDRA_DIR / rundir.HYDRA_CONFIG_FILE
    with contextlib.suppress(OSError, yaml.YAMLError):
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(config, dict):
            return config
    names = [k for k in cfg if k != "hydra"]
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, names), resolve=True)


def _job_target(options: dict, config: dict, run_dir: Path, sweep_dir: Path | None):
    """The sweep's target from its state file, else the run's own (no parent)."""
    if sweep_dir is not None:
        state = read_sweep_state(sweep_dir)
        if state.get("error"):
            return None  # the sweep could not reach the store: said once, by the launcher
        if state.get("tracking_uri") and state.get("experiment_id"):
            return Target(state["tracking_uri"], state["experiment_id"], state.get("parent_run_id"))
    uri = tracking_uri_for(options, sweep_dir or run_dir)
    study = config.get("study") if isinstance(config.get("study"), dict) else {}
    name = experiment_name(options, study.get("name"))
    return Target(uri, experiment_id_for(client_for(uri), name, uri))


def _relative_name(run_dir: Path, sweep_dir: Path | None) -> str:
    if sweep_dir is not None:
        with contextlib.suppress(ValueError):
            return str(run_dir.relative_to(sweep_dir))
    return f"{run_dir.parent.name}/{run_dir.name}"


def _arm(config: dict, arm_keys: list[str] | None) -> str | None:
    """The arm's label ("init=xavier, activation=relu"): the swept keys' values, seed aside."""
    if arm_keys is None:
        return None
    flat = flat_params(config)
    values = {k: flat.get(k, flat.get(f"{k}.name", "?")) for k in arm_keys}  # a group: its option
    return ", ".join(f"{k}={v}" for k, v in values.items()) or "all runs"


def swept_keys(config: DictConfig) -> list[str]:
    """The keys a sweep varies, seed aside: sweeps on the command line and the sweeper's params
    (a study's grid, or an Optuna search space)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sweeper = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
    texts = [f"{k}={v}" for k, v in sweeper.items()]
    texts += list(OmegaConf.select(config, "hydra.overrides.task", default=[]))
    parser, keys = OverridesParser.create(), []
    for text in texts:
        try:
            override = parser.parse_override(text)
        except Exception:  # a spelling the launcher accepted some other way: not an arm key
            continue
        key = override.get_key_element().lstrip("+~")
        if override.is_sweep_override() and key != "seed" and key not in keys:
            keys.append(key)
    return keys


def _short(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:300] + ("..." if len(text) > 300 else "")


# --------------------------------------------------------------------------- a sweep


def sweep_state_file(sweep_dir: str | Path) -> Path:
    return rundir.sweep_state_dir(sweep_dir) / rundir.MLFLOW_STATE_FILE


def read_sweep_state(sweep_dir: str | Path) -> dict:
    try:
        state = rundir.read_json_or_none(sweep_state_file(sweep_dir))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def open_sweep_run(config: DictConfig, sweep_dir: Path) -> Target | None:
    """The sweep's parent run (the one of an earlier session of this folder, running again, or a
    new one), recorded in the sweep folder for its jobs. None (and a warning) when the store
    cannot be used; the jobs then do not try again."""
    state_file = sweep_state_file(sweep_dir)
    try:
        options = logger_options(config) or {}
        uri = tracking_uri_for(options, sweep_dir)
        client = client_for(uri)
        name = experiment_name(options, OmegaConf.select(config, "study.name", default=None))
        experiment_id = experiment_id_for(client, name, uri)
        parent = _parent_run(client, experiment_id, config, sweep_dir)
        target = Target(uri, experiment_id, parent)
        state = {**asdict(target), "arm_keys": swept_keys(config)}
    except Exception as e:
        log.warning("MLflow: this sweep is not tracked (%s: %s)", type(e).__name__, _short(e))
        target, state = None, {"error": f"{type(e).__name__}: {_short(e)}"}
    state_file.parent.mkdir(parents=True, exist_ok=True)
    rundir.atomic_write_json(state_file, state)
    return target


def _parent_run(client, experiment_id: str, config: DictConfig, sweep_dir: Path) -> str:
    key = path_key(sweep_dir)
    earlier = _find_runs(client, experiment_id, {KEY_TAG: key, ROLE_TAG: "sweep"})
    if earlier:
        run_id = earlier[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        return run_id
    study = OmegaConf.select(config, "study.name", default=None)
    tags = {ROLE_TAG: "sweep", KEY_TAG: key, "rnn_lab.sweep_dir": str(sweep_dir)}
    if study:
        tags["study"] = study
    run = client.create_run(experiment_id, run_name=study or sweep_dir.name, tags=tags)
    sweeper = OmegaConf.select(config, "hydra.sweeper", default=None)
    params = {
        "sweeper": str(OmegaConf.select(config, "hydra.sweeper._target_", default="")),
        "overrides": " ".join(OmegaConf.select(config, "hydra.overrides.task", default=[])),
    }
    if sweeper is not None and sweeper.get("params"):
        params.update({f"sweep.{k}": str(v) for k, v in sweeper.params.items()})
    _log_batch(client, run.info.run_id, params=params)
    return run.info.run_id


def close_sweep_run(target: Target, sweep_dir: Path, status: str | None = None) -> None:
    """Log the report, its tables and plots on the parent run and close it."""
    try:
        client = client_for(target.tracking_uri)
        run_id = target.parent_run_id
        for path in sorted(sweep_dir.iterdir()):
            if path.is_file() and path.suffix in SWEEP_ARTIFACT_SUFFIXES:
                client.log_artifact(run_id, str(path))
        if (sweep_dir / PLOTS_DIR).is_dir():
            client.log_artifacts(run_id, str(sweep_dir / PLOTS_DIR), artifact_path=PLOTS_DIR)
        _log_batch(client, run_id, _sweep_metrics(sweep_dir))
        status = status or ("KILLED" if stop_requested(sweep_dir) else "FINISHED")
        client.set_terminated(run_id, status=status)
    except Exception as e:
        log.warning("MLflow: the sweep's parent run not closed (%s: %s)", type(e).__name__, e)


def _sweep_metrics(sweep_dir: Path) -> list:
    """Counts of runs (results.csv) and, for a tuning sweep, the best objective value."""
    from mlflow.entities import Metric

    now, out = int(time.time() * 1000), []
    results = sweep_dir / rundir.RESULTS_CSV
    if results.is_file():
        with results.open(newline="") as f:
            statuses = [row.get("status") for row in csv.DictReader(f)]
        out += [Metric("runs", len(statuses), now, 0)]
        out += [Metric("runs_ok", statuses.count(rundir.OK), now, 0)]
    best = sweep_dir / rundir.OPTUNA_RESULTS_FILE
    with contextlib.suppress(OSError, yaml.YAMLError, TypeError, ValueError):
        value = (yaml.safe_load(best.read_text()) or {}).get("best_value")
        if value is not None:
            out.append(Metric("best_value", float(value), now, 0))
    return out


class TrackedReportCallback(ReportCallback):
    """The report callback, plus the sweep's MLflow parent run around it (logger=mlflow).

    In the report callback's place (conf/logger/mlflow.yaml), so Hydra calls it after the sweep
    callback has locked the folder and, at the end, builds the report before logging it on the
    parent and before the sweep callback lets the folder go.
    """

    def __init__(self) -> None:
        super().__init__()
        self._target: Target | None = None
        self._sweep_dir: Path | None = None

    def __getstate__(self) -> dict:
        return {}  # job processes read the sweep's state file, not this object

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        super().on_multirun_start(config, **kwargs)
        if logger_options(config) is None:
            return
        self._sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
        self._target = open_sweep_run(config, self._sweep_dir)
        if self._target is not None:
            # Hydra skips on_multirun_end when the launcher raises: the parent is closed anyway.
            atexit.register(self._at_exit)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        super().on_multirun_end(config, **kwargs)  # the report first
        if self._target is None:
            return
        atexit.unregister(self._at_exit)
        close_sweep_run(self._target, self._sweep_dir)
        self._target = None

    def _at_exit(self) -> None:
        if self._target is not None:
            stopped = stop_requested(self._sweep_dir)
            close_sweep_run(self._target, self._sweep_dir, "KILLED" if stopped else "FAILED")
            self._target = None
