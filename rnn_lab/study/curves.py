"""Per-run arrays of a collected sweep, long format for the figures: a history.csv column over
steps (:func:`load_curves`), a diagnostics.npz profile over chunk positions
(:func:`load_diagnostic_profile`).

Both take the table ``collect`` returned and read the run directories it names; a run without
the file or the column is skipped with a logged warning and listed in ``attrs["skipped"]``.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from rnn_lab.run.rundir import (
    DIAGNOSTICS_FILE,
    HISTORY_FILE,
    RunDirError,
    read_history_rows,
    read_npz,
)
from rnn_lab.study.run_records import one_line

log = logging.getLogger(__name__)


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
            skipped.append({"path": run["path"], "reason": f"unreadable ({one_line(e)})"})
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
