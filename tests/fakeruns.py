"""Fabricate run directories exactly as docs/run_directory.md describes, without training.

`make_fake_run` writes one run directory (.hydra/config.yaml, overrides.yaml, hydra.yaml,
summary.json, settings.json, history.csv, diagnostics.npz, checkpoint.npz), consistent the way
rnn_lab.run.integrity checks it (the checkpoint and the history end at the summary's
steps_done); `make_fake_sweep` writes a Hydra-style multirun (numbered job dirs plus
multirun.yaml). The values are chosen by the caller, so tests can check statistics against
numbers they know, and can damage the files afterwards.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import yaml

# Config groups as the real conf/ has them; a group's node depends on the choice.
INIT_NODES = {
    "orthogonal": {"name": "orthogonal", "scale": 1.0, "path": None},
    "xavier": {"name": "xavier", "scale": 1.0, "path": None},
    "random": {"name": "random", "scale": 0.01, "path": None},
}
OPTIM_NODES = {
    "sgd": {"name": "sgd", "momentum": 0.9},
    "adagrad": {"name": "adagrad", "eps": 1e-8},
}


def fake_config(
    init="orthogonal",
    activation="tanh",
    seq_len=25,
    seed=1,
    optim="sgd",
    study=None,
    steps=200,
    **extra,
) -> dict:
    config = {
        "steps": steps,
        "hidden_size": 16,
        "seq_len": seq_len,
        "lr": 0.01,
        "clip": 5.0,
        "seed": seed,
        "freeze_whh": False,
        "record": True,
        "init": dict(INIT_NODES[init]),
        "activation": {"name": activation},
        "optim": dict(OPTIM_NODES[optim]),
        "data": {"name": "elman", "sentences": 600},
        # group placeholders, null in config.yaml as in the real schema; the choice is Hydra's
        "launcher": None,
        "experiment": None,
    }
    config.update(extra)
    if study is not None:
        config["study"] = study
    return config


RUN_ID = "0123456789abcdef"  # a run identity as rundir.run_identity spells it (16 hex)


def fake_summary(
    status="ok",
    final_loss=1.2,
    val_loss=None,
    spectral_radius=1.1,
    steps=200,
    error=None,
    run_id=RUN_ID,
    **extra,
) -> dict:
    val_loss = final_loss + 0.05 if val_loss is None and final_loss is not None else val_loss
    done = {"ok": steps, "diverged": steps // 2, "failed": 0}.get(status, steps // 4)
    summary = {
        "status": status,
        "run_id": run_id,
        "steps": steps,
        "steps_done": done,
        "final_loss": final_loss,
        "val_loss": val_loss,
        "best_val_loss": val_loss,
        "bits_per_char": final_loss / math.log(2) if final_loss is not None else None,
        "val_bits_per_char": val_loss / math.log(2) if val_loss is not None else None,
        "spectral_radius": spectral_radius,
        "wall_time_s": 1.5,
        "steps_per_s": 130.0,
        "sample": "the boy sees the cat",
        "error": error,
    }
    summary.update(extra)
    return summary


HISTORY_HEADER = "step,loss,val_loss,lr,grad_norm,clipped,clip_ratio,spectral_radius"


def fake_history(
    final_loss: float,
    spectral_radius: float,
    steps: int = 200,
    every: int = 10,
    val_every: int = 5,
    until: int | None = None,
) -> str:
    """history.csv text: loss decaying from ln(27) to final_loss; val_loss on every 5th row.
    Rows stop at step `until` (a run that ended early) when given."""
    lines = [HISTORY_HEADER]
    last = steps if until is None else until
    record_steps = list(range(every, last + 1, every))
    for i, step in enumerate(record_steps):
        frac = step / steps
        loss = final_loss + (math.log(27) - final_loss) * math.exp(-5 * frac)
        val = f"{loss + 0.05!r}" if (i + 1) % val_every == 0 or step == steps else ""
        radius = 1.0 + (spectral_radius - 1.0) * frac
        lines.append(f"{step},{loss!r},{val},0.01,{2.0 - frac!r},0,1.0,{radius!r}")
    return "\n".join(lines) + "\n"


def bare_history(step: int) -> str:
    """A history.csv whose only row is the last step, with no values: a sound run that has
    nothing to plot."""
    return f"{HISTORY_HEADER}\n{step},,,,,,,\n"


def fake_checkpoint(step: int, hidden_size: int = 4, vocab: int = 3) -> dict:
    """The arrays a checkpoint.npz holds that readers look at: the weights and `step`."""
    rng = np.random.default_rng(step)
    return {
        "W_xh": rng.normal(size=(hidden_size, vocab)),
        "W_hh": rng.normal(size=(hidden_size, hidden_size)),
        "W_hy": rng.normal(size=(vocab, hidden_size)),
        "b_h": np.zeros(hidden_size),
        "b_y": np.zeros(vocab),
        "step": np.array(step),
    }


def fake_diagnostics(seq_len: int, decay: float, n_records: int = 3, steps: int = 200) -> dict:
    """last_loss_grad_norm decaying geometrically away from t = T by `decay` per step."""
    T = seq_len
    positions = np.arange(1, T + 1)
    profile = decay ** (T - positions).astype(float)
    record_step = np.linspace(steps // n_records, steps, n_records).astype(int)
    return {
        "record_step": record_step,
        "eigenvalues": np.ones((n_records, 4), dtype=complex),
        "per_step_grad_norm": np.tile(profile * 2, (n_records, 1)),
        "last_loss_grad_norm": np.vstack([profile * (k + 1) for k in range(n_records)]),
        "position_accuracy": np.full((n_records, T), 0.5),
    }


def hydra_node(
    overrides: list[str],
    choices: dict,
    sweeper_params: dict | None = None,
    num: int = 0,
    sweep_dir: str = "multirun/x",
    task_overrides: list[str] | None = None,
) -> dict:
    """The parts of Hydra's hydra.yaml the collector reads, laid out as Hydra writes them."""
    return {
        "hydra": {
            "run": {"dir": "outputs/${now:%Y-%m-%d}"},
            "sweep": {"dir": sweep_dir, "subdir": "${hydra.job.num}"},
            "sweeper": {
                "_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                "max_batch_size": None,
                "params": sweeper_params,
            },
            "mode": "MULTIRUN",
            "callbacks": {},
            "overrides": {
                "hydra": ["hydra.mode=MULTIRUN"],
                "task": list(task_overrides if task_overrides is not None else overrides),
            },
            "job": {
                "name": "train",
                "chdir": None,
                "override_dirname": ",".join(overrides),
                "id": str(num),
                "num": num,
                "config_name": "config",
            },
            "runtime": {
                "version": "1.3.2",
                "choices": {**choices, "hydra/launcher": "basic", "hydra/sweeper": "basic"},
            },
            "verbose": False,
        }
    }


def make_fake_run(
    run_dir,
    config: dict,
    overrides: list[str],
    summary: dict | None,
    *,
    sweeper_params: dict | None = None,
    history: str | bool = True,
    diagnostics: dict | bool = True,
    checkpoint: dict | bool = True,
    num: int = 0,
    sweep_dir: str = "multirun/x",
) -> Path:
    """Write one run directory. `summary=None` leaves summary.json out (a job cut off early).

    `history=True` / `diagnostics=True` synthesise the files from the summary's final_loss,
    spectral_radius, steps_done and the config's seq_len and activation (diagnostics only when
    the config records); `checkpoint=True` writes one at steps_done for a run that checkpoints
    when it ends (ok, diverged, interrupted). Pass text/arrays to control them or False to
    leave them out.
    """
    run_dir = Path(run_dir)
    hydra_dir = run_dir / ".hydra"
    hydra_dir.mkdir(parents=True, exist_ok=True)
    choices = {
        "init": config["init"]["name"],
        "activation": config["activation"]["name"],
        "optim": config["optim"]["name"],
        "data": config["data"]["name"],
        "launcher": "joblib",
        "experiment": (config.get("study") or {}).get("name"),
    }
    (hydra_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (hydra_dir / "overrides.yaml").write_text(yaml.safe_dump(list(overrides)))
    node = hydra_node(overrides, choices, sweeper_params, num=num, sweep_dir=sweep_dir)
    (hydra_dir / "hydra.yaml").write_text(yaml.safe_dump(node, sort_keys=False))
    if summary is None:
        return run_dir
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    settings = {k: config[k] for k in ("steps", "seed", "seq_len", "record") if k in config}
    (run_dir / "settings.json").write_text(json.dumps(settings))
    done = summary.get("steps_done") or 0
    ok_numbers = summary.get("final_loss") is not None
    if history is True and ok_numbers:
        history = fake_history(
            summary["final_loss"],
            summary.get("spectral_radius") or 1.0,
            steps=config["steps"],
            until=done,
        )
    if isinstance(history, str):
        (run_dir / "history.csv").write_text(history)
    if diagnostics is True and ok_numbers and config.get("record", True) and done > 0:
        decay = {"tanh": 0.8, "relu": 0.95, "sigmoid": 0.5}[config["activation"]["name"]]
        diagnostics = fake_diagnostics(config["seq_len"], decay, steps=done)
    if isinstance(diagnostics, dict):
        np.savez(run_dir / "diagnostics.npz", **diagnostics)
    if checkpoint is True and summary.get("status") in ("ok", "diverged", "interrupted"):
        checkpoint = fake_checkpoint(done)
    if isinstance(checkpoint, dict):
        np.savez(run_dir / "checkpoint.npz", **checkpoint)
    return run_dir


def write_multirun_yaml(
    sweep_dir,
    task_overrides: list[str],
    sweeper_params=None,
    study: dict | None = None,
) -> Path:
    """<sweep_dir>/multirun.yaml as Hydra writes it: the sweep overrides as typed."""
    node = hydra_node([], {}, sweeper_params, 0, str(sweep_dir), task_overrides=task_overrides)
    node["hydra"]["job"]["id"] = "???"
    node["hydra"]["job"]["num"] = "???"
    if study is not None:
        node["study"] = study
    path = Path(sweep_dir) / "multirun.yaml"
    path.write_text(yaml.safe_dump(node, sort_keys=False))
    return path


def make_fake_sweep(
    sweep_dir,
    cells: list[dict],
    *,
    sweeper_params: dict | None = None,
    task_overrides: list[str] | None = None,
    study: dict | None = None,
    override_keys=("init", "activation", "seed"),
) -> list[Path]:
    """A multirun: one job dir per cell, numbered 0..n-1, plus multirun.yaml.

    A cell is a dict with config fields (init, activation, seq_len, seed, optim) and summary
    fields (status, final_loss, val_loss, spectral_radius, error); anything else goes to
    fake_summary as an extra metric.
    """
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    config_fields = ("init", "activation", "seq_len", "seed", "optim")
    paths = []
    for num, cell in enumerate(cells):
        cfg_args = {k: cell[k] for k in config_fields if k in cell}
        config = fake_config(study=study, **cfg_args)
        overrides = [f"{k}={cell[k]}" for k in override_keys if k in cell]
        summary_args = {k: v for k, v in cell.items() if k not in config_fields}
        summary = None if cell.get("status") == "no_summary" else fake_summary(**summary_args)
        paths.append(
            make_fake_run(
                sweep_dir / str(num),
                config,
                overrides,
                summary,
                sweeper_params=sweeper_params,
                num=num,
                sweep_dir=str(sweep_dir),
            )
        )
    if task_overrides is not None:
        write_multirun_yaml(sweep_dir, task_overrides, sweeper_params, study)
    return paths
