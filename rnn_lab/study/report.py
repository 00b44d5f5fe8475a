"""Turn a sweep directory into answers: tables, plots and a markdown report.

`build_report(sweep_dir)` collects the runs (`rnn_lab.study.collect`), aggregates them over seeds
and compares arms (`rnn_lab.study.stats`), draws the plots into `<sweep_dir>/plots/` and writes
`<sweep_dir>/report.md`, which links everything else. Every file is written atomically.
A plot whose data is absent is skipped and the report says why.
"""

from __future__ import annotations

import argparse
import io
import logging
import math
import shlex
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # reports are built in sweeps and CI, never on a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy import stats as sps  # noqa: E402

from rnn_lab.run.rundir import atomic_write_bytes, atomic_write_text  # noqa: E402
from rnn_lab.study.collect import (  # noqa: E402
    RESULTS_CSV,
    RESULTS_PARQUET,
    arm_order,
    canonical,
    collect,
    format_value,
    load_curves,
    load_diagnostic_profile,
    status_counts,
)
from rnn_lab.study.stats import (  # noqa: E402
    ALPHA,
    CONFIDENCE,
    aggregate,
    compare_to_baseline,
    describe_comparison,
    fmt_number,
    grid_ledger,
    metric_axis_label,
    metric_direction,
    status_group,
)

log = logging.getLogger(__name__)

DEFAULT_METRICS = ["final_loss", "val_loss", "spectral_radius"]
REPORT_FILE = "report.md"
SUMMARY_TABLE = "summary_table.csv"
COMPARISONS_TABLE = "comparisons.csv"
PLOTS_DIR = "plots"
DPI = 110


class PlotSkipped(Exception):
    """A plot that has no data to show; the message goes into the report."""


# --------------------------------------------------------------------------- study settings


def study_settings(df: pd.DataFrame) -> dict:
    """The study's name, question, expectation, baseline, metrics and axes, with defaults.

    Metrics default to final_loss, val_loss, spectral_radius; only those present in the table
    are used (the others are listed in `missing_metrics`). Axes default to the arm keys; a
    declared axis is matched to a column by name, or `X` to `X.name` and back.
    """
    study = dict(df.attrs.get("study") or {})
    arm_keys = list(df.attrs.get("arm_keys", []))
    metrics = _as_list(study.get("metrics")) or list(DEFAULT_METRICS)
    present = [m for m in metrics if m in df.columns]
    axes = [_resolve_column(df, a) for a in _as_list(study.get("axes"))] or arm_keys
    return {
        "name": study.get("name"),
        "question": study.get("question"),
        "expect": study.get("expect"),
        "baseline": study.get("baseline") or {},
        "metrics": present,
        "missing_metrics": [m for m in metrics if m not in df.columns],
        "axes": [a for a in axes if a in df.columns],
        "declared_axes": _as_list(study.get("axes")),
    }


def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value)


def _resolve_column(df: pd.DataFrame, name: str) -> str:
    if name in df.columns:
        return name
    if f"{name}.name" in df.columns:
        return f"{name}.name"
    if name.endswith(".name") and name[: -len(".name")] in df.columns:
        return name[: -len(".name")]
    return name


# --------------------------------------------------------------------------- plotting helpers


def arm_colors(arms: Sequence[str]) -> dict[str, tuple]:
    """One color per arm, the same in every plot of a report."""
    n = len(arms)
    if n <= 10:
        cmap, positions = plt.get_cmap("tab10"), range(n)
        return {a: cmap(i) for a, i in zip(arms, positions)}
    if n <= 20:
        cmap = plt.get_cmap("tab20")
        return {a: cmap(i) for i, a in enumerate(arms)}
    cmap = plt.get_cmap("viridis")
    return {a: cmap(i / max(1, n - 1)) for i, a in enumerate(arms)}


def save_figure(fig, path: Path) -> Path:
    """PNG written atomically (rendered in memory, then renamed into place)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _legend_below(fig, handles, labels):
    """One legend under the axes, as many columns as the figure's width allows."""
    if not handles:
        return
    chars_per_inch = 14  # at fontsize "small"
    room = fig.get_figwidth() * chars_per_inch
    per_entry = max(len(lb) for lb in labels) + 6  # + the line sample and padding
    ncol = int(max(1, min(len(labels), room // per_entry, 4)))
    fig.legend(
        handles,
        labels,
        loc="outside lower center",
        ncol=ncol,
        frameon=False,
        fontsize="small",
        title="arm",
        title_fontsize="small",
    )


# Below this many seeds a t-based 95% CI is wider than the data (t = 12.7 for 2 seeds), so
# curve plots shade the seed range instead and say so.
MIN_SEEDS_FOR_CI_BAND = 3


def curve_band(curves: pd.DataFrame, column: str, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Per arm and step: mean over runs, t-based CI, min and max, number of runs at that step.

    Runs recorded at the same steps are averaged step by step; when their steps differ, each
    run is linearly interpolated onto the union of steps, inside its own range only.
    """
    columns = ["arm", "step", "mean", "ci_low", "ci_high", "min", "max", "n"]
    out = []
    for arm, runs in curves.groupby("arm", sort=False):
        steps = np.unique(runs["step"].to_numpy())
        stacked = []
        for _, run in runs.groupby("path", sort=False):
            run = run.sort_values("step")
            x, y = run["step"].to_numpy(float), run[column].to_numpy(float)
            values = np.interp(steps, x, y)
            values[(steps < x[0]) | (steps > x[-1])] = np.nan
            stacked.append(values)
        stacked = np.vstack(stacked)
        n = np.sum(np.isfinite(stacked), axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.nanmean(stacked, axis=0)
            if len(stacked) > 1:
                std = np.nanstd(stacked, axis=0, ddof=1)
            else:
                std = np.full_like(mean, np.nan)
            tcrit = np.where(n >= 2, sps.t.ppf(0.5 + confidence / 2, np.maximum(n - 1, 1)), np.nan)
            half = tcrit * std / np.sqrt(n)
        frame = {
            "arm": arm,
            "step": steps,
            "mean": mean,
            "ci_low": mean - half,
            "ci_high": mean + half,
            "min": np.nanmin(stacked, axis=0),
            "max": np.nanmax(stacked, axis=0),
            "n": n,
        }
        out.append(pd.DataFrame(frame, columns=columns))
    if not out:
        return pd.DataFrame(columns=columns)
    return pd.concat(out, ignore_index=True)


def _draw_band(ax, band: pd.DataFrame, color, label) -> str:
    """Mean line and a shaded band; returns what the band shows ("95% CI" or "min-max")."""
    steps = band["step"].to_numpy(float)
    # Sparse curves (validation every 500 steps, short runs) need markers to be visible at all.
    marker = "o" if len(steps) <= 12 else None
    ax.plot(steps, band["mean"], color=color, lw=1.6, label=label, marker=marker, ms=4)
    use_ci = np.median(band["n"]) >= MIN_SEEDS_FOR_CI_BAND
    low, high = ("ci_low", "ci_high") if use_ci else ("min", "max")
    lo, hi = band[low].to_numpy(float), band[high].to_numpy(float)
    ok = np.isfinite(lo) & np.isfinite(hi) & (band["n"].to_numpy() >= 2)
    if ok.any():
        ax.fill_between(steps, lo, hi, where=ok, color=color, alpha=0.2, lw=0)
    return "95% CI" if use_ci else "min-max"


def _robust_ylim(ax, band: pd.DataFrame, floor: float | None = None) -> None:
    """Y range covering every mean but only the 1st-99th percentile of the bands, so the band
    of one early spike of one seed (up to 12 nats at step 10) does not flatten every curve."""
    values = band[["mean", "ci_low", "ci_high", "min", "max"]].to_numpy(float).ravel()
    values = values[np.isfinite(values)]
    if len(values) < 20:  # too few points for percentiles to mean anything
        return
    lo, hi = np.percentile(values, [1, 99])
    means = band["mean"].to_numpy(float)
    lo, hi = min(lo, np.nanmin(means)), max(hi, np.nanmax(means))  # every mean stays visible
    pad = 0.05 * (hi - lo) if hi > lo else 0.05 * abs(hi) + 1e-3
    low = lo - pad if floor is None else max(floor, lo - pad)
    ax.set_ylim(low, hi + pad)


def _band_text(kinds: set[str]) -> str:
    if kinds == {"95% CI"}:
        return "band: 95% CI over seeds"
    if kinds == {"min-max"}:
        return "band: min-max over seeds"
    return f"band: 95% CI, or min-max for arms with < {MIN_SEEDS_FOR_CI_BAND} seeds"


def _n_seeds_text(curves: pd.DataFrame) -> str:
    per_arm = curves.groupby("arm")["path"].nunique()
    lo, hi = int(per_arm.min()), int(per_arm.max())
    return f"{lo} seeds per arm" if lo == hi else f"{lo}-{hi} seeds per arm"


# --------------------------------------------------------------------------- the plots


def plot_loss_curves(df: pd.DataFrame, out: Path, colors: dict) -> Path:
    """(a) training and validation loss per arm: mean over seeds, 95% CI (or range) band."""
    loss = load_curves(df, "loss")
    val = load_curves(df, "val_loss")
    panels = [(c, t) for c, t in ((loss, "training loss"), (val, "validation loss")) if len(c)]
    if not panels:
        raise PlotSkipped("no ok run has a history.csv with loss values")
    fig, axes = plt.subplots(
        1, len(panels), figsize=(6.2 * len(panels), 4.6), layout="constrained", squeeze=False
    )
    column_of = {"training loss": "loss", "validation loss": "val_loss"}
    for ax, (curves, title) in zip(axes[0], panels):
        band = curve_band(curves, column_of[title])
        kinds = {
            _draw_band(ax, band[band["arm"] == arm], colors[arm], arm)
            for arm in arm_order(df)
            if arm in set(band["arm"])
        }
        ax.set_title(f"{title}\n({_n_seeds_text(curves)}; {_band_text(kinds)})", fontsize="medium")
        _robust_ylim(ax, band, floor=0.0)
        ax.set_xlabel("training step")
        ax.set_ylabel("loss (nats/char)")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    _legend_below(fig, handles, labels)
    fig.suptitle("Loss over training, mean over seeds per arm")
    return save_figure(fig, out)


def plot_final_metrics(df: pd.DataFrame, metrics: Sequence[str], out: Path, colors: dict) -> Path:
    """(b) each metric per arm: ok seeds as points, mean and 95% CI as an error bar.

    One panel per metric, stacked, sharing the arm axis, so long arm labels are written once.
    """
    metrics = [m for m in metrics if pd.to_numeric(df[m], errors="coerce").notna().any()]
    if not metrics:
        raise PlotSkipped("no ok run has a value for any of the study's metrics")
    arms = arm_order(df)
    summary = aggregate(df, metrics)
    width = max(6.5, 1.25 * len(arms) + 2.0)
    fig, axes = plt.subplots(
        len(metrics),
        1,
        figsize=(width, 2.6 * len(metrics) + 1.6),
        layout="constrained",
        sharex=True,
        squeeze=False,
    )
    rng = np.random.default_rng(0)  # fixed jitter: the same report twice gives the same plot
    for ax, metric in zip(axes[:, 0], metrics):
        for i, arm in enumerate(arms):
            ok = df[(df["arm"] == arm) & (df["status"].map(status_group) == "ok")]
            y = pd.to_numeric(ok[metric], errors="coerce").to_numpy(float)
            y = y[np.isfinite(y)]
            x = i - 0.1 + rng.uniform(-0.1, 0.1, size=len(y))
            ax.scatter(x, y, s=24, color=colors[arm], alpha=0.8, zorder=2)
            row = summary[(summary["arm"] == arm) & (summary["metric"] == metric)].iloc[0]
            if np.isfinite(row["mean"]):
                err = None
                if np.isfinite(row["ci_low"]):
                    err = [[row["mean"] - row["ci_low"]], [row["ci_high"] - row["mean"]]]
                ax.errorbar(
                    [i + 0.2],
                    [row["mean"]],
                    yerr=err,
                    fmt="D",
                    color="black",
                    ms=5,
                    capsize=4,
                    zorder=3,
                )
        ax.set_ylabel(metric_axis_label(metric))
        direction = metric_direction(metric)
        hint = {"lower": " (lower is better)", "higher": " (higher is better)"}.get(direction, "")
        ax.set_title(f"{metric} at the end of training{hint}", fontsize="medium", loc="left")
        ax.grid(axis="y", alpha=0.3)
    bottom = axes[-1, 0]
    bottom.set_xticks(range(len(arms)), [_arm_tick_label(df, a) for a in arms], fontsize="small")
    bottom.set_xlim(-0.6, len(arms) - 0.4)
    bottom.set_xlabel("arm")
    legend_handles = [
        plt.Line2D([], [], ls="", marker="o", color="grey", alpha=0.8, label="one ok seed"),
        plt.Line2D([], [], ls="-", marker="D", color="black", ms=5, label="mean ± 95% CI"),
    ]
    axes[0, 0].legend(handles=legend_handles, fontsize="x-small", loc="best")
    fig.suptitle("Final metrics per arm (runs that did not finish ok are counted under the arm)")
    return save_figure(fig, out)


def _arm_tick_label(df: pd.DataFrame, arm: str) -> str:
    """Arm label over several lines, plus the count of runs that are not ok."""
    label = arm.replace(", ", "\n")
    groups = df.loc[df["arm"] == arm, "status"].map(status_group)
    bad = [
        f"{int((groups == g).sum())} {g}"
        for g in ("failed", "diverged", "incomplete")
        if (groups == g).any()
    ]
    return label + (f"\n({', '.join(bad)})" if bad else "")


def plot_heatmap(df: pd.DataFrame, axes_keys: Sequence[str], metric: str, out: Path) -> Path:
    """(c) a two-axis grid: mean of `metric` over ok seeds per cell, annotated with n."""
    if len(axes_keys) != 2:
        raise PlotSkipped(f"the grid has {len(axes_keys)} axes (a heatmap needs exactly 2)")
    if metric is None:
        raise PlotSkipped("no metric to show")
    row_key, col_key = axes_keys
    ok = df[df["status"].map(status_group) == "ok"].copy()
    ok["__value"] = pd.to_numeric(ok[metric], errors="coerce")
    grid = df.attrs.get("grid", {})

    def levels(key):
        declared = [canonical(v) for v in grid.get(key, [])]
        labels = {canonical(v): format_value(v) for v in df[key]}
        labels.update({canonical(v): str(v) for v in grid.get(key, [])})
        seen = [c for c in pd.unique(df[key].map(canonical)) if c not in declared]
        return [(c, labels[c]) for c in declared + seen]

    rows, cols = levels(row_key), levels(col_key)
    values = np.full((len(rows), len(cols)), np.nan)
    counts = np.zeros((len(rows), len(cols)), dtype=int)
    canon_r, canon_c = ok[row_key].map(canonical), ok[col_key].map(canonical)
    for i, (r, _) in enumerate(rows):
        for j, (c, _) in enumerate(cols):
            cell = ok.loc[(canon_r == r) & (canon_c == c), "__value"]
            cell = cell[np.isfinite(cell)]
            counts[i, j] = len(cell)
            if len(cell):
                values[i, j] = cell.mean()
    if not np.isfinite(values).any():
        raise PlotSkipped(f"no ok run has a finite {metric}")
    fig, ax = plt.subplots(
        figsize=(1.6 * len(cols) + 3.2, 1.0 * len(rows) + 2.2), layout="constrained"
    )
    # reversed for lower-is-better metrics, so the best cell is always the bright one
    cmap = plt.get_cmap("viridis_r" if metric_direction(metric) == "lower" else "viridis")
    cmap = cmap.with_extremes(bad="#dddddd")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, aspect="auto")
    finite = values[np.isfinite(values)]
    mid = (finite.min() + finite.max()) / 2
    for i in range(len(rows)):
        for j in range(len(cols)):
            if np.isfinite(values[i, j]):
                # dark text on the light end of the colormap, light text on the dark end
                light_cell = (values[i, j] < mid) == (metric_direction(metric) == "lower")
                text = f"{fmt_number(values[i, j], strip_zeros=False)}\nn={counts[i, j]}"
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize="small",
                    color="black" if light_cell else "white",
                )
            else:
                ax.text(j, i, "no ok runs", ha="center", va="center", fontsize="small")
    ax.set_xticks(range(len(cols)), [lb for _, lb in cols])
    ax.set_yticks(range(len(rows)), [lb for _, lb in rows])
    ax.set_xlabel(col_key)
    ax.set_ylabel(row_key)
    fig.colorbar(image, ax=ax, label=f"mean {metric_axis_label(metric)}")
    hint = {"lower": " (lower is better)", "higher": " (higher is better)"}.get(
        metric_direction(metric), ""
    )
    ax.set_title(f"mean {metric} over ok seeds{hint}")
    return save_figure(fig, out)


def plot_grad_profile(df: pd.DataFrame, out: Path, colors: dict) -> Path:
    """(d) the vanishing-gradient profile: ||dL_T/dh_t|| over chunk position, log scale."""
    profile = load_diagnostic_profile(df, "last_loss_grad_norm")
    if profile.empty:
        raise PlotSkipped(
            "no ok run has diagnostics.npz with last_loss_grad_norm "
            "(runs with record=false write none)"
        )
    fig, ax = plt.subplots(figsize=(7.5, 5.0), layout="constrained")
    steps = sorted(set(profile["record_step"]))
    for arm in [a for a in arm_order(df) if a in set(profile["arm"])]:
        runs = profile[profile["arm"] == arm]
        by_pos = runs.groupby("position")["last_loss_grad_norm"]
        mean, lo, hi = by_pos.mean(), by_pos.min(), by_pos.max()
        positive = mean > 0  # a log axis cannot show zeros
        n = runs["path"].nunique()
        ax.plot(
            mean.index[positive],
            mean[positive],
            color=colors[arm],
            lw=1.6,
            marker=".",
            label=f"{arm} (n={n})",
        )
        if n > 1:
            ax.fill_between(
                mean.index[positive],
                lo[positive].clip(lower=1e-300),
                hi[positive],
                color=colors[arm],
                alpha=0.15,
                lw=0,
            )
    ax.set_yscale("log")
    ax.set_xlabel("position t in the chunk (t = T is the last character)")
    ax.set_ylabel("‖∂L_T / ∂h_t‖ (log scale)")
    at = f"step {steps[0]}" if len(steps) == 1 and steps[0] >= 0 else "the last recorded step"
    ax.set_title(
        f"Gradient of the last step's loss reaching h_t, at {at}\n"
        "(line: mean over seeds; band: min-max over seeds)",
        fontsize="medium",
    )
    ax.grid(alpha=0.3, which="both")
    handles, labels = ax.get_legend_handles_labels()
    _legend_below(fig, handles, labels)
    return save_figure(fig, out)


def plot_spectral_radius(df: pd.DataFrame, out: Path, colors: dict) -> Path:
    """(e) spectral radius of W_hh over training per arm: mean over seeds and a band."""
    curves = load_curves(df, "spectral_radius")
    if curves.empty:
        raise PlotSkipped("no ok run has a history.csv with spectral_radius values")
    band = curve_band(curves, "spectral_radius")
    fig, ax = plt.subplots(figsize=(7.5, 5.0), layout="constrained")
    kinds = {
        _draw_band(ax, band[band["arm"] == arm], colors[arm], arm)
        for arm in arm_order(df)
        if arm in set(band["arm"])
    }
    # rho = 1 is where a linear recurrence neither shrinks nor grows its state
    ax.axhline(1.0, color="grey", ls="--", lw=1, label="ρ = 1")
    _robust_ylim(ax, band, floor=0.0)
    ax.set_xlabel("training step")
    ax.set_ylabel("spectral radius ρ(W_hh)")
    ax.set_title(
        f"Spectral radius of W_hh over training\n({_n_seeds_text(curves)}; {_band_text(kinds)})",
        fontsize="medium",
    )
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    _legend_below(fig, handles, labels)
    return save_figure(fig, out)


# --------------------------------------------------------------------------- markdown


def _md_escape(text) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = [
        "| " + " | ".join(_md_escape(h) for h in header) + " |",
        "|" + "|".join(" --- " for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(summary_row) -> str:
    if summary_row is None or summary_row["n"] == 0:
        return "—"

    def num(x, digits=3):
        return fmt_number(x, digits, strip_zeros=False)

    text = num(summary_row["mean"])
    if np.isfinite(summary_row["std"]):
        text += (
            f" ± {num(summary_row['std'], 2)} "
            f"[{num(summary_row['ci_low'])}, {num(summary_row['ci_high'])}]"
        )
    if summary_row["n"] < summary_row["n_ok"]:
        text += f" (n={summary_row['n']})"
    return text


def results_table_md(summary: pd.DataFrame, metrics: Sequence[str]) -> str:
    header = ["arm", "ok / runs", "failed", "diverged", "incomplete"]
    header += [metric_axis_label(m) for m in metrics]
    rows = []
    for arm in pd.unique(summary["arm"]):
        per_arm = summary[summary["arm"] == arm]
        first = per_arm.iloc[0]
        row = [
            arm,
            f"{first['n_ok']} / {first['n_runs']}",
            first["n_failed"],
            first["n_diverged"],
            first["n_incomplete"],
        ]
        for m in metrics:
            match = per_arm[per_arm["metric"] == m]
            row.append(_cell(match.iloc[0] if len(match) else None))
        rows.append(row)
    return markdown_table(header, rows)


def reproduce_commands(df: pd.DataFrame, settings: dict) -> list[str]:
    """Commands that rerun the sweep: `rnn-lab study NAME [extras]` and the Hydra multirun."""
    hydra = df.attrs.get("hydra") or {}
    typed = list(hydra.get("task_overrides") or []) if df.attrs.get("from_multirun_yaml") else []
    commands = []
    if settings.get("name"):
        # `rnn-lab study NAME` selects experiment=NAME itself; other typed overrides pass through
        extras = [o for o in typed if not o.startswith(("experiment=", "+experiment="))]
        commands.append(
            " ".join(
                ["rnn-lab", "study", shlex.quote(str(settings["name"]))]
                + [shlex.quote(str(o)) for o in extras]
            )
        )
    job_name = hydra.get("job_name") or "train"
    if not (Path(__file__).parent / f"{job_name}.py").exists():
        job_name = "train"
    parts = ["python", "-m", f"rnn_lab.{job_name}", "-m"]
    config_name = hydra.get("config_name")
    if config_name and config_name != "config":
        parts += ["--config-name", str(config_name)]
    typed_keys = {o.split("=", 1)[0].lstrip("+~") for o in typed}
    # Grid keys not typed on the command line came from the config's hydra.sweeper.params (or,
    # without multirun.yaml, from the cells that ran); spelling them out makes the command
    # reproduce the grid whichever config it is run with.
    grid = df.attrs.get("grid") or {}
    overrides = typed + [
        f"{k}={','.join(str(v) for v in values)}"
        for k, values in grid.items()
        if k not in typed_keys
    ]
    skip = ("hydra.mode=", "hydra.sweep.dir=", "hydra.run.dir=", "hydra.job.")
    overrides += [o for o in hydra.get("hydra_overrides") or [] if not o.startswith(skip)]
    commands.append(" ".join(parts + [shlex.quote(str(o)) for o in overrides]))
    return commands


# --------------------------------------------------------------------------- the report


def build_report(sweep_dir: str | Path) -> Path:
    """Collect, aggregate, compare and plot the sweep; return the path of report.md.

    Writes into sweep_dir: results.csv (+ results.parquet), summary_table.csv,
    comparisons.csv, plots/*.png and report.md.
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"no such sweep directory: {sweep_dir}")
    df = collect(sweep_dir, write=True)
    settings = study_settings(df)
    metrics = settings["metrics"]
    arms = arm_order(df)
    colors = arm_colors(arms)

    summary = aggregate(df, metrics)
    atomic_write_text(sweep_dir / SUMMARY_TABLE, summary.to_csv(index=False))
    comparisons = compare_to_baseline(df, metrics, settings["baseline"])
    atomic_write_text(sweep_dir / COMPARISONS_TABLE, comparisons.to_csv(index=False))
    ledger = grid_ledger(df)

    plots_dir = sweep_dir / PLOTS_DIR
    first_metric = metrics[0] if metrics else None
    plot_jobs: list[tuple[str, str, Callable[[Path], Path]]] = [
        (
            "loss_curves.png",
            "Training and validation loss per arm: mean over seeds, shaded 95% CI (the seed "
            f"range for arms with fewer than {MIN_SEEDS_FOR_CI_BAND} seeds).",
            lambda p: plot_loss_curves(df, p, colors),
        ),
        (
            "final_metrics.png",
            "Final metrics per arm: every ok seed, mean and 95% CI.",
            lambda p: plot_final_metrics(df, metrics, p, colors),
        ),
        (
            "heatmap.png",
            f"Mean {first_metric} over the two grid axes.",
            lambda p: plot_heatmap(df, settings["axes"], first_metric, p),
        ),
        (
            "grad_norm_profile.png",
            "Vanishing-gradient profile: norm of the last step's loss gradient reaching each "
            "position of the chunk, at the last recorded step.",
            lambda p: plot_grad_profile(df, p, colors),
        ),
        (
            "spectral_radius.png",
            "Spectral radius of W_hh over training per arm.",
            lambda p: plot_spectral_radius(df, p, colors),
        ),
    ]
    plots, skipped_plots = [], []
    if df.empty:
        skipped_plots = [(name, "no runs were collected") for name, _, _ in plot_jobs]
    else:
        for name, caption, draw in plot_jobs:
            try:
                draw(plots_dir / name)
                plots.append((name, caption))
            except PlotSkipped as e:
                skipped_plots.append((name, str(e)))
                # a PNG left by an earlier report would show data this report no longer has
                (plots_dir / name).unlink(missing_ok=True)
            except Exception as e:  # one broken plot must not cost the whole report
                log.exception("plot %s failed", name)
                skipped_plots.append((name, f"error while drawing: {type(e).__name__}: {e}"))
                plt.close("all")

    text = _report_markdown(
        df, settings, summary, comparisons, ledger, plots, skipped_plots, sweep_dir
    )
    report_path = sweep_dir / REPORT_FILE
    atomic_write_text(report_path, text)
    return report_path


def _report_markdown(
    df, settings, summary, comparisons, ledger, plots, skipped_plots, sweep_dir: Path
) -> str:
    out: list[str] = []
    add = out.append
    title = settings["name"] or sweep_dir.name
    add(f"# Study report: {title}\n")
    counts = status_counts(df)
    count_text = ", ".join(f"{n} {s}" for s, n in counts.items()) or "none"
    add(
        f"Sweep directory `{sweep_dir}`, {len(df)} runs ({count_text}); "
        f"report built {datetime.now():%Y-%m-%d %H:%M}.\n"
    )
    if settings["question"]:
        add(f"**Question.** {_md_escape(settings['question'])}\n")
    if settings["expect"]:
        add(f"**Expectation.** {_md_escape(settings['expect'])}\n")

    # ---- grid
    add("## Grid\n")
    grid = df.attrs.get("grid") or {}
    arm_keys = df.attrs.get("arm_keys", [])
    axis_rows = []
    for key in dict.fromkeys([*grid, *arm_keys]):
        values = df[key].tolist() if key in df else []
        if key == "seed":
            values = sorted(values, key=lambda v: canonical(v).zfill(12))
        observed = list(dict.fromkeys(format_value(v) for v in values))
        declared = ", ".join(str(v) for v in grid.get(key, [])) or "(not declared)"
        axis_rows.append([key, declared, ", ".join(observed) or "—"])
    if axis_rows:
        add(markdown_table(["key", "declared values", "values found in run dirs"], axis_rows))
        add("")
    else:
        add("No varying keys: every run has the same settings.\n")
    seeds = sorted({int(s) for s in pd.to_numeric(df["seed"], errors="coerce").dropna()})
    add(f"Arms: {len(pd.unique(df['arm']))}. Seeds found: {', '.join(map(str, seeds)) or '—'}.")
    if settings["declared_axes"] and set(settings["axes"]) != set(arm_keys):
        add(f"\nThe study declares axes {settings['declared_axes']}; the runs vary in {arm_keys}.")
    constant = df.attrs.get("constant_config") or {}
    if constant:
        add("\n<details><summary>Settings shared by every run</summary>\n")
        add(markdown_table(["key", "value"], [[k, format_value(v)] for k, v in constant.items()]))
        add("\n</details>")
    add("")

    # ---- results
    add("## Results (aggregated over seeds)\n")
    if settings["missing_metrics"]:
        add(
            f"Metrics not found in any run and left out: {', '.join(settings['missing_metrics'])}."
            "\n"
        )
    if len(summary):
        add(
            "Cells: mean ± sd [95% CI of the mean, t-based] over ok runs. Runs that failed, "
            "diverged or did not finish are counted and excluded from the statistics.\n"
        )
        add(results_table_md(summary, settings["metrics"]))
        add(
            f"\nFull table: [`{SUMMARY_TABLE}`]({SUMMARY_TABLE}); one row per run: "
            f"[`{RESULTS_CSV}`]({RESULTS_CSV})"
            + (
                f", [`{RESULTS_PARQUET}`]({RESULTS_PARQUET})"
                if (sweep_dir / RESULTS_PARQUET).exists()
                else ""
            )
            + ".\n"
        )
    else:
        add("No runs or no metrics to aggregate.\n")

    # ---- comparisons
    add("## Comparisons\n")
    for note in comparisons.attrs.get("notes", []):
        add(f"*Note: {note}.*\n")
    if len(comparisons):
        base = comparisons.attrs.get("baseline") or {}
        base_text = ", ".join(f"{k}={format_value(v)}" for k, v in base.items())
        other_axes = [k for k in df.attrs.get("arm_keys", []) if k not in base]
        if other_axes:
            against = (
                f"the baseline {base_text} at the same {', '.join(other_axes)} "
                "(the arm differing only in the baseline's keys)"
            )
        else:
            against = f"the baseline arm {base_text}"
        add(
            f"Each arm is compared with {against}: paired t-test over shared seeds (Welch's "
            "t-test when fewer than 2 seeds are shared), Holm-adjusted across the arms of each "
            f"metric, α = {ALPHA}. Differences are arm − baseline; their 95% CIs are per "
            "comparison (not adjusted), so a CI can exclude 0 while the Holm-adjusted p is above "
            "α.\n"
        )
        for metric in settings["metrics"]:
            add(f"**{metric_axis_label(metric)}**\n")
            for _, row in comparisons[comparisons["metric"] == metric].iterrows():
                add(f"- {describe_comparison(row)}")
            add("")
        add(f"All numbers: [`{COMPARISONS_TABLE}`]({COMPARISONS_TABLE}).\n")
    else:
        add("Nothing to compare (a single arm, or no metrics).\n")

    # ---- plots
    add("## Plots\n")
    for name, caption in plots:
        add(f"{caption}\n\n![{name}]({PLOTS_DIR}/{name})\n")
    for name, reason in skipped_plots:
        add(f"- `{name}` not drawn: {reason}.")
    if skipped_plots:
        add("")

    # ---- problems
    add("## Failed, diverged and incomplete runs\n")
    bad = df[df["status"].map(status_group) != "ok"] if len(df) else df
    if len(bad):
        rows = []
        for _, run in bad.iterrows():
            steps = _steps_text(run)
            error = run.get("error")
            error = (
                ""
                if error is None or (isinstance(error, float) and math.isnan(error))
                else str(error)[:300]
            )
            rows.append(
                [
                    f"`{run['path']}`",
                    run["arm"],
                    format_value(run["seed"]),
                    run["status"],
                    steps,
                    error or "—",
                ]
            )
        add(markdown_table(["path", "arm", "seed", "status", "steps done", "error"], rows))
        add("")
    else:
        add("None: every collected run finished with status ok.\n")
    warnings = df.attrs.get("warnings") or []
    if warnings:
        add("Directories skipped because they could not be read:\n")
        add(markdown_table(["path", "reason"], [[f"`{w['path']}`", w["reason"]] for w in warnings]))
        add("")

    # ---- ledger
    add("## Grid ledger\n")
    n_cells = ledger.attrs.get("n_cells", 0)
    if not grid:
        add(
            "No declared grid found (no `hydra.sweeper.params` and no multirun.yaml), so "
            "missing cells cannot be listed.\n"
        )
    elif len(ledger) == 0:
        add(f"All {n_cells} declared cells (arm × seed) have a run directory.\n")
    else:
        add(
            f"{len(ledger)} of {n_cells} declared cells (arm × seed) have no usable run "
            "directory:\n"
        )
        add(
            markdown_table(
                ["arm", "seed"], [[r["arm"], format_value(r["seed"])] for _, r in ledger.iterrows()]
            )
        )
        add("")
    if ledger.attrs.get("unchecked_keys"):
        add(
            f"Grid keys not found in the runs' configs (not checked): "
            f"{', '.join(ledger.attrs['unchecked_keys'])}.\n"
        )

    # ---- reproduce
    add("## Reproduce\n")
    add("```bash")
    out.extend(reproduce_commands(df, settings))
    add(f"rnn-lab report {shlex.quote(str(sweep_dir))}")
    add("```\n")
    return "\n".join(out)


def _steps_text(run) -> str:
    done = run.get("steps_done")
    total = run.get("steps")
    done_text = "?" if done is None or pd.isna(done) else str(int(done))
    if total is not None and not pd.isna(total):
        return f"{done_text} / {int(total)}"
    return done_text


# --------------------------------------------------------------------------- command line


def main_report(argv: list[str] | None = None) -> int:
    """`rnn-lab report DIR`: build DIR/report.md and say where everything went."""
    parser = argparse.ArgumentParser(
        prog="rnn-lab report",
        description="Build report.md, tables and plots for a sweep directory.",
    )
    parser.add_argument("dir", help="sweep directory (e.g. multirun/2024-01-01/12-00-00)")
    args = parser.parse_args(argv)
    sweep_dir = Path(args.dir)
    if not sweep_dir.is_dir():
        print(f"rnn-lab report: no such directory: {sweep_dir}", file=sys.stderr)
        return 2
    report = build_report(sweep_dir)
    plots = sorted((sweep_dir / PLOTS_DIR).glob("*.png"))
    print(f"report: {report}")
    print(
        f"tables: {sweep_dir / RESULTS_CSV}, {sweep_dir / SUMMARY_TABLE}, "
        f"{sweep_dir / COMPARISONS_TABLE}"
    )
    print(f"plots:  {len(plots)} in {sweep_dir / PLOTS_DIR}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    sys.exit(main_report())
