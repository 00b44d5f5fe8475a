"""Compare two or more sweep folders of the same grid, arm by arm.

The folders are the same study run twice: before and after a code change, on two corpora, at
two step budgets. ``compare(dirs)`` collects each folder (`rnn_lab.study.collect`) and:

- finds the folders' *difference*: the result-changing config keys that are constant inside
  every folder but not the same in all of them (``steps=30`` vs ``steps=60``); bookkeeping
  keys (``resume``, ``analyze``, the launcher, the tracker, ...) never count;
- matches arms across folders by their settings: the union of the folders' arm keys (the grid
  keys that vary inside a folder), minus the difference keys; an arm in only some folders is
  listed, never dropped;
- per metric and arm, each folder's mean over its ok seeds with a t-based 95% CI, and each
  later folder against the first (the reference): the difference later − reference with the
  paired t-test over shared seeds (Welch's t-test when fewer than 2 seeds are shared;
  ``stats.compare_pair``), Holm-adjusted across the arms of one metric and folder pair.

``write_compare_report`` writes the markdown report, its CSV and its plot; ``main_compare`` is
``rnn-lab compare DIR_A DIR_B [DIR_C ...]``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from rnn_lab.run.rundir import atomic_write_text
from rnn_lab.run.settings import BOOKKEEPING_KEYS
from rnn_lab.study.collect import collect, status_counts
from rnn_lab.study.grid import STUDY_GROUPS, arm_label, canonical, format_value
from rnn_lab.study.markdown import markdown_table
from rnn_lab.study.stats import (
    ALPHA,
    compare_pair,
    describe_comparison,
    fmt_number,
    fmt_p,
    holm_adjust,
    mean_ci,
    metric_axis_label,
    metric_direction,
    status_group,
)

log = logging.getLogger(__name__)

REPORT_NAME = "compare.md"  # in the output folder, with compare.csv and compare.png beside it


def default_out_dir(dirs: Sequence[str | Path]) -> Path:
    """Beside the first sweep: compare-<first>-vs-<second>[-and-N-more]/ (never the cwd)."""
    names = [Path(d).resolve().name for d in dirs]
    name = f"compare-{names[0]}-vs-{names[1]}" if len(names) > 1 else f"compare-{names[0]}"
    if len(names) > 2:
        name += f"-and-{len(names) - 2}-more"
    return Path(dirs[0]).resolve().parent / name


# Config keys that never make two folders different: how a run was launched, logged, kept.
NOT_A_DIFFERENCE = set(BOOKKEEPING_KEYS) | {"launcher", *STUDY_GROUPS}
NOT_A_DIFFERENCE_PREFIXES = ("launcher.", "logger", "hydra.", "study.")

COLUMNS = [
    "metric", "arm", "folder", "dir", "present", "n_runs", "n_ok", "n", "mean", "std",
    "ci_low", "ci_high", "reference", "test", "n_pairs", "diff", "diff_ci_low",
    "diff_ci_high", "t", "dof", "p", "p_holm", "effect_size", "effect_name", "significant",
    "note",
]  # fmt: skip


@dataclass
class Folder:
    """One collected sweep folder and its label in tables and plots."""

    label: str
    path: Path
    df: pd.DataFrame


@dataclass
class Comparison:
    """What a report needs: the table, the per-seed values behind it, the folders."""

    table: pd.DataFrame  # see compare()
    runs: pd.DataFrame  # folder, arm, seed, metric, value: every ok run's value
    folders: list[Folder]


# --------------------------------------------------------------------------- matching


def key_values(df: pd.DataFrame, key: str) -> pd.Series:
    """A config key's value on every row: its column, else the folder's constant value."""
    if key in df.columns:
        return df[key]
    constant = (df.attrs.get("constant_config") or {}).get(key)
    return pd.Series([constant] * len(df), index=df.index, dtype=object)


def _counts_as_difference(key: str) -> bool:
    return key not in NOT_A_DIFFERENCE and not key.startswith(NOT_A_DIFFERENCE_PREFIXES)


def folder_difference(frames: Sequence[pd.DataFrame]) -> dict[str, list]:
    """Keys constant inside every folder whose value is not the same in all folders:
    key -> the value in each folder (None where a folder lacks the key)."""
    keys: dict[str, None] = {}
    for df in frames:
        keys.update(dict.fromkeys(df.attrs.get("constant_config") or {}))
        keys.update(dict.fromkeys(df.attrs.get("grid") or {}))
    arm_keys = {k for df in frames for k in df.attrs.get("arm_keys", [])}
    out = {}
    for key in keys:
        if key in arm_keys or key == "seed" or not _counts_as_difference(key):
            continue
        per_folder = []
        for df in frames:
            values = {canonical(v): v for v in key_values(df, key)}
            per_folder.append(values if len(values) <= 1 else None)
        if any(v is None for v in per_folder):
            continue  # varies inside a folder: part of the grid, not of the difference
        canon = {next(iter(v), "null") for v in per_folder}
        if len(canon) > 1:
            out[key] = [next(iter(v.values()), None) for v in per_folder]
    return out


def shared_arm_keys(frames: Sequence[pd.DataFrame], difference: dict) -> list[str]:
    """The union of the folders' arm keys, in first-seen order, without the difference."""
    keys: dict[str, None] = {}
    for df in frames:
        keys.update(dict.fromkeys(df.attrs.get("arm_keys", [])))
    return [k for k in keys if k not in difference]


def _folder_labels(dirs: Sequence[Path], difference: dict) -> list[str]:
    """ "steps=30" from the difference when that tells the folders apart, else the folder's
    name, else the path as given (numbered when a folder is given twice)."""
    if difference:
        labels = [
            ", ".join(f"{k}={format_value(v[i])}" for k, v in difference.items())
            for i in range(len(dirs))
        ]
        if len(set(labels)) == len(labels):
            return labels
    for labels in ([d.name or str(d) for d in dirs], [str(d) for d in dirs]):
        if len(set(labels)) == len(labels):
            return labels
    return [f"{i}: {d}" for i, d in enumerate(dirs, 1)]  # one folder given twice


def _match_arms(folders: Sequence[Folder], arm_keys: list[str]) -> list[str]:
    """Label every run with its shared arm (column `cmp_arm`); return the arms in order:
    the first folder's order, then arms first seen in later folders."""
    labels: dict[tuple, str] = {}
    for folder in folders:
        df = folder.df
        values = {k: key_values(df, k) for k in arm_keys}
        arms = []
        for i in df.index:
            raw = {k: values[k].loc[i] for k in arm_keys}
            key = tuple(canonical(v) for v in raw.values())
            arms.append(labels.setdefault(key, arm_label(raw)))
        df["cmp_arm"] = pd.Series(arms, index=df.index, dtype=object)
    return list(dict.fromkeys(labels.values()))


def _default_metrics(folders: Sequence[Folder]) -> list[str]:
    """The studies' declared metrics found in some folder, else the report's defaults."""
    from rnn_lab.study.report import DEFAULT_METRICS

    declared: dict[str, None] = {}
    for folder in folders:
        declared.update(dict.fromkeys((folder.df.attrs.get("study") or {}).get("metrics") or []))
    present = [m for m in declared if any(m in f.df.columns for f in folders)]
    return present or [m for m in DEFAULT_METRICS if any(m in f.df.columns for f in folders)]


# --------------------------------------------------------------------------- numbers


def _ok_by_seed(df: pd.DataFrame, arm: str, metric: str) -> pd.Series:
    """The metric of the arm's ok runs by seed (a seed run twice: its mean)."""
    runs = df[(df["cmp_arm"] == arm) & (df["status"].map(status_group) == "ok")]
    if metric not in runs or runs.empty:
        return pd.Series(dtype=float)
    values = pd.to_numeric(runs[metric], errors="coerce")
    keep = np.isfinite(values)
    return values[keep].groupby(runs.loc[keep, "seed"]).mean()


def _folder_row(folder: Folder, metric: str, arm: str) -> dict:
    runs = folder.df[folder.df["cmp_arm"] == arm]
    values = _ok_by_seed(folder.df, arm, metric)
    summary = mean_ci(values.tolist())
    return {
        "metric": metric,
        "arm": arm,
        "folder": folder.label,
        "dir": str(folder.path),
        "present": bool(len(runs)),
        "n_runs": len(runs),
        "n_ok": int((runs["status"].map(status_group) == "ok").sum()),
        **{k: summary[k] for k in ("n", "mean", "std", "ci_low", "ci_high")},
    }


def _difference(folder: Folder, reference: Folder, metric: str, arm: str) -> dict:
    """folder − reference for one arm: compare_pair's numbers under this table's names."""
    result = compare_pair(
        _ok_by_seed(folder.df, arm, metric), _ok_by_seed(reference.df, arm, metric)
    )
    out = {k: result[k] for k in ("test", "n_pairs", "diff", "t", "dof", "p", "note")}
    out.update(
        reference=reference.label,
        diff_ci_low=result["ci_low"],
        diff_ci_high=result["ci_high"],
        effect_size=result["effect_size"],
        effect_name=result["effect_name"],
        n_folder=result["n_arm"],
        n_reference=result["n_baseline"],
    )
    return out


def _metric_rows(folders: Sequence[Folder], metric: str, arms: list[str], alpha: float):
    """Every (arm, folder) row of one metric; Holm within each later folder's arms."""
    reference = folders[0]
    rows = []
    for later in folders[1:]:
        family = []
        for arm in arms:
            row = {**_folder_row(later, metric, arm), "reference": reference.label}
            if row["present"] and (reference.df["cmp_arm"] == arm).any():
                row.update(_difference(later, reference, metric, arm))
                family.append(row)
            rows.append(row)
        for row, p_holm in zip(family, holm_adjust([r["p"] for r in family])):
            row["p_holm"] = float(p_holm)
            row["significant"] = bool(np.isfinite(p_holm) and p_holm < alpha)
    first = [_folder_row(reference, metric, arm) for arm in arms]
    # Table order: per arm, the reference folder first, then the others in the order given.
    order = {f.label: i for i, f in enumerate(folders)}
    rows = first + rows
    rows.sort(key=lambda r: (arms.index(r["arm"]), order[r["folder"]]))
    return rows


def _runs_long(folders: Sequence[Folder], metrics: Sequence[str]) -> pd.DataFrame:
    parts = []
    for folder in folders:
        ok = folder.df[folder.df["status"].map(status_group) == "ok"]
        for metric in metrics:
            if metric not in ok:
                continue
            values = pd.to_numeric(ok[metric], errors="coerce")
            keep = np.isfinite(values)
            parts.append(
                pd.DataFrame(
                    {
                        "folder": folder.label,
                        "arm": ok.loc[keep, "cmp_arm"],
                        "seed": ok.loc[keep, "seed"],
                        "metric": metric,
                        "value": values[keep].astype(float),
                    }
                )
            )
    columns = ["folder", "arm", "seed", "metric", "value"]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


def compare_folders(
    dirs: Sequence[str | Path], metrics: Sequence[str] | None = None, alpha: float = ALPHA
) -> Comparison:
    """The comparison and what its report and plot need (see compare())."""
    dirs = [Path(d) for d in dirs]
    if len(dirs) < 2:
        raise ValueError(f"compare needs two or more sweep folders, got {len(dirs)}")
    for d in dirs:
        if not d.is_dir():
            raise FileNotFoundError(f"no such sweep directory: {d}")
    frames = [collect(d, write=False) for d in dirs]
    for d, df in zip(dirs, frames):
        if df.empty:
            raise ValueError(f"{d} holds no runs")
    difference = folder_difference(frames)
    arm_keys = shared_arm_keys(frames, difference)
    labels = _folder_labels(dirs, difference)
    folders = [Folder(lb, d, df.copy()) for lb, d, df in zip(labels, dirs, frames)]
    arms = _match_arms(folders, arm_keys)
    metrics = list(metrics) if metrics else _default_metrics(folders)
    rows = [r for m in metrics for r in _metric_rows(folders, m, arms, alpha)]
    table = pd.DataFrame(rows)
    table = table.reindex(columns=COLUMNS + ["n_folder", "n_reference"])
    table["significant"] = table["significant"].astype("boolean").fillna(False).astype(bool)
    table.attrs.update(
        folders=[{"label": f.label, "dir": str(f.path)} for f in folders],
        reference=folders[0].label,
        difference={k: [format_value(v) for v in vs] for k, vs in difference.items()},
        arm_keys=arm_keys,
        arms=arms,
        metrics=metrics,
        only_in=_only_in(folders, arms),
        alpha=alpha,
        notes=_notes(folders, metrics, frames),
    )
    return Comparison(table=table, runs=_runs_long(folders, metrics), folders=folders)


def compare(
    dirs: Sequence[str | Path], metrics: Sequence[str] | None = None, alpha: float = ALPHA
) -> pd.DataFrame:
    """Two or more sweep folders of the same grid, side by side, arm by arm.

    One row per (metric, arm, folder): `present` (the folder has runs of the arm), `n_runs`,
    `n_ok`, and over the arm's ok runs `n` (finite values), `mean`, `std`, `ci_low`,
    `ci_high` (t-based 95% CI of the mean). Rows of every folder after the first (the
    `reference`) also hold the difference folder − reference: `test` (paired t over shared
    seeds; Welch t with fewer than 2 shared seeds; none), `n_pairs`, `diff`, `diff_ci_low`,
    `diff_ci_high`, `t`, `dof`, `p`, `p_holm` (Holm across the arms of one metric and
    folder), `effect_size` (`effect_name` d_z or d), `significant` (p_holm < alpha), `note`.

    `metrics` defaults to the studies' declared metrics. `attrs`: `folders` (label, dir),
    `reference`, `difference` (key -> value per folder), `arm_keys` (what arms are matched
    on), `arms`, `metrics`, `only_in` (arm -> the folders that have it, for arms missing
    somewhere), `alpha`, `notes`.
    """
    return compare_folders(dirs, metrics, alpha).table


def _only_in(folders: Sequence[Folder], arms: list[str]) -> dict[str, list[str]]:
    out = {}
    for arm in arms:
        having = [f.label for f in folders if (f.df["cmp_arm"] == arm).any()]
        if len(having) < len(folders):
            out[arm] = having
    return out


def _notes(folders: Sequence[Folder], metrics: Sequence[str], frames) -> list[str]:
    notes = []
    names = {str((df.attrs.get("study") or {}).get("name")) for df in frames}
    if len(names) > 1:
        notes.append(f"the folders hold different studies ({', '.join(sorted(names))})")
    for folder in folders:
        missing = [m for m in metrics if m not in folder.df.columns]
        if missing:
            notes.append(f"{folder.label} has no {', '.join(missing)}")
    return notes


# --------------------------------------------------------------------------- the report


def _cell(row) -> str:
    """A folder's cell: "2.91 [2.85, 2.97] (n=2)", "absent", "no ok runs (0 / 3)", "no value"."""
    if not row["present"]:
        return "absent"
    if not row["n"]:
        return "no value" if row["n_ok"] else f"no ok runs (0 / {row['n_runs']})"
    text = fmt_number(row["mean"], strip_zeros=False)
    if np.isfinite(row["ci_low"]):
        low = fmt_number(row["ci_low"], strip_zeros=False)
        text += f" [{low}, {fmt_number(row['ci_high'], strip_zeros=False)}]"
    text += f" (n={row['n']}"
    return text + (f" of {row['n_runs']})" if row["n_ok"] < row["n_runs"] else ")")


def _p_text(p) -> str:
    return fmt_p(p).replace("p = ", "").replace("p ", "")


def _diff_cells(row) -> list[str]:
    if not isinstance(row["test"], str):
        return ["—", "not compared: the arm is not in both folders", "", ""]
    if row["test"] == "none":
        return ["—", f"none: {row['note']}", "", ""]
    diff = fmt_number(row["diff"], strip_zeros=False)
    if np.isfinite(row["diff_ci_low"]):
        low = fmt_number(row["diff_ci_low"], strip_zeros=False)
        diff += f" [{low}, {fmt_number(row['diff_ci_high'], strip_zeros=False)}]"
    test = f"{row['test']}, {int(row['n_pairs'])} shared seeds"
    star = " *" if row["significant"] else ""
    return [diff, test, _p_text(row["p"]), _p_text(row["p_holm"]) + star]


def _metric_section(table: pd.DataFrame, metric: str) -> list[str]:
    rows = table[table["metric"] == metric]
    folders = [f["label"] for f in table.attrs["folders"]]
    reference = table.attrs["reference"]
    direction = {"lower": ", lower is better", "higher": ", higher is better"}
    out = [f"## {metric_axis_label(metric)}{direction.get(metric_direction(metric), '')}\n"]
    for later in folders[1:]:
        header = ["arm", *folders, f"{later} − {reference} [95% CI]", "test", "p", "p (Holm)"]
        body = []
        for arm in table.attrs["arms"]:
            per_arm = rows[rows["arm"] == arm].set_index("folder")
            body.append([arm, *(_cell(per_arm.loc[f]) for f in folders)])
            body[-1] += _diff_cells(per_arm.loc[later])
        out += [markdown_table(header, body), ""]
        out += [f"- {_sentence(row)}" for _, row in rows[rows["folder"] == later].iterrows()]
        out.append("")
    return out


def _sentence(row) -> str:
    """describe_comparison with the folders as the two sides, under the arm's name."""
    if not isinstance(row["test"], str):
        missing = row["reference"] if row["present"] else row["folder"]
        return f"{row['arm']}: not compared, no runs in {missing}."
    as_pair = {
        "metric": row["metric"],
        "arm": row["folder"],
        "baseline": row["reference"],
        "test": row["test"],
        "n_pairs": int(row["n_pairs"]),
        "n_arm": int(row["n_folder"]),
        "n_baseline": int(row["n_reference"]),
        "diff": row["diff"],
        "ci_low": row["diff_ci_low"],
        "ci_high": row["diff_ci_high"],
        "p_holm": row["p_holm"],
        "effect_size": row["effect_size"],
        "effect_name": row["effect_name"],
        "note": row["note"],
    }
    return f"{row['arm']}: {describe_comparison(as_pair)}"


def compare_markdown(result: Comparison, plot_name: str | None, csv_name: str | None) -> str:
    """The comparison report as markdown (the plot and CSV linked by these names)."""
    table = result.table
    a = table.attrs
    out = [f"# Comparing {len(result.folders)} sweeps\n"]
    out.append(f"Built {datetime.now():%Y-%m-%d %H:%M}. Reference: **{a['reference']}**.\n")
    folder_rows = []
    for f in result.folders:
        counts = ", ".join(f"{n} {s}" for s, n in status_counts(f.df).items())
        folder_rows.append([f.label, f"`{f.path}`", f"{len(f.df)} ({counts})"])
    out += [markdown_table(["folder", "path", "runs"], folder_rows), ""]
    out += _difference_md(table)
    out += [f"*Note: {n}.*\n" for n in a["notes"]]
    out += _only_in_md(table)
    if plot_name:
        out += [f"![metric per arm per folder]({plot_name})\n"]
    for metric in a["metrics"]:
        out += _metric_section(table, metric)
    if csv_name:
        out.append(f"All numbers: [`{csv_name}`]({csv_name}).\n")
    return "\n".join(out)


def _difference_md(table: pd.DataFrame) -> list[str]:
    a = table.attrs
    if a["difference"]:
        what = "; ".join(f"`{k}`: {' vs '.join(vs)}" for k, vs in a["difference"].items())
        out = [f"The folders differ in {what}.\n"]
    else:
        out = ["The folders have the same settings (no result-changing key differs).\n"]
    matched = ", ".join(f"`{k}`" for k in a["arm_keys"]) or "nothing (one arm per folder)"
    out.append(
        f"Arms are matched on {matched}. Each cell is the mean over the arm's ok seeds with "
        "its 95% CI (t-based; none with one seed). Each difference is folder − "
        f"{a['reference']} per arm: paired t-test over the seeds both folders ran (Welch's "
        "t-test when fewer than 2 are shared), Holm-adjusted across the arms of each metric, "
        f"α = {a['alpha']}; `*` marks p (Holm) < α. The CIs of differences are per arm, not "
        "adjusted.\n"
    )
    return out


def _only_in_md(table: pd.DataFrame) -> list[str]:
    only_in = table.attrs["only_in"]
    if not only_in:
        return ["Every arm is in every folder.\n"]
    out = ["## Arms not in every folder\n"]
    out += [f"- {arm}: only in {', '.join(having)}" for arm, having in only_in.items()]
    return out + [""]


def write_compare_report(
    dirs: Sequence[str | Path], out_dir: str | Path | None = None, metrics=None
) -> Comparison:
    """compare.md, compare.png and compare.csv in `out_dir` (default: beside the first
    sweep, :func:`default_out_dir`)."""
    from rnn_lab.inspect.figure_io import PlotSkipped
    from rnn_lab.study.figures import plot_folder_comparison

    result = compare_folders(dirs, metrics)
    out = Path(out_dir if out_dir is not None else default_out_dir(dirs)) / REPORT_NAME
    out.parent.mkdir(parents=True, exist_ok=True)
    plot, csv = out.with_suffix(".png"), out.with_suffix(".csv")
    atomic_write_text(csv, result.table.to_csv(index=False))
    try:
        plot_folder_comparison(result.table, result.runs, plot)
        plot_name = plot.name
    except PlotSkipped as e:
        log.warning("compare plot not drawn: %s", e)
        plot.unlink(missing_ok=True)
        plot_name = None
    atomic_write_text(out, compare_markdown(result, plot_name, csv.name))
    return result


def _terminal_lines(table: pd.DataFrame) -> list[str]:
    """One line per (metric, arm, later folder) for the terminal."""
    lines = []
    for _, row in table[table["test"].notna()].iterrows():
        diff = _diff_cells(row)
        lines.append(
            f"{row['metric']:<16} {row['arm']}: {row['folder']} − {row['reference']} = "
            f"{diff[0]}, {diff[1]}, p(Holm) {diff[3] or 'n/a'}"
        )
    return lines


def main_compare(argv: list[str] | None = None) -> int:
    """`rnn-lab compare DIR_A DIR_B [DIR_C ...]`: the comparison report, and where it went."""
    parser = argparse.ArgumentParser(
        prog="rnn-lab compare",
        description="Compare two or more sweep folders of the same grid (the same study before "
        "and after a change, on two corpora, at two step budgets): arms matched by their "
        "settings, metrics side by side with 95% CIs, each folder against the first with a "
        "paired test over shared seeds (Holm across arms).",
    )
    parser.add_argument("dirs", nargs="+", help="sweep folders; the first is the reference")
    parser.add_argument(
        "--metrics", default=None, help="comma-separated metrics (default: the study's metrics)"
    )
    parser.add_argument(
        "--out",
        default=None,
        type=Path,
        help=f"folder for {REPORT_NAME}, its plot (.png) and table (.csv) (default: "
        "compare-<first>-vs-<second>/ beside the first sweep)",
    )
    args = parser.parse_args(argv)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    try:
        result = write_compare_report(args.dirs, args.out, metrics)
    except (ValueError, FileNotFoundError) as e:
        print(f"rnn-lab compare: {e}", file=sys.stderr)
        return 2
    for line in _terminal_lines(result.table):
        print(line)
    for arm, having in result.table.attrs["only_in"].items():
        print(f"only in {', '.join(having)}: {arm}")
    out = (args.out if args.out is not None else default_out_dir(args.dirs)) / REPORT_NAME
    beside = f"plot {out.with_suffix('.png')}, table {out.with_suffix('.csv')}"
    print(f"compare report: {out} ({beside})")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    sys.exit(main_compare())
