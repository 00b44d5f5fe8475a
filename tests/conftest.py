"""Shared helpers: run the CLI in a subprocess, compose configs in-process, tiny settings."""

from __future__ import annotations

import pytest

from rnn_lab import CONF_DIR


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
