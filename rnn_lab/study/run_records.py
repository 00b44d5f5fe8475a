"""Read the run directories of a sweep: one :class:`RunRecord` per run, what the sweep itself
recorded (multirun.yaml, an interruption), and why a directory could not be read.

The only input is what docs/run_directory.md says a run directory holds, read through
``rnn_lab.run.rundir`` (its names and readers) and checked with
``rnn_lab.run.integrity.verify_run_dir``; this module never imports the engine or the training
loop, so a sweep copied off another machine can be read.

Damage to a run's own files is recorded in ``RunRecord.problems`` (the table makes it a
``damaged`` row); a directory whose .hydra config cannot be read (so not even its grid cell is
known) raises :class:`DamagedRunDir`, which :func:`read_runs` turns into a warning.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rnn_lab.run.integrity import verify_run_dir
from rnn_lab.run.rundir import (
    ANALYSIS_FILE,
    HISTORY_FILE,
    HYDRA_CONFIG_FILE,
    HYDRA_DIR,
    HYDRA_HYDRA_FILE,
    HYDRA_OVERRIDES_FILE,
    MULTIRUN_FILE,
    SUMMARY_FILE,
    SWEEP_INTERRUPTED_FILE,
    SWEEP_STATE_DIR,
    analysis_matches,
    analysis_scalars,
    read_history_rows,
    read_json,
    sweep_state_dir,
)
from rnn_lab.study.dynamics import history_scalars

log = logging.getLogger(__name__)

# Directories under a sweep that never hold runs; not walking them keeps big sweeps fast (Ray
# keeps its session files under the sweep).
NOT_RUN_DIRS = {HYDRA_DIR, SWEEP_STATE_DIR, ".ray_tmp", "__pycache__", ".git", ".ipynb_checkpoints"}

# The recurrent cell, a column of every table (after steps_done unless it labels the arms):
# the `cell` group's choice, "rnn" for runs written before the group existed.
CELL_KEY = "cell"
DEFAULT_CELL = "rnn"

try:  # the C loader is several times faster on Hydra's long hydra.yaml
    _YamlLoader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _YamlLoader = yaml.SafeLoader


class DamagedRunDir(Exception):
    """A run directory that cannot be read; the message says which file and why."""


@dataclass
class RunRecord:
    """What one run directory says about itself, before the sweep-wide table is built."""

    path: Path
    config: dict  # flattened .hydra/config.yaml: dotted key -> scalar (lists as JSON text)
    choices: dict  # hydra.runtime.choices without hydra/* groups
    overrides: list[str]  # .hydra/overrides.yaml
    summary: dict  # flattened summary.json (+ analysis.json), or {} when absent or unreadable
    hydra: dict = field(default_factory=dict)  # the parts of hydra.yaml the report uses
    study: dict | None = None  # the config's `study` node, unflattened
    problems: list[str] = field(default_factory=list)  # verify_run_dir's reasons ([] = sound)


def _load_yaml(path: Path):
    with path.open(encoding="utf-8") as f:
        return yaml.load(f, Loader=_YamlLoader)


def flatten(node, prefix: str = "") -> dict:
    """Nested mappings -> {"a.b": scalar}; lists become JSON text so a cell stays a scalar."""
    out = {}
    if isinstance(node, dict):
        for k, v in node.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, dict) and v:
                out.update(flatten(v, key))
            else:
                out[key] = _cell(v)
    else:
        out[prefix] = _cell(node)
    return out


def _cell(v):
    if isinstance(v, list | tuple | dict):
        return json.dumps(v, default=str)
    return v


def find_run_dirs(sweep_dir: str | Path) -> list[Path]:
    """Every directory under sweep_dir holding summary.json or a .hydra directory, sorted.

    A run directory's own subdirectories are not searched (runs do not nest). Sorting is
    numeric-aware so Hydra's job dirs come out 0, 1, 2, ..., 10 rather than 0, 1, 10, 2.
    """
    root = Path(sweep_dir)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if SUMMARY_FILE in filenames or HYDRA_DIR in dirnames:
            found.append(here)
            dirnames[:] = []
            continue
        dirnames[:] = [d for d in dirnames if d not in NOT_RUN_DIRS]

    def natural(p: Path):
        parts = p.relative_to(root).parts
        return [(0, int(x), "") if x.isdigit() else (1, 0, x) for x in parts]

    return sorted(found, key=natural)


def read_run(run_dir: str | Path) -> RunRecord:
    """Read one run directory. Raise DamagedRunDir (with the file and reason) when its .hydra
    config is unusable; damage to the run's own files is recorded in `problems` instead."""
    run_dir = Path(run_dir)
    hydra_dir = run_dir / HYDRA_DIR
    config = _read_yaml_file(hydra_dir / HYDRA_CONFIG_FILE, required=True)
    if not isinstance(config, dict) or not config:
        raise DamagedRunDir(f"{HYDRA_DIR}/{HYDRA_CONFIG_FILE} is not a mapping (truncated?)")

    hydra_info: dict = {}
    hydra_cfg = _read_yaml_file(hydra_dir / HYDRA_HYDRA_FILE)
    if hydra_cfg is not None:
        if not isinstance(hydra_cfg, dict) or not isinstance(hydra_cfg.get("hydra"), dict):
            raise DamagedRunDir(f"{HYDRA_DIR}/{HYDRA_HYDRA_FILE} has no `hydra` node (truncated?)")
        hydra_info = _hydra_info(hydra_cfg["hydra"])

    loaded = _read_yaml_file(hydra_dir / HYDRA_OVERRIDES_FILE)
    overrides = [str(o) for o in loaded] if isinstance(loaded, list) else []

    summary, problems = _read_summary(run_dir)
    study = config.get("study") if isinstance(config.get("study"), dict) else None
    flat = flatten(config)
    return RunRecord(
        path=run_dir,
        config=flat,
        choices=_with_cell(hydra_info.get("choices", {}), flat),
        overrides=overrides,
        summary=flatten(summary),
        hydra=hydra_info,
        study=study,
        problems=problems,
    )


def _with_cell(choices: dict, config: dict) -> dict:
    """Hydra's choices with the `cell` group always named: the choice, else the config's
    cell.name (a job without hydra.yaml), else "rnn" (a run from before the group existed).
    So `cell` is a grid axis like init or activation, and old and new vanilla runs agree."""
    cell = choices.get(CELL_KEY) or config.get(f"{CELL_KEY}.name") or DEFAULT_CELL
    return {**choices, CELL_KEY: cell}


def _read_yaml_file(path: Path, required: bool = False):
    """A .hydra file parsed; None when absent and not required; DamagedRunDir otherwise."""
    name = f"{HYDRA_DIR}/{path.name}"
    if not path.exists():
        if required:
            raise DamagedRunDir(f"missing {name}")
        return None
    try:
        return _load_yaml(path)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise DamagedRunDir(f"unparseable {name} ({one_line(e)})") from None


def _read_summary(run_dir: Path) -> tuple[dict, list[str]]:
    """summary.json (plus the scalars of this run's own analysis.json and of its history.csv:
    dynamics.history_scalars) and what is damaged.

    No summary.json at all is no damage: the job was cut off before the trainer started, and
    the run counts as incomplete. An unreadable summary gives {} and the reason.
    """
    if not (run_dir / SUMMARY_FILE).exists():
        return {}, []
    problems = verify_run_dir(run_dir)
    summary = _json_object_or_empty(run_dir / SUMMARY_FILE)
    # summary.json normally has the analysis merged already; fill in what it lacks, but only
    # from an analysis of this very run (an older run's analysis.json may still lie there).
    analysis = _json_object_or_empty(run_dir / ANALYSIS_FILE)
    if summary and analysis and analysis_matches(analysis, summary):
        for k, v in analysis_scalars(analysis).items():
            summary.setdefault(k, v)
    if summary:  # the whole run's clipping, gradient norm and saturation, from its history
        for k, v in _history_scalars(run_dir).items():
            summary.setdefault(k, v)
    return summary, problems


def _history_scalars(run_dir: Path) -> dict:
    """dynamics.history_scalars of the run's history.csv; {} when it is absent or unreadable
    (verify_run_dir has said why)."""
    try:
        return history_scalars(read_history_rows(run_dir / HISTORY_FILE))
    except (ValueError, csv.Error, UnicodeDecodeError, OSError):
        return {}


def _json_object_or_empty(path: Path) -> dict:
    """The JSON object at path, or {} when absent or unusable (verify_run_dir says why)."""
    try:
        data = read_json(path)
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def one_line(e: Exception) -> str:
    """An exception as one short line, for a warning or an error column."""
    return " ".join(str(e).split())[:200]


def _hydra_info(h: dict) -> dict:
    """The few fields of a job's hydra.yaml the collector and report use."""
    runtime = h.get("runtime") or {}
    job = h.get("job") or {}
    overrides = h.get("overrides") or {}
    sweeper = h.get("sweeper") or {}
    choices = {
        k: v for k, v in (runtime.get("choices") or {}).items() if not str(k).startswith("hydra/")
    }
    return {
        "choices": choices,
        "config_name": job.get("config_name"),
        "sweeper_params": dict(sweeper.get("params") or {}),
        "task_overrides": list(overrides.get("task") or []),
        "hydra_overrides": list(overrides.get("hydra") or []),
    }


def read_multirun_yaml(sweep_dir: str | Path) -> dict:
    """hydra info from <sweep_dir>/multirun.yaml (the sweep as typed); {} when absent/damaged."""
    path = Path(sweep_dir) / MULTIRUN_FILE
    if not path.exists():
        return {}
    try:
        cfg = _load_yaml(path)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        log.warning("%s: unparseable (%s); ignoring it", path, one_line(e))
        return {}
    if not isinstance(cfg, dict) or not isinstance(cfg.get("hydra"), dict):
        return {}
    info = _hydra_info(cfg["hydra"])
    info["study"] = cfg.get("study") if isinstance(cfg.get("study"), dict) else None
    return info


def read_runs(sweep_dir: Path) -> tuple[list[RunRecord], list[dict]]:
    """Every readable run under sweep_dir, and a warning for each one that is not."""
    runs: list[RunRecord] = []
    warnings: list[dict] = []
    for run_dir in find_run_dirs(sweep_dir):
        rel = relpath(run_dir, sweep_dir)
        try:
            runs.append(read_run(run_dir))
        except DamagedRunDir as e:
            hint = _override_hint(run_dir)
            reason = str(e) + (f"; its overrides: {hint}" if hint else "")
            warnings.append({"path": rel, "reason": reason})
            log.warning("skipping %s: %s", run_dir, reason)
        except OSError as e:  # unreadable file, permission, vanished mid-walk
            warnings.append({"path": rel, "reason": f"cannot read ({one_line(e)})"})
            log.warning("skipping %s: cannot read (%s)", run_dir, e)
    return runs, warnings


def read_sweep_interrupted(sweep_dir: str | Path) -> dict | None:
    """What the sweep recorded when Ctrl-C / SIGTERM stopped it ({"signal", "time", "pid"}),
    {} when that record is unreadable, None when the sweep was not interrupted."""
    path = sweep_state_dir(sweep_dir) / SWEEP_INTERRUPTED_FILE
    if not path.exists():
        return None
    try:
        info = read_json(path)
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return info if isinstance(info, dict) else {}


def relpath(path: Path, root: Path) -> str:
    """path relative to root in POSIX spelling ("." for root itself): a row's `path`."""
    rel = path.relative_to(root).as_posix()
    return rel if rel else "."


def _override_hint(run_dir: Path) -> str:
    """Which grid cell a damaged run was, from overrides.yaml if that at least is readable."""
    try:
        loaded = _load_yaml(run_dir / HYDRA_DIR / HYDRA_OVERRIDES_FILE)
        return " ".join(str(o) for o in loaded) if isinstance(loaded, list) else ""
    except Exception:
        return ""
