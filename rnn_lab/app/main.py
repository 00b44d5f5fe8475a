"""Hydra entry point: ``python -m rnn_lab.train [overrides]`` (also ``rnn-lab train``).

A thin shell around :func:`rnn_lab.run.trainer.train`: it turns the composed config into plain
settings, checks them before any work, and records every outcome in the run directory. In
a multirun, a job never raises (Hydra would stop the sweep and skip ``on_multirun_end``):
a failure is written to summary.json as status "failed" and the job returns.
"""

from __future__ import annotations

import logging
import shutil
import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from rnn_lab import CONF_DIR
from rnn_lab.app.schema import ConfigError, check_inputs, register_schema, settings_from_config
from rnn_lab.run.rundir import atomic_write_json, read_json

log = logging.getLogger("rnn_lab")

register_schema()


def _is_multirun() -> bool:
    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


def _output_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def _remove_fresh_run_dir(run_dir: Path) -> None:
    """Undo a run directory Hydra just made for a run that never started (bad input)."""
    leftovers = [p for p in run_dir.iterdir() if p.name not in (".hydra", "train.log")]
    if leftovers:
        return  # the directory held something else: leave it alone
    shutil.rmtree(run_dir, ignore_errors=True)


def _record_failure(run_dir: Path, cfg: DictConfig, message: str, status: str = "failed") -> dict:
    summary = {
        "status": status,
        "steps": cfg.get("steps"),
        "steps_done": 0,
        "final_loss": None,
        "val_loss": None,
        "error": message,
    }
    prior = run_dir / "summary.json"
    if prior.exists():  # a run that failed mid-way keeps what it had recorded
        try:
            summary = {**read_json(prior), "status": status, "error": message}
        except ValueError:
            pass
    atomic_write_json(prior, summary)
    return summary


def run(cfg: DictConfig) -> dict | None:
    """The task function. Returns the run summary (None when the config was rejected)."""
    from rnn_lab.run.trainer import train

    run_dir = _output_dir()
    multirun = _is_multirun()
    try:
        settings = settings_from_config(cfg)
        task = check_inputs(settings)
    except ConfigError as e:
        if multirun:
            log.error("rejected config: %s", e)
            return _record_failure(run_dir, cfg, f"config error: {e}")
        print(f"rnn_lab: error: {e}", file=sys.stderr)
        _remove_fresh_run_dir(run_dir)
        sys.exit(2)

    try:
        summary = train(settings, run_dir, task=task)
    except ConfigError as e:  # e.g. resuming with other settings
        print(f"rnn_lab: error: {e}", file=sys.stderr)
        if multirun:
            return _record_failure(run_dir, cfg, str(e))
        sys.exit(2)
    except Exception as e:
        message = f"{type(e).__name__}: {e}"
        log.error("run failed: %s\n%s", message, traceback.format_exc())
        summary = _record_failure(run_dir, cfg, message)
        if not multirun:
            print(f"rnn_lab: error: run failed: {message} (details in {run_dir})", file=sys.stderr)
            sys.exit(1)
        return summary

    if summary.get("status") == "ok" and settings.analyze:
        summary = _analyze(run_dir, settings, summary)
    if summary.get("status") == "interrupted" and not multirun:
        sys.exit(128 + int(summary.get("signal", 2)))  # the shell's convention: 130, 143
    return summary


def _analyze(run_dir: Path, settings, summary: dict) -> dict:
    """Analysis and plots at the end of training; their failure never fails the run."""
    try:
        from rnn_lab.inspect.analysis import analyze_run

        return analyze_run(run_dir, plots=settings.plots) or summary
    except Exception as e:
        log.warning("analysis of %s failed: %s: %s", run_dir, type(e).__name__, e)
        return summary


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
