"""The stacked launcher's work (imported when a sweep launches, not when Hydra scans plugins).

In the launching process: every job's config is the one the sweeper composed to validate the
batch (``load_sweep_config``; composed anew if there is none), its settings read, and the jobs
grouped by
:func:`rnn_lab.run.stacked.group_key`. A group is cut into stacks ("units") so that every
worker has work; a unit of one job runs alone through Hydra's ``run_job`` and the task
function, exactly as ``launcher=joblib`` runs it. The units go to ``n_jobs`` loky workers
(biggest first).

In a worker, a stacked unit does for each of its jobs what ``run_job`` does (the job's
``hydra.runtime.output_dir``, its ``.hydra/`` files, its logging into ``train.log``, the
callbacks' ``on_job_start`` / ``on_job_end``, a JobReturn with the task function's value),
and what the task function does (:func:`rnn_lab.app.main.prepare` and
:func:`rnn_lab.app.main.finish`: checks, conflicts, failures, analysis), with the training
of all its arms in one :func:`rnn_lab.run.stacked.train_group`. While the stack trains, each
job's ``train.log`` receives the lines of its own arm (and the stack's common lines).

Order of the callbacks in a unit: a job that ends before training (skipped, refused, failed
config) gets its ``on_job_start`` and ``on_job_end`` at once; the arms that train get theirs
around the training, ended in reverse order (the last one started ends first, as the
callbacks of a basic-launcher sweep expect when they look at the job that just ran).
"""

from __future__ import annotations

import copy
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import (
    JobReturn,
    JobRuntime,
    JobStatus,
    configure_log,
    env_override,
    filter_overrides,
    run_job,
    setup_globals,
)
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from rnn_lab.third_party import resolve

# Hydra's private helpers run_job uses, for a stacked job's files and logs as run_job makes them
# (their versions: rnn_lab.third_party).
_save_config = resolve("hydra.save_config")
_flush_loggers = resolve("hydra.flush_loggers")

log = logging.getLogger(__name__)

RNN_LAB_TASK_MODULE = "rnn_lab.app.main"


# --------------------------------------------------------------------------------------
# The launching process
# --------------------------------------------------------------------------------------


def launch(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int):
    from joblib import Parallel, delayed, effective_n_jobs

    setup_globals()
    config, context = launcher.config, launcher.hydra_context
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    loader = context.config_loader
    forget_sweep_configs(loader)  # the wrapper is not sent to the workers
    configs = []
    for i, overrides in enumerate(job_overrides):
        idx = initial_job_idx + i
        cfg = _sweep_config(loader, config, overrides)
        with open_dict(cfg):
            cfg.hydra.job.id = f"{cfg.hydra.job.name}_{idx}"
            cfg.hydra.job.num = idx
        configs.append(cfg)
    workers = max(1, int(effective_n_jobs(launcher.n_jobs)))
    stackable = _is_rnn_lab(launcher.task_function)
    keyed = [_group_key_and_work(cfg) if stackable else (None, 1.0) for cfg in configs]
    keys, work = [k for k, _ in keyed], [w for _, w in keyed]
    units = plan_units(keys, workers, launcher.max_arms, work)
    log.info(
        "Stacked launcher: %d jobs in %d units (%s) on %d workers, sweep output dir: %s",
        *(len(configs), len(units), ", ".join(str(len(u)) for u in units), workers, sweep_dir),
    )
    for unit in units:
        for i in unit:
            lst = " ".join(filter_overrides(job_overrides[i]))
            note = f" (a stack of {len(unit)})" if len(unit) > 1 else ""
            log.info("\t#%d : %s%s", initial_job_idx + i, lst, note)
    _SWEEP_CONFIGS.clear()
    state = Singleton.get_state()
    task_function = launcher.task_function
    try:
        done = Parallel(n_jobs=workers, backend="loky", prefer="processes")(
            delayed(run_unit)([(i, configs[i]) for i in unit], context, task_function, state)
            for unit in units
        )
    finally:
        remember_sweep_configs(loader)  # for the sweeper's next batch (Optuna asks in batches)
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    returns: dict[int, JobReturn] = {i: ret for unit in done for i, ret in unit}
    return [returns[i] for i in range(len(configs))]


# The configs the sweeper composed to validate the batch, by the job's overrides (with the
# master config they came from): Hydra's sweepers (basic, Optuna) compose every job's config in
# validate_batch_is_legal and throw it away, then the launcher would compose it again, ~0.2 s a
# job, one after another before any work starts (12 s for a 60-job study). The same call gives
# the same config, so the launcher takes the sweeper's.
_SWEEP_CONFIGS: dict[tuple[str, ...], tuple[DictConfig, DictConfig]] = {}


def remember_sweep_configs(loader) -> None:
    """From now on, the configs this config loader composes for a sweep are kept for the
    launcher (an instance attribute over the method; :func:`forget_sweep_configs` undoes it)."""
    if "load_sweep_config" in vars(loader):
        return
    load = loader.load_sweep_config

    def load_and_remember(master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        cfg = load(master_config, sweep_overrides)
        _SWEEP_CONFIGS[tuple(sweep_overrides)] = (master_config, cfg)
        return cfg

    loader.load_sweep_config = load_and_remember


def forget_sweep_configs(loader) -> None:
    vars(loader).pop("load_sweep_config", None)


def _sweep_config(loader, master_config: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """The job's config: the one the sweeper composed for the same master config and
    overrides, else a new one."""
    kept = _SWEEP_CONFIGS.pop(tuple(overrides), None)
    if kept is not None and kept[0] is master_config:
        return kept[1]
    return loader.load_sweep_config(master_config, list(overrides))


def _is_rnn_lab(task_function) -> bool:
    """Stacking needs rnn_lab's task function (any other runs every job alone)."""
    module = getattr(task_function, "__module__", "")
    return module == RNN_LAB_TASK_MODULE


def _group_key_and_work(cfg: DictConfig) -> tuple[str | None, float]:
    """The job's group key (None: it runs alone, e.g. when its config does not even make
    settings: the task function then records why, as for any job) and its work estimate."""
    from rnn_lab.app.schema import settings_from_config
    from rnn_lab.run.stacked import group_key, work_estimate

    previous = HydraConfig.instance().cfg
    try:
        HydraConfig.instance().set_config(cfg)
        settings = settings_from_config(cfg)
        return group_key(settings), work_estimate(settings)
    except Exception:
        return None, 1.0
    finally:
        HydraConfig.instance().cfg = previous


# What one arm of a stack of K costs, relative to the same run alone: a part that stacking
# cannot share (the arm's own matmul flops, activations, per-arm recording) and a part it does
# (NumPy's per-call overhead, paid once per stack). Fitted to this machine's sweeps of 20,000
# steps (benchmarks/bench_launchers.py --stacked): 0.64-0.68 at K=5, 0.47-0.54 at K=18,
# 0.45-0.46 at K=30 -> roughly 0.5 + 0.5 / K.
# Only the plan uses it (which stacks to split so that every worker ends at about the same
# time); the results never depend on it.
STACK_SHARED_FRACTION = 0.5


def stack_cost(arm_work: float, arms: int) -> float:
    """The modelled wall time of a stack of `arms` arms of `arm_work` each."""
    share = 1.0 - STACK_SHARED_FRACTION
    return arm_work * arms * (STACK_SHARED_FRACTION + share / arms)


def makespan(costs: Sequence[float], workers: int) -> float:
    """When the last worker ends if the units, biggest first, go to whichever worker is free
    first (what joblib does with units handed over in that order)."""
    loads = [0.0] * max(1, workers)
    for c in sorted(costs, reverse=True):
        i = loads.index(min(loads))
        loads[i] += c
    return max(loads)


def plan_units(
    keys: list[str | None],
    workers: int,
    max_arms: int = 0,
    work: Sequence[float] | None = None,
) -> list[list[int]]:
    """Jobs (by position) in units, the biggest first: a job without a group (or alone in its
    group) on its own, the jobs of one group key in stacks.

    A group starts as one stack (pieces of at most max_arms when > 0). Then, while it shortens
    the sweep by 3% or more, one stack is cut in two: the cut (which stack, how many arms go)
    that most lowers the modelled end of the last worker (:func:`makespan` over
    :func:`stack_cost`, with each arm's ``work[i]``, e.g. steps x seq_len x H (H + 64): a
    seq_len=50 run is 10x a seq_len=5 one). So three equal groups on two workers become four
    stacks that end together, and a group whose arms are 20x the others' (hidden_size=128
    next to 16) is cut so that its pieces balance the rest, instead of one worker training it
    while the other waits."""
    arm_work = [1.0] * len(keys) if work is None else [float(w) for w in work]
    groups: dict[str, list[int]] = {}
    units: list[list[int]] = []
    for i, key in enumerate(keys):
        if key is None:
            units.append([i])
        else:
            groups.setdefault(key, []).append(i)
    for members in groups.values():
        pieces = math.ceil(len(members) / max_arms) if max_arms > 0 else 1
        size, extra = divmod(len(members), pieces)
        start = 0
        for p in range(pieces):
            stop = start + size + (1 if p < extra else 0)
            units.append(members[start:stop])
            start = stop

    def cost(unit: list[int]) -> float:
        return stack_cost(max(arm_work[i] for i in unit), len(unit))

    costs = [cost(u) for u in units]
    best = makespan(costs, workers)
    while True:
        choice = None
        for j, unit in enumerate(units):
            others = costs[:j] + costs[j + 1 :]
            for k in range(1, len(unit) // 2 + 1):
                a, b = unit[:-k], unit[-k:]
                span = makespan([*others, cost(a), cost(b)], workers)
                if span < best * 0.97:  # under 3%: within the cost model's error
                    best, choice = span, (j, a, b)
        if choice is None:
            break
        j, a, b = choice
        units[j : j + 1] = [a, b]
        costs[j : j + 1] = [cost(a), cost(b)]
    order = sorted(range(len(units)), key=lambda j: (costs[j], len(units[j])), reverse=True)
    return [units[j] for j in order]


# --------------------------------------------------------------------------------------
# A worker
# --------------------------------------------------------------------------------------


def run_unit(jobs: list[tuple[int, DictConfig]], context, task_function, state) -> list:
    """Run one unit in this process: [(position, JobReturn)] for its jobs."""
    setup_globals()
    Singleton.set_state(state)
    if len(jobs) == 1:
        i, cfg = jobs[0]
        HydraConfig.instance().set_config(cfg)
        ret = run_job(
            hydra_context=context,
            task_function=task_function,
            config=cfg,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
        return [(i, ret)]
    return _run_stacked(jobs, context, task_function)


@dataclass
class _Job:
    """One job of a stacked unit, from its config to its JobReturn."""

    position: int
    config: DictConfig
    task_cfg: DictConfig | None = None
    ret: JobReturn = field(default_factory=JobReturn)
    run_dir: Path | None = None
    log_files: list = field(default_factory=list)  # (path, encoding, formatter, level)
    prepared: Any = None  # rnn_lab.app.main.PreparedJob when it trains


def _run_stacked(jobs, context, task_function) -> list:
    from rnn_lab.app import main
    from rnn_lab.run.stacked import train_group

    previous = HydraConfig.instance().cfg
    units = [_Job(i, cfg) for i, cfg in jobs]
    arms: list[_Job] = []
    try:
        for job in units:
            _begin(job)
            with _as_job(job), _arm(job):
                value = _call(job, main.prepare)
            if isinstance(value, main.PreparedJob):
                job.prepared = value
                arms.append(job)
            else:
                _complete(job, value, context, task_function, started=False)
        if not arms:
            return [(job.position, job.ret) for job in units]
        for job in arms:
            with _as_job(job):
                context.callbacks.on_job_start(config=job.config, task_function=task_function)
        handlers = _arm_log_handlers(arms)
        try:
            outcomes = _train(arms, train_group)
            for job, outcome in reversed(list(zip(arms, outcomes))):
                with _as_job(job), _arm(job):
                    value = _call(job, lambda _cfg, j=job, o=outcome: main.finish(j.prepared, o))
                _complete(job, value, context, task_function, started=True)
        finally:
            _remove_handlers(handlers)
    finally:
        HydraConfig.instance().cfg = previous
    return [(job.position, job.ret) for job in units]


def _train(arms: list[_Job], train_group) -> list:
    """Each arm's outcome: its summary, or the exception that ended it (never raised)."""
    with env_override(arms[0].ret.hydra_cfg.hydra.job.env_set):
        try:
            jobs = [(a.prepared.settings, a.prepared.run_dir) for a in arms]
            return train_group(jobs, task=arms[0].prepared.task)
        except Exception as e:  # a stack that cannot even start: every arm failed with it
            log.exception("the stack of %d arms failed", len(arms))
            return [e] * len(arms)


class _Failed:
    """What a step of the task function raised (the job's JobReturn then says FAILED)."""

    def __init__(self, error: Exception):
        self.error = error


def _call(job: _Job, fn):
    """fn(task_cfg) as run_job calls the task function: an exception fails only this job."""
    try:
        with env_override(job.ret.hydra_cfg.hydra.job.env_set):
            return fn(job.task_cfg)
    except Exception as e:
        log.exception("job %s failed", job.run_dir)
        return _Failed(e)


def _begin(job: _Job) -> None:
    """run_job's start for one job: its output dir, JobReturn, logging and .hydra/ files."""
    from rnn_lab.run import rundir

    cfg = job.config
    HydraConfig.instance().set_config(cfg)
    output_dir = str(OmegaConf.select(cfg, "hydra.sweep.dir"))
    output_dir = os.path.join(output_dir, str(OmegaConf.select(cfg, "hydra.sweep.subdir")))
    with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
        cfg.hydra.runtime.output_dir = os.path.abspath(output_dir)
    HydraConfig.instance().set_config(cfg)
    job.run_dir = Path(cfg.hydra.runtime.output_dir)
    task_cfg = copy.deepcopy(cfg)
    with read_write(task_cfg), open_dict(task_cfg):
        del task_cfg["hydra"]
    job.task_cfg = task_cfg
    ret = job.ret
    ret.cfg = task_cfg
    ret.hydra_cfg = copy.deepcopy(HydraConfig.instance().cfg)
    ret.overrides = OmegaConf.to_container(cfg.hydra.overrides.task)
    job.run_dir.mkdir(parents=True, exist_ok=True)
    ret.working_dir = os.getcwd()  # rnn_lab never changes directory (hydra.job.chdir=false)
    configure_log(cfg.hydra.job_logging, cfg.hydra.verbose)
    job.log_files = _file_handlers()
    if cfg.hydra.output_subdir is not None:
        hydra_dir = job.run_dir / str(cfg.hydra.output_subdir)
        _save_config(task_cfg, rundir.HYDRA_CONFIG_FILE, hydra_dir)
        _save_config(ret.hydra_cfg, rundir.HYDRA_HYDRA_FILE, hydra_dir)
        _save_config(cfg.hydra.overrides.task, rundir.HYDRA_OVERRIDES_FILE, hydra_dir)


def _complete(job: _Job, value, context, task_function, started: bool) -> None:
    """The job's JobReturn and its callbacks' on_job_end (after on_job_start when the job did
    not train: it ended before training)."""
    from rnn_lab.app.tracking import log_job, logger_options

    ret = job.ret
    if isinstance(value, _Failed):
        ret.return_value, ret.status = value.error, JobStatus.FAILED
    else:
        ret.return_value, ret.status = value, JobStatus.COMPLETED
    with _as_job(job), _arm(job):
        if logger_options(job.task_cfg) is not None:  # logger=mlflow, as main.run's @tracked
            log_job(job.task_cfg)
        ret.task_name = JobRuntime.instance().get("name")
        _flush_loggers()
        if not started:
            context.callbacks.on_job_start(config=job.config, task_function=task_function)
        context.callbacks.on_job_end(config=job.config, job_return=ret)


class _as_job:
    """HydraConfig set to the job's config for the block (the task function reads it)."""

    def __init__(self, job: _Job):
        self.cfg = job.config

    def __enter__(self):
        HydraConfig.instance().set_config(self.cfg)

    def __exit__(self, *exc):
        return False


def _arm(job: _Job):
    from rnn_lab.run.stacked import arm_context

    return arm_context(job.run_dir)


# ---- each arm's lines into its own train.log ---------------------------------------------


def _file_handlers() -> list[tuple]:
    """The log files Hydra's job logging just opened for a job: (path, encoding, formatter,
    level) of each FileHandler on the root logger."""
    out = []
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.FileHandler):
            out.append((h.baseFilename, h.encoding, h.formatter, h.level))
    return out


def _arm_log_handlers(arms: list[_Job]) -> list[logging.Handler]:
    """While the stack trains, each job's log file takes its arm's lines (and the stack's
    own): the root's file handlers (the last job's) give way to one filtered handler per log
    file of every arm, appending to what Hydra's job logging started."""
    from rnn_lab.run.stacked import ArmLogFilter

    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, logging.FileHandler):
            root.removeHandler(h)
            h.close()
    added = []
    for job in arms:
        for path, encoding, formatter, level in job.log_files:
            h = logging.FileHandler(path, mode="a", encoding=encoding)
            h.setFormatter(formatter)
            h.setLevel(level)
            h.addFilter(ArmLogFilter(job.run_dir))
            root.addHandler(h)
            added.append(h)
    return added


def _remove_handlers(handlers: list[logging.Handler]) -> None:
    root = logging.getLogger()
    for h in handlers:
        root.removeHandler(h)
        h.close()
