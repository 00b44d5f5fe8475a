"""rnn_lab: a configuration-driven ablation laboratory for vanilla recurrent networks."""

import os

# One BLAS thread per process: at these sizes threads cost more than they give, a sweep gets
# its parallelism from one job per core, and results do not depend on the thread count.
# Must happen before NumPy is imported anywhere; an explicit setting in the environment wins.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity: a SLURM job's or a container's share):
    what decides whether a helper process (analysis worker, initial-weights drawer) gets a core
    of its own or takes the run's."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


from pathlib import Path  # noqa: E402

__version__ = "0.1.0"

_PACKAGE_DIR = Path(__file__).resolve().parent
if (_PACKAGE_DIR / "conf" / "config.yaml").is_file():
    # An installed wheel: the Hydra configs and the studies ship inside the package
    # (pyproject.toml maps the checkout's conf/ and experiments/ into rnn_lab/conf/; the
    # studies are in conf/study/ and, for experiment= (their group's old name), conf/experiment/).
    PROJECT_ROOT = None
    CONF_DIR = _PACKAGE_DIR / "conf"
    EXPERIMENTS_DIR = CONF_DIR / "study"
else:
    # The checkout (or an editable install of it): conf/ and experiments/ beside rnn_lab/,
    # read live, so an edited study or config counts at once.
    PROJECT_ROOT = _PACKAGE_DIR.parent
    CONF_DIR = PROJECT_ROOT / "conf"
    EXPERIMENTS_DIR = PROJECT_ROOT / "experiments"


def load_run(run_dir):
    """Load a run directory's recordings; see :func:`rnn_lab.inspect.load.load_run`."""
    from rnn_lab.inspect.load import load_run as _load_run

    return _load_run(run_dir)


def collect(sweep_dir, **kwargs):
    """One row per run of a sweep; see :func:`rnn_lab.study.collect.collect`."""
    from rnn_lab.study.collect import collect as _collect

    return _collect(sweep_dir, **kwargs)


def compare(dirs, metrics=None, **kwargs):
    """Two or more sweep folders of one grid, arm by arm; see
    :func:`rnn_lab.study.compare.compare`."""
    from rnn_lab.study.compare import compare as _compare

    return _compare(dirs, metrics, **kwargs)
