"""``launcher=stacked``: a sweep's jobs that can share an engine train as one stack.

The launcher composes every job's config (as Hydra's basic and joblib launchers do), groups
the jobs whose runs can share a stacked engine (:func:`rnn_lab.run.stacked.group_key`: same
data, shapes, steps, dtype, optimiser type and schedules), and trains each group in one
process with :func:`rnn_lab.run.stacked.train_group`; the groups (and the jobs that fit no
group, which run alone through the task function as usual) are spread over ``n_jobs`` worker
processes (joblib/loky, as ``launcher=joblib``). Every job's folder gets what a separate job
gets: ``.hydra/``, ``train.log`` with its own lines, its run directory, analysis and plots,
and the job's callbacks; each job returns what the task function returns.
"""

# No `from __future__ import annotations`: Hydra's plugin scan executes this module outside
# sys.modules, where dataclasses cannot resolve string annotations.
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

log = logging.getLogger(__name__)


@dataclass
class StackedLauncherConf:
    _target_: str = "hydra_plugins.rnn_lab_launcher.stacked_launcher.StackedLauncher"
    # Worker processes (groups and lone jobs spread over them); -1 = all cores.
    n_jobs: int = -1
    # Most arms in one stack; 0 = no limit (a group is still split to keep every worker busy).
    max_arms: int = 0


ConfigStore.instance().store(
    group="hydra/launcher", name="stacked", node=StackedLauncherConf, provider="rnn_lab"
)


class StackedLauncher(Launcher):
    def __init__(self, n_jobs: int = -1, max_arms: int = 0) -> None:
        self.n_jobs = n_jobs
        self.max_arms = max_arms
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from . import _core

        self.config = config
        self.task_function = task_function
        self.hydra_context = hydra_context
        # The sweeper composes each job's config to validate its batch: keep them for launch.
        _core.remember_sweep_configs(hydra_context.config_loader)

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from . import _core

        return _core.launch(self, job_overrides, initial_job_idx)


__all__: list[Any] = ["StackedLauncher", "StackedLauncherConf"]
