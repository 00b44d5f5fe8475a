"""The Ray launcher's work in the launching process (see cluster_launchers.py).

As Hydra's Ray launcher: ``ray.init`` with ``hydra.launcher.ray.init``, one Ray task per job
with ``hydra.launcher.ray.remote`` options, the results in order. Different where a cluster
needs it: the arguments that only start a local Ray are left out when ``init.address`` names an
existing cluster; each job's sweep folder is absolute; a job Ray could not finish (its retries
used up) is a lost job, not an exception that ends the sweep without its report.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import ray
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, setup_globals
from omegaconf import DictConfig, OmegaConf, open_dict

from rnn_lab.third_party import resolve

from .cluster_launchers import lost_job

log = logging.getLogger(__name__)

# ray.init arguments that only mean something when ray.init starts a local Ray; with an
# address, ray.init refuses most of them ("When connecting to an existing cluster, ...") and
# _temp_dir would point the driver away from the cluster's own session files.
LOCAL_ONLY = (
    "num_cpus",
    "num_gpus",
    "resources",
    "labels",
    "object_store_memory",
    "include_dashboard",
    "_temp_dir",
    "_system_config",
)
# A local Ray's object store (Hydra's Ray launcher's own default): the jobs pass only configs.
LOCAL_OBJECT_STORE_BYTES = 78643200


def init_arguments(init: DictConfig) -> DictConfig:
    """ray.init's arguments: for an existing cluster (``address`` set) without LOCAL_ONLY ones
    (a value the user gave is dropped with a warning: the cluster decides), for a local Ray
    with a small object store unless one was given."""
    args = OmegaConf.to_container(init, resolve=True) or {}
    if not args.get("address"):
        args.setdefault("object_store_memory", LOCAL_OBJECT_STORE_BYTES)
        return OmegaConf.create(args)
    dropped = [k for k in LOCAL_ONLY if args.pop(k, None) is not None]
    if dropped:
        log.info(
            "Ray cluster at %s: leaving out %s (set when a Ray is started, not joined)",
            args["address"],
            ", ".join(dropped),
        )
    return OmegaConf.create(args)


def launch(launcher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int):
    setup_globals()
    config = launcher.config
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    # Absolute: a worker on another node (or started by `ray start` elsewhere) has its own cwd.
    sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    log.info("Ray launcher: %d jobs, sweep output dir: %s", len(job_overrides), sweep_dir)
    start_ray = resolve("ray_launcher.start_ray")  # (patched by SweepCallback)
    start_ray(init_arguments(launcher.ray_cfg.init))
    runs = []
    for i, overrides in enumerate(job_overrides):
        idx = initial_job_idx + i
        log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
        cfg = launcher.hydra_context.config_loader.load_sweep_config(config, list(overrides))
        with open_dict(cfg):
            cfg.hydra.job.id = f"job_id_for_{idx}"  # as Hydra's Ray launcher names it
            cfg.hydra.job.num = idx
            cfg.hydra.sweep.dir = str(sweep_dir)
            run = resolve("ray_launcher.launch_job_on_ray")(
                launcher.hydra_context,
                launcher.ray_cfg.remote,
                cfg,
                launcher.task_function,
                Singleton.get_state(),
            )
        runs.append((run, overrides))
    return [_job_return(run, overrides) for run, overrides in runs]


def _job_return(run, overrides: Sequence[str]) -> JobReturn:
    try:
        return ray.get(run)
    except ray.exceptions.RayError as e:  # the task's retries used up (workers or nodes lost)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return lost_job(overrides, f"Ray could not finish it ({type(e).__name__}: {first})")
