"""Collect a sweep's run directories into one pandas table, one row per run.

The only input is what docs/run_directory.md says a run directory holds, read through
``rnn_lab.run.rundir`` (its names and readers) and checked with
``rnn_lab.run.integrity.verify_run_dir``; this module never imports the engine or the training
loop, so a table can be built from a sweep copied off another machine.

What can go wrong is reported, never fatal, and never silently dropped:

- a run whose files do not hold up (summary.json unparseable, checkpoint.npz truncated,
  history.csv cut short, ...) is a row with status ``damaged`` and the reasons in ``error``;
- a job refused because its folder belongs to another run (recorded in the sweep by
  ``rundir.record_conflict``) is a row with status ``conflict``;
- a run whose summary says ``running`` after the sweep (its job was killed), or that never
  wrote a summary, is ``incomplete``;
- a directory whose .hydra config cannot be read (so not even its grid cell is known) is
  skipped and listed in ``df.attrs["warnings"]`` and in the log.
"""

from __future__ import annotations

import argparse
import csv
import functools
import io
import json
import logging
import math
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from rnn_lab.run.integrity import verify_run_dir
from rnn_lab.run.rundir import (
    ANALYSIS_FILE,
    COLLECT_STATUSES,
    CONFLICT,
    DAMAGED,
    DIAGNOSTICS_FILE,
    HISTORY_FILE,
    HYDRA_CONFIG_FILE,
    HYDRA_DIR,
    HYDRA_HYDRA_FILE,
    HYDRA_OVERRIDES_FILE,
    INCOMPLETE,
    MULTIRUN_FILE,
    RESULTS_CSV,
    RESULTS_PARQUET,
    RUNNING,
    SUMMARY_FILE,
    SWEEP_INTERRUPTED_FILE,
    SWEEP_STATE_DIR,
    RunDirError,
    analysis_matches,
    analysis_scalars,
    atomic_write_bytes,
    atomic_write_text,
    read_conflicts,
    read_history_rows,
    read_json,
    read_npz,
    sweep_state_dir,
)
from rnn_lab.study.dynamics import history_scalars

log = logging.getLogger(__name__)

# Directories under a sweep that never hold runs; not walking them keeps big sweeps fast (Ray
# keeps its session files under the sweep).
NOT_RUN_DIRS = {HYDRA_DIR, SWEEP_STATE_DIR, ".ray_tmp", "__pycache__", ".git", ".ipynb_checkpoints"}

# Columns every results table has, in this order, ahead of the varying config keys and metrics.
LEADING_COLUMNS = ["path", "arm"]
# Summary fields that are text, kept at the end of the table.
TEXT_SUMMARY_FIELDS = ["run_id", "error", "sample"]
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


# --------------------------------------------------------------------------- small helpers


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


def canonical(v) -> str:
    """A comparison key for a config value, so 1 == 1.0 == "1.0" and True == "true".

    Grid values come from Hydra override strings while table values are parsed YAML; both must
    land on the same key for the grid ledger and for matching a study's baseline.
    """
    if v is None:
        return "null"
    if isinstance(v, bool | np.bool_):
        return "true" if v else "false"
    if isinstance(v, int | float | np.integer | np.floating):
        f = float(v)
        return "null" if math.isnan(f) else format(f, ".12g")
    if isinstance(v, str):
        s = v.strip()
        if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"":
            s = s[1:-1]
        low = s.lower()
        if low in ("true", "false"):
            return low
        if low in ("null", "none", "~", ""):
            return "null"
        try:
            return format(float(s), ".12g")
        except ValueError:
            return s
    return json.dumps(v, sort_keys=True, default=str)


def format_value(v) -> str:
    """How a config value is written in an arm label (YAML spelling: true, null, 0.01)."""
    if v is None:
        return "null"
    if isinstance(v, float) and math.isnan(v):
        return "?"
    if isinstance(v, bool | np.bool_):
        return "true" if v else "false"
    if isinstance(v, np.generic):
        v = v.item()
    return str(v)


def arm_label(values: dict) -> str:
    """`{"init": "xavier", "activation": "relu"}` -> "init=xavier, activation=relu"."""
    if not values:
        return "all runs"
    return ", ".join(f"{k}={format_value(v)}" for k, v in values.items())


def _sort_key(canon: str):
    try:
        return (0, float(canon), "")
    except ValueError:
        return (1, 0.0, canon)


# --------------------------------------------------------------------------- Hydra overrides


def parse_sweep_override(text: str) -> tuple[str, list[str]] | None:
    """`"init=orthogonal,xavier"` -> ("init", ["orthogonal", "xavier"]); `range(1,4)` expands.

    Uses Hydra's own override grammar when it can (quoting, choice(), range()); falls back to
    splitting on commas. Deletions (`~key`), hydra.* keys and non-enumerable sweeps (interval)
    give None.
    """
    parsed = _parse_override_cached(str(text))
    return None if parsed is None else (parsed[0], list(parsed[1]))


@functools.lru_cache(maxsize=4096)  # every job repeats the same few override strings
def _parse_override_cached(text: str) -> tuple[str, tuple[str, ...]] | None:
    text = str(text).strip()
    if not text or text.startswith(("~", "hydra.", "hydra/")) or "=" not in text:
        return None
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        override = OverridesParser.create().parse_override(text)
        key = override.get_key_element().lstrip("+")
        if override.is_sweep_override():
            return key, tuple(str(v) for v in override.sweep_string_iterator())
        return key, (canonical_str(override.value()),)
    except Exception:  # unknown grammar, interval/glob sweeps, or Hydra missing
        key, _, value = text.partition("=")
        key = key.strip().lstrip("+")
        if "@" in key:
            key = key.split("@", 1)[0]
        if any(value.startswith(f) for f in ("interval(", "glob(", "tag(")):
            return None
        if value.startswith("range("):
            try:
                args = [int(a) for a in value[len("range(") : -1].split(",")]
                return key, tuple(str(i) for i in range(*args))
            except ValueError:
                return None
        for prefix in ("choice(",):
            if value.startswith(prefix) and value.endswith(")"):
                value = value[len(prefix) : -1]
        return key, tuple(p.strip() for p in value.split(","))


def canonical_str(v) -> str:
    """A single override value back as the string a user would type."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    return str(v)


# --------------------------------------------------------------------------- reading runs


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
        raise DamagedRunDir(f"unparseable {name} ({_one_line(e)})") from None


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


def _one_line(e: Exception) -> str:
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
        log.warning("%s: unparseable (%s); ignoring it", path, _one_line(e))
        return {}
    if not isinstance(cfg, dict) or not isinstance(cfg.get("hydra"), dict):
        return {}
    info = _hydra_info(cfg["hydra"])
    info["study"] = cfg.get("study") if isinstance(cfg.get("study"), dict) else None
    return info


def declared_grid(sweep_info: dict, runs: Iterable[RunRecord] = ()) -> dict[str, list[str]]:
    """The study's declared grid, key -> list of value strings, in declaration order.

    Sources, later ones winning for the same key as they do in Hydra: the sweeper params of the
    config (`hydra.sweeper.params`, in every job's hydra.yaml and in multirun.yaml), then the
    sweep overrides typed on the command line (multirun.yaml `hydra.overrides.task`). Without a
    multirun.yaml the command-line part is rebuilt from the values the jobs' overrides show,
    which cannot reveal a value no job ran.
    """
    runs = list(runs)
    grid: dict[str, list[str]] = {}
    params = dict(sweep_info.get("sweeper_params") or {})
    for run in runs:
        for k, v in (run.hydra.get("sweeper_params") or {}).items():
            params.setdefault(k, v)
    for key, value in params.items():
        parsed = parse_sweep_override(f"{key}={_override_value_text(value)}")
        if parsed:
            grid[parsed[0]] = parsed[1]
    if sweep_info.get("task_overrides"):
        for text in sweep_info["task_overrides"]:
            parsed = parse_sweep_override(text)
            if parsed:
                grid[parsed[0]] = parsed[1]
    else:
        seen: dict[str, dict[str, str]] = {}
        for run in runs:
            for text in run.overrides:
                parsed = parse_sweep_override(text)
                if parsed and parsed[0] not in grid:
                    for v in parsed[1]:
                        seen.setdefault(parsed[0], {}).setdefault(canonical(v), v)
        for key, values in seen.items():
            grid[key] = [values[c] for c in sorted(values, key=_sort_key)]
    return grid


def _override_value_text(value) -> str:
    if isinstance(value, list | tuple):
        return ",".join(canonical_str(v) for v in value)
    return canonical_str(value)


# --------------------------------------------------------------------------- the table


class _Shared:
    """Collection metadata in ``df.attrs`` that never changes after collect().

    pandas deep-copies ``attrs`` on every operation (~1 s of a report's 8 s went there); these
    dict and list subclasses return themselves from deepcopy, and read as plain dicts and lists.
    """

    class Dict(dict):
        def __deepcopy__(self, memo):
            return self

    class List(list):
        def __deepcopy__(self, memo):
            return self

    @classmethod
    def wrap(cls, value):
        if isinstance(value, dict):
            return cls.Dict(value)
        if isinstance(value, list):
            return cls.List(value)
        return value


def collect(sweep_dir: str | Path, write: bool = True) -> pd.DataFrame:
    """One row per run directory under sweep_dir (and per job refused with a conflict);
    writes results.csv (+ .parquet) if `write`.

    Columns: `path` (relative to sweep_dir), `arm` (label of the varying non-seed keys), the
    arm keys, `seed`, `status` (one of rundir.COLLECT_STATUSES, or whatever unknown status a
    summary names), `steps_done`, `cell` (rnn, gru or lstm: the `cell` group's choice, "rnn"
    for runs from before it; among the arm keys when it varies), every other config key that
    varies across runs, then every scalar metric of summary.json (analysis metrics included:
    gated runs add spectral_radius_<gate> and gate_saturation_<gate>; history.csv adds
    clip_fraction_run, grad_norm_median, saturation_first and saturation_median, see
    rnn_lab.study.dynamics), `run_id`, `error`
    (for a damaged run, what is wrong with which file), `sample`.

    `df.attrs` carries what the statistics and the report need beyond the table:
    `warnings` (list of {"path", "reason"} for skipped directories), `arm_keys`, `grid`
    (declared grid, key -> values), `constant_config`, `study`, `hydra` (overrides for the
    reproduce command), `sweep_dir`, `from_multirun_yaml`, and `sweep_interrupted` (None, or
    what the sweep recorded when a signal stopped it, see read_sweep_interrupted).
    """
    sweep_dir = Path(sweep_dir)
    runs, warnings = _read_runs(sweep_dir)
    sweep_info = read_multirun_yaml(sweep_dir)
    if not sweep_info and runs:
        sweep_info = dict(runs[0].hydra)
        sweep_info["task_overrides"] = []  # a job's overrides are its cell, not the sweep
    grid = declared_grid(sweep_info, runs)

    df, arm_keys, constant = _build_table(runs, sweep_dir, grid, read_conflicts(sweep_dir))
    study = next((r.study for r in runs if r.study), None) or sweep_info.get("study")
    df.attrs.update(
        warnings=_Shared.wrap(warnings),
        arm_keys=_Shared.wrap(arm_keys),
        grid=_Shared.wrap(grid),
        constant_config=_Shared.wrap(constant),
        study=_Shared.wrap(study or {}),
        hydra=_Shared.wrap({k: v for k, v in sweep_info.items() if k != "study"}),
        sweep_dir=str(sweep_dir),
        from_multirun_yaml=(sweep_dir / MULTIRUN_FILE).exists(),
        sweep_interrupted=_Shared.wrap(read_sweep_interrupted(sweep_dir)),
    )
    if write and sweep_dir.is_dir():
        write_results(df, sweep_dir)
    return df


def _read_runs(sweep_dir: Path) -> tuple[list[RunRecord], list[dict]]:
    """Every readable run under sweep_dir, and a warning for each one that is not."""
    runs: list[RunRecord] = []
    warnings: list[dict] = []
    for run_dir in find_run_dirs(sweep_dir):
        rel = _relpath(run_dir, sweep_dir)
        try:
            runs.append(read_run(run_dir))
        except DamagedRunDir as e:
            hint = _override_hint(run_dir)
            reason = str(e) + (f"; its overrides: {hint}" if hint else "")
            warnings.append({"path": rel, "reason": reason})
            log.warning("skipping %s: %s", run_dir, reason)
        except OSError as e:  # unreadable file, permission, vanished mid-walk
            warnings.append({"path": rel, "reason": f"cannot read ({_one_line(e)})"})
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


def _relpath(path: Path, root: Path) -> str:
    rel = path.relative_to(root).as_posix()
    return rel if rel else "."


def _override_hint(run_dir: Path) -> str:
    """Which grid cell a damaged run was, from overrides.yaml if that at least is readable."""
    try:
        loaded = _load_yaml(run_dir / HYDRA_DIR / HYDRA_OVERRIDES_FILE)
        return " ".join(str(o) for o in loaded) if isinstance(loaded, list) else ""
    except Exception:
        return ""


@dataclass
class _TableKeys:
    """Which config keys label the arms, which vary, and every key seen."""

    arm_keys: list[str]
    varying_config: list[str]
    varying_choices: list[str]
    config_keys: list[str]
    choice_keys: list[str]


def _build_table(
    runs: list[RunRecord], sweep_dir: Path, grid: dict[str, list[str]], conflicts: list[dict]
):
    keys = _table_keys(runs, grid)
    extra = list(grid) + keys.varying_choices + keys.varying_config
    rows = [_run_row(r, sweep_dir, keys.arm_keys, extra) for r in runs]
    rows += _conflict_rows(conflicts, rows, keys.arm_keys)

    columns = LEADING_COLUMNS + keys.arm_keys + ["seed", "status", "steps_done"]
    if CELL_KEY not in keys.arm_keys:
        columns.append(CELL_KEY)
    df = pd.DataFrame(rows)
    if df.empty:
        df = pd.DataFrame(columns=columns + TEXT_SUMMARY_FIELDS)
    for c in [CELL_KEY, *TEXT_SUMMARY_FIELDS]:  # conflict rows alone have no run_id or sample
        if c not in df.columns:
            df[c] = None
    rest = [c for c in df.columns if c not in columns and c not in TEXT_SUMMARY_FIELDS]
    df = df[columns + rest + TEXT_SUMMARY_FIELDS]
    df = _sort_runs(df, keys.arm_keys, grid)
    return df, keys.arm_keys, _constant_config(runs, keys)


def _table_keys(runs: list[RunRecord], grid: dict[str, list[str]]) -> _TableKeys:
    config_keys = _ordered_union(r.config for r in runs)
    choice_keys = _ordered_union(r.choices for r in runs)

    def varies(getter, key) -> bool:
        return len({canonical(getter(r).get(key)) for r in runs}) > 1

    varying_config = [k for k in config_keys if varies(lambda r: r.config, k)]
    varying_choices = [k for k in choice_keys if varies(lambda r: r.choices, k)]

    # A key like init.scale that changes only because the `init` group changed says nothing the
    # group choice does not; it stays a column but is left out of the arm label.
    def explained_by_choice(key: str) -> bool:
        group = key.split(".", 1)[0]
        if group not in varying_choices:
            return False
        mapping: dict[str, set] = {}
        for r in runs:
            mapping.setdefault(canonical(r.choices.get(group)), set()).add(
                canonical(r.config.get(key))
            )
        return all(len(v) == 1 for v in mapping.values())

    swept = [k for k in grid if k != "seed" and len(grid[k]) > 1]

    # A key the grid does not sweep that changes only with a swept key (cell, activation and
    # init under recipe=..., a preset that sets them together) is a column, not a label part.
    def explained_by_grid(key: str) -> bool:
        if key in grid:
            return False
        # Only a swept group choice (a preset such as recipe) explains other keys: a plain key
        # (seq_len) that happens to move with another in a small sweep does not.
        for g in (g for g in swept if any(g in r.choices for r in runs)):
            mapping: dict[str, set] = {}
            for r in runs:
                mapping.setdefault(canonical(_value(r, g)), set()).add(canonical(_value(r, key)))
            if all(len(v) == 1 for v in mapping.values()):
                return True
        return False

    label_candidates = list(swept)
    label_candidates += [k for k in varying_choices if k != "seed" and not explained_by_grid(k)]
    label_candidates += [
        k
        for k in varying_config
        if k != "seed" and not k.startswith("study.")
        if not explained_by_choice(k) and not explained_by_grid(k)
    ]
    return _TableKeys(
        arm_keys=list(dict.fromkeys(label_candidates)),
        varying_config=varying_config,
        varying_choices=varying_choices,
        config_keys=config_keys,
        choice_keys=choice_keys,
    )


def _value(r: RunRecord, key: str):
    """A key's value for one run: the group option Hydra chose, else the config value."""
    if key in r.choices:
        return r.choices[key]
    return r.config.get(key)


def _run_row(r: RunRecord, sweep_dir: Path, arm_keys: list[str], extra: list[str]) -> dict:
    row = {"path": _relpath(r.path, sweep_dir)}
    arm_values = {k: _value(r, k) for k in arm_keys}
    row["arm"] = arm_label(arm_values)
    row.update(arm_values)
    row["seed"] = r.config.get("seed")
    row["status"], error = _run_status(r)
    row["steps_done"] = r.summary.get("steps_done")
    row[CELL_KEY] = r.choices.get(CELL_KEY, DEFAULT_CELL)
    for k in extra:
        row.setdefault(k, _value(r, k))
    for k, v in r.summary.items():
        if k in ("status", "steps_done") or k in TEXT_SUMMARY_FIELDS or k in row:
            continue
        if v is None or isinstance(v, bool | int | float | str):
            row[k] = v
    for k in TEXT_SUMMARY_FIELDS:
        row[k] = r.summary.get(k)
    row["error"] = error
    return row


def _run_status(r: RunRecord) -> tuple[str, str | None]:
    """(status for the table, text for its error column)."""
    said = r.summary.get("status")
    error = r.summary.get("error")
    if not r.summary and not r.problems:
        return INCOMPLETE, error  # no summary.json: cut off before the trainer wrote one
    if said == RUNNING:
        # Read after its sweep, a run still "running" was killed. Damage found in its files is
        # why it would have to start over, so it goes into the error column.
        return INCOMPLETE, "; ".join(r.problems) or error
    if r.problems:
        reason = "; ".join(r.problems)
        if said:
            reason += f" (its summary says {said}" + (f": {error})" if error else ")")
        return DAMAGED, reason
    return (str(said) if said else "unknown"), error


def _conflict_rows(conflicts: list[dict], rows: list[dict], arm_keys: list[str]) -> list[dict]:
    """A row per job the sweep refused because its folder holds another run.

    Hydra names a job's folder after its overrides, so the refused job is the grid cell of the
    run that owns the folder; without that run, the cell is read from the folder's name.
    """
    owners: dict[str, dict] = {}
    for row in rows:
        owners.setdefault(row["path"], row)
    out = []
    for c in conflicts:
        if not isinstance(c, dict):
            continue
        path = str(c.get("job_dir") or "?")
        owner = owners.get(path)
        if owner is not None:
            cell, seed = {k: owner.get(k) for k in arm_keys}, owner.get("seed")
        else:
            cell, seed = _cell_from_path(path, arm_keys)
        complete = all(k in cell for k in arm_keys)
        out.append(
            {
                "path": path,
                "arm": arm_label(cell) if complete else "unknown arm",
                **cell,
                "seed": seed,
                "status": CONFLICT,
                "steps_done": None,
                "error": c.get("error"),
            }
        )
    return out


def _cell_from_path(path: str, arm_keys: list[str]) -> tuple[dict, str | None]:
    """`activation=relu,init=random/seed=1` -> ({"init": "random", ...}, "1")."""
    found = {}
    for part in Path(path).parts:
        for piece in part.split(","):
            key, sep, value = piece.partition("=")
            if sep:
                found[key] = value
    return {k: found[k] for k in arm_keys if k in found}, found.get("seed")


def _constant_config(runs: list[RunRecord], keys: _TableKeys) -> dict:
    """Settings shared by every run, for the report (group options by the name chosen)."""
    if not runs:
        return {}
    first = runs[0]
    constant = {}
    for k in keys.config_keys:
        if k in keys.varying_config or k in keys.varying_choices or k.split(".")[0] == "study":
            continue
        value = first.config.get(k)
        if value is None and k in first.choices:
            # `launcher` and `experiment` are null placeholders in config.yaml (the schema
            # needs the key); the option chosen is in Hydra's choices, or none was chosen.
            value = first.choices[k]
            if value is None:
                continue
        constant[k] = value
    for k in keys.choice_keys:
        choice = first.choices.get(k)
        if k in keys.varying_choices or k in constant or choice is None:
            continue
        # a group choice is worth listing only when its node has no `name` saying the same
        if canonical(first.config.get(f"{k}.name")) != canonical(choice):
            constant[k] = choice
    return constant


def _ordered_union(dicts: Iterable[dict]) -> list[str]:
    keys: dict[str, None] = {}
    for d in dicts:
        keys.update(dict.fromkeys(d))
    return list(keys)


def _sort_runs(df: pd.DataFrame, arm_keys: list[str], grid: dict) -> pd.DataFrame:
    """Arms in grid declaration order (else natural order of values), then seeds ascending."""
    if df.empty:
        return df.reset_index(drop=True)
    sort_cols = []
    work = df.copy()
    for k in arm_keys:
        declared = [canonical(v) for v in grid.get(k, [])]
        canon = work[k].map(canonical)
        others = sorted(set(canon) - set(declared), key=_sort_key)
        rank = {c: i for i, c in enumerate(declared + others)}
        work[f"__rank_{k}"] = canon.map(rank)
        sort_cols.append(f"__rank_{k}")
    work["__seed"] = pd.to_numeric(work["seed"], errors="coerce")
    work["__path"] = work["path"]
    sort_cols += ["__seed", "__path"]
    work = work.sort_values(sort_cols, kind="stable", na_position="last")
    return df.loc[work.index].reset_index(drop=True)


def arm_order(df: pd.DataFrame) -> list[str]:
    """Arms in table order (collect sorts rows by the grid's declaration order)."""
    return list(pd.unique(df["arm"])) if "arm" in df else []


# --------------------------------------------------------------------------- writing


def write_results(df: pd.DataFrame, sweep_dir: str | Path) -> list[Path]:
    """results.csv, and results.parquet when pyarrow imports; both written atomically."""
    sweep_dir = Path(sweep_dir)
    written = [sweep_dir / RESULTS_CSV]
    atomic_write_text(written[0], df.to_csv(index=False))
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return written
    try:
        buf = io.BytesIO()
        _parquet_safe(df).to_parquet(buf, index=False)
        atomic_write_bytes(sweep_dir / RESULTS_PARQUET, buf.getvalue())
        written.append(sweep_dir / RESULTS_PARQUET)
    except Exception as e:  # a column pyarrow cannot type must not lose the CSV
        log.warning("%s not written: %s", RESULTS_PARQUET, _one_line(e))
    return written


def _parquet_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Columns mixing Python types (e.g. 0.9 and "auto") become text; parquet needs one type."""
    out = df.copy()
    out.attrs = {}
    for c in out.columns:
        if out[c].dtype == object:
            kinds = {type(v) for v in out[c] if v is not None and not _is_nan(v)}
            if len(kinds) > 1 or (kinds and not kinds <= {str, bool, int, float}):
                out[c] = out[c].map(lambda v: None if v is None or _is_nan(v) else str(v))
    return out


def _is_nan(v) -> bool:
    return isinstance(v, float) and math.isnan(v)


# --------------------------------------------------------------------------- per-run arrays


def _runs_to_read(df: pd.DataFrame, sweep_dir, statuses) -> tuple[Path, pd.DataFrame]:
    root = Path(sweep_dir if sweep_dir is not None else df.attrs.get("sweep_dir", "."))
    rows = df if statuses is None else df[df["status"].isin(list(statuses))]
    return root, rows


def load_curves(
    df: pd.DataFrame,
    column: str,
    sweep_dir: str | Path | None = None,
    statuses: Iterable[str] | None = ("ok",),
) -> pd.DataFrame:
    """history.csv `column` for every run (default: ok runs), long format.

    Returns columns arm, seed, path, step, <column>; rows where the value is missing or not
    finite are dropped (val_loss is empty on most rows). Runs without history.csv or without
    a value in the column are skipped with a logged warning; `attrs["skipped"]` lists them.
    """
    root, rows = _runs_to_read(df, sweep_dir, statuses)
    parts, skipped = [], []
    for _, run in rows.iterrows():
        path = root / run["path"] / HISTORY_FILE
        if not path.exists():
            skipped.append({"path": run["path"], "reason": f"no {HISTORY_FILE}"})
            continue
        try:
            history = read_history_rows(path)
        except (ValueError, csv.Error, UnicodeDecodeError, OSError) as e:
            skipped.append({"path": run["path"], "reason": f"unreadable ({_one_line(e)})"})
            continue
        steps = np.array([h["step"] for h in history if column in h], dtype=float)
        values = np.array([h[column] for h in history if column in h], dtype=float)
        if not len(values):
            skipped.append({"path": run["path"], "reason": f"{HISTORY_FILE} has no {column!r}"})
            continue
        keep = np.isfinite(values)
        if not keep.any():
            continue
        parts.append(
            pd.DataFrame(
                {
                    "arm": run["arm"],
                    "seed": run["seed"],
                    "path": run["path"],
                    "step": steps[keep].astype(int),
                    column: values[keep],
                }
            )
        )
    for s in skipped:
        log.warning("curves: skipping %s: %s", s["path"], s["reason"])
    out = (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(columns=["arm", "seed", "path", "step", column])
    )
    out.attrs["skipped"] = skipped
    return out


def load_diagnostic_profile(
    df: pd.DataFrame,
    key: str = "last_loss_grad_norm",
    record_index: int = -1,
    sweep_dir: str | Path | None = None,
    statuses: Iterable[str] | None = ("ok",),
) -> pd.DataFrame:
    """One row of a (n, T) diagnostics array per run, long format over chunk position.

    `record_index=-1` takes the last recorded step. Returns columns arm, seed, path,
    record_step, position (1..T), <key>. Runs without diagnostics.npz (record=false) or
    without the key are skipped; `attrs["skipped"]` lists them.
    """
    root, rows = _runs_to_read(df, sweep_dir, statuses)
    parts, skipped = [], []
    for _, run in rows.iterrows():
        path = root / run["path"] / DIAGNOSTICS_FILE
        if not path.exists():
            skipped.append({"path": run["path"], "reason": f"no {DIAGNOSTICS_FILE}"})
            continue
        try:
            arrays = read_npz(path)
        except RunDirError as e:
            skipped.append({"path": run["path"], "reason": str(e)})
            continue
        if key not in arrays:
            skipped.append({"path": run["path"], "reason": f"no {key!r} in {DIAGNOSTICS_FILE}"})
            continue
        arr, steps = np.asarray(arrays[key]), arrays.get("record_step")
        if arr.ndim != 2 or arr.shape[0] == 0:
            skipped.append({"path": run["path"], "reason": f"{key} has shape {arr.shape}"})
            continue
        row = arr[record_index]
        step = int(steps[record_index]) if steps is not None and len(steps) == len(arr) else -1
        parts.append(
            pd.DataFrame(
                {
                    "arm": run["arm"],
                    "seed": run["seed"],
                    "path": run["path"],
                    "record_step": step,
                    "position": np.arange(1, len(row) + 1),
                    key: np.abs(row).astype(float),
                }
            )
        )
    for s in skipped:
        log.warning("diagnostics: skipping %s: %s", s["path"], s["reason"])
    out = (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(columns=["arm", "seed", "path", "record_step", "position", key])
    )
    out.attrs["skipped"] = skipped
    return out


# --------------------------------------------------------------------------- command line


def status_counts(df: pd.DataFrame) -> dict[str, int]:
    """Runs per status, in rundir.COLLECT_STATUSES order, then any unknown status."""
    if not len(df):
        return {}
    counts = {str(k): int(v) for k, v in df["status"].value_counts().items()}
    order = [s for s in COLLECT_STATUSES if s in counts] + sorted(
        s for s in counts if s not in COLLECT_STATUSES
    )
    return {s: counts[s] for s in order}


def main_collect(argv: list[str] | None = None) -> int:
    """`rnn-lab collect DIR`: write DIR/results.csv and say where it went."""
    parser = argparse.ArgumentParser(
        prog="rnn-lab collect", description=f"Collect a sweep's runs into DIR/{RESULTS_CSV}."
    )
    parser.add_argument("dir", help="sweep directory (e.g. multirun/2024-01-01/12-00-00)")
    args = parser.parse_args(argv)
    sweep_dir = Path(args.dir)
    if not sweep_dir.is_dir():
        print(f"rnn-lab collect: no such directory: {sweep_dir}", file=sys.stderr)
        return 2
    df = collect(sweep_dir, write=True)
    counts = ", ".join(f"{n} {s}" for s, n in status_counts(df).items()) or "none"
    print(f"collected {len(df)} runs ({counts}) from {sweep_dir}")
    for _, run in df[df["status"].isin([DAMAGED, CONFLICT])].iterrows():
        print(f"  {run['status']} {run['path']}: {run['error']}")
    for w in df.attrs["warnings"]:
        print(f"  skipped {w['path']}: {w['reason']}")
    outputs = [sweep_dir / RESULTS_CSV]
    if (sweep_dir / RESULTS_PARQUET).exists():
        outputs.append(sweep_dir / RESULTS_PARQUET)
    print("wrote " + ", ".join(str(p) for p in outputs))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    sys.exit(main_collect())
