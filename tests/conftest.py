"""Shared helpers: run the CLI in a subprocess, compose configs in-process, tiny settings."""

from __future__ import annotations

import os

import pytest

from rnn_lab import CONF_DIR


@pytest.fixture(scope="session", autouse=True)
def _caches_in_a_temporary_folder(tmp_path_factory):
    """The caches (encoded texts, initial weights: rnn_lab.run.init_cache) of every test and
    of the processes it starts go to a folder of the session, not the user's ~/.cache."""
    os.environ["RNN_LAB_CACHE"] = str(tmp_path_factory.mktemp("rnn_lab_cache"))


@pytest.fixture
def compose():
    """compose(overrides) -> the composed DictConfig, as `python -m rnn_lab.train` would see it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from rnn_lab.app.schema import register_schema

    register_schema()

    def _compose(overrides: list[str] = (), return_hydra_config: bool = False):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra_compose(
                "config", overrides=list(overrides), return_hydra_config=return_hydra_config
            )

    return _compose


@pytest.fixture
def tiny_settings():
    """TrainSettings for a run of a second or two, through the real config path."""
    from rnn_lab.run.settings import TrainSettings

    def _make(**changes) -> TrainSettings:
        base = dict(
            steps=40,
            hidden_size=8,
            seq_len=8,
            val_interval=20,
            checkpoint_interval=20,
            record_interval=10,
            record_dense_until=0,
            jacobian_interval=20,
            jacobian_lags=4,
            sample_interval=0,
            sample_length=40,
            log_interval=0,
            analyze=False,
            data={"name": "elman", "seed": 42, "num_sentences": 60},
        )
        base.update(changes)
        return TrainSettings(**base)

    return _make


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A one-node SLURM on this machine (scripts/slurm-local), for the whole test session;
    stopped at its end, and none of its daemons may be left."""
    from clusters import slurm_unavailable, start_slurm, stop_slurm

    why = slurm_unavailable()
    if why:
        pytest.skip(f"no SLURM cluster: {why}")
    cluster = start_slurm(tmp_path_factory.mktemp("slurm"))
    yield cluster
    left = stop_slurm(cluster)
    assert not left, f"SLURM daemons left running: {left}"


@pytest.fixture(scope="module")
def ray_cluster():
    """A two-node Ray cluster on this machine (one CPU a node), for the tests of a module; a
    test may stop it itself (stop_ray), and nothing of it may be left at the end."""
    import shutil
    import tempfile
    from pathlib import Path

    pytest.importorskip("ray")
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    from clusters import start_ray, stop_ray

    # A short base path: Ray's unix sockets live under its temp dirs (107-byte limit).
    base = Path(tempfile.mkdtemp(prefix="rl", dir="/tmp"))
    try:
        cluster = start_ray(base)
        yield cluster
        left = stop_ray(cluster)
        assert not left, f"Ray processes left running: {left}"
    finally:
        shutil.rmtree(base, ignore_errors=True)
