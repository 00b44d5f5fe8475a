"""Collect a sweep's run directories into one pandas table, one row per run.

The runs are read by ``rnn_lab.study.run_records`` (run directories only: this package never
imports the engine or the training loop, so a table can be built from a sweep copied off
another machine); the grid and the values' spelling come from ``rnn_lab.study.grid``; the
per-run curves the figures need are read by ``rnn_lab.study.curves``.

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
import io
import logging
import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from rnn_lab.run.rundir import (
    COLLECT_STATUSES,
    CONFLICT,
    DAMAGED,
    INCOMPLETE,
    MULTIRUN_FILE,
    RESULTS_CSV,
    RESULTS_PARQUET,
    RUNNING,
    atomic_write_bytes,
    atomic_write_text,
    read_conflicts,
)
from rnn_lab.study.grid import arm_label, canonical, declared_grid, value_sort_key
from rnn_lab.study.run_records import (
    CELL_KEY,
    DEFAULT_CELL,
    RunRecord,
    one_line,
    read_multirun_yaml,
    read_runs,
    read_sweep_interrupted,
    relpath,
)

log = logging.getLogger(__name__)

# Columns every results table has, in this order, ahead of the varying config keys and metrics.
LEADING_COLUMNS = ["path", "arm"]
# Summary fields that are text, kept at the end of the table.
TEXT_SUMMARY_FIELDS = ["run_id", "error", "sample"]


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
    runs, warnings = read_runs(sweep_dir)
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
    row = {"path": relpath(r.path, sweep_dir)}
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
            # `launcher` and `experiment` (the old name of the `study` group) are null
            # placeholders in config.yaml (the schema needs the key); the option chosen is in
            # Hydra's choices, or none was chosen. A `study` choice is the study's own name.
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
        others = sorted(set(canon) - set(declared), key=value_sort_key)
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
        log.warning("%s not written: %s", RESULTS_PARQUET, one_line(e))
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
