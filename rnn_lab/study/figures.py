"""The report's figures: arms compared over a sweep, one PNG each in ``<sweep_dir>/plots/``.

`draw_report_figures(df, settings, plots_dir)` draws every figure the collected table has data
for and says, for each one it cannot draw, why. Figures are built with matplotlib's object
API (``Figure``, never pyplot), as a run's own plots are (rnn_lab.inspect.plots), and written
by the one shared atomic ``save_figure``. Data come from the table and from the runs' files
read through rnn_lab.study.collect.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.lines import Line2D
from scipy import stats as sps

from rnn_lab.inspect.figure_io import PlotSkipped, new_figure, save_figure
from rnn_lab.run.rundir import DIAGNOSTICS_FILE, HISTORY_FILE
from rnn_lab.study.collect import (
    arm_order,
    canonical,
    format_value,
    load_curves,
    load_diagnostic_profile,
)
from rnn_lab.study.stats import (
    CONFIDENCE,
    aggregate,
    fmt_number,
    metric_axis_label,
    metric_direction,
    status_group,
)

log = logging.getLogger(__name__)

PLOTS_DIR = "plots"  # under the sweep folder

# Below this many seeds a t-based 95% CI is wider than the data (t = 12.7 for 2 seeds), so
# curve plots shade the seed range instead and say so.
MIN_SEEDS_FOR_CI_BAND = 3

# Status groups counted under an arm's tick label when the arm has such runs.
NOT_OK_GROUPS = ("failed", "diverged", "incomplete", "damaged", "conflict")


# --------------------------------------------------------------------------- all figures


def draw_report_figures(
    df: pd.DataFrame, settings: dict, plots_dir: Path
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Draw every figure into plots_dir: ([(file name, caption)], [(file name, why not)]).

    `settings` is the report's study settings (its `metrics` and `axes`). A figure without data
    is skipped with the reason, and a PNG an earlier report left under its name is removed (it
    would show data this report no longer has); a figure that fails to draw is logged and
    skipped, never costing the whole report.
    """
    jobs = _figure_jobs(df, settings)
    if df.empty:
        return [], [(name, "no runs were collected") for name, _, _ in jobs]
    drawn, skipped = [], []
    for name, caption, draw in jobs:
        try:
            draw(plots_dir / name)
            drawn.append((name, caption))
        except PlotSkipped as e:
            skipped.append((name, str(e)))
            (plots_dir / name).unlink(missing_ok=True)
        except Exception as e:
            log.exception("plot %s failed", name)
            skipped.append((name, f"error while drawing: {type(e).__name__}: {e}"))
    return drawn, skipped


def _figure_jobs(df: pd.DataFrame, settings: dict) -> list[tuple[str, str, Callable]]:
    metrics = settings["metrics"]
    first_metric = metrics[0] if metrics else None
    colors = arm_colors(arm_order(df))
    return [
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


# --------------------------------------------------------------------------- helpers


def arm_colors(arms: Sequence[str]) -> dict[str, tuple]:
    """One color per arm, the same in every plot of a report."""
    n = len(arms)
    if n <= 10:
        cmap = colormaps["tab10"]
        return {a: cmap(i) for i, a in enumerate(arms)}
    if n <= 20:
        cmap = colormaps["tab20"]
        return {a: cmap(i) for i, a in enumerate(arms)}
    cmap = colormaps["viridis"]
    return {a: cmap(i / max(1, n - 1)) for i, a in enumerate(arms)}


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


def _draw_bands(ax, df: pd.DataFrame, band: pd.DataFrame, colors: dict) -> set[str]:
    """Every arm's band in table order; returns the kinds of band drawn."""
    present = set(band["arm"])
    return {
        _draw_band(ax, band[band["arm"] == arm], colors[arm], arm)
        for arm in arm_order(df)
        if arm in present
    }


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


def _direction_hint(metric: str) -> str:
    return {"lower": " (lower is better)", "higher": " (higher is better)"}.get(
        metric_direction(metric), ""
    )


# --------------------------------------------------------------------------- the figures


def plot_loss_curves(df: pd.DataFrame, out: Path, colors: dict) -> Path:
    """(a) training and validation loss per arm: mean over seeds, 95% CI (or range) band."""
    loss = load_curves(df, "loss")
    val = load_curves(df, "val_loss")
    panels = [
        (c, col, t)
        for c, col, t in ((loss, "loss", "training loss"), (val, "val_loss", "validation loss"))
        if len(c)
    ]
    if not panels:
        raise PlotSkipped(f"no ok run has a {HISTORY_FILE} with loss values")
    fig = new_figure(6.2 * len(panels), 4.6)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (curves, column, title) in zip(axes, panels):
        band = curve_band(curves, column)
        kinds = _draw_bands(ax, df, band, colors)
        ax.set_title(f"{title}\n({_n_seeds_text(curves)}; {_band_text(kinds)})", fontsize="medium")
        _robust_ylim(ax, band, floor=0.0)
        ax.set_xlabel("training step")
        ax.set_ylabel("loss (nats/char)")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
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
    ok_runs = df[df["status"].map(status_group) == "ok"]
    fig = new_figure(max(6.5, 1.25 * len(arms) + 2.0), 2.6 * len(metrics) + 1.6)
    axes = fig.subplots(len(metrics), 1, sharex=True, squeeze=False)[:, 0]
    rng = np.random.default_rng(0)  # fixed jitter: the same report twice gives the same plot
    for ax, metric in zip(axes, metrics):
        for i, arm in enumerate(arms):
            y = pd.to_numeric(ok_runs.loc[ok_runs["arm"] == arm, metric], errors="coerce")
            y = y.to_numpy(float)
            y = y[np.isfinite(y)]
            x = i - 0.1 + rng.uniform(-0.1, 0.1, size=len(y))
            ax.scatter(x, y, s=24, color=colors[arm], alpha=0.8, zorder=2)
            row = summary[(summary["arm"] == arm) & (summary["metric"] == metric)].iloc[0]
            _mean_ci_marker(ax, i + 0.2, row)
        ax.set_ylabel(metric_axis_label(metric))
        ax.set_title(
            f"{metric} at the end of training{_direction_hint(metric)}",
            fontsize="medium",
            loc="left",
        )
        ax.grid(axis="y", alpha=0.3)
    bottom = axes[-1]
    bottom.set_xticks(range(len(arms)), [_arm_tick_label(df, a) for a in arms], fontsize="small")
    bottom.set_xlim(-0.6, len(arms) - 0.4)
    bottom.set_xlabel("arm")
    legend_handles = [
        Line2D([], [], ls="", marker="o", color="grey", alpha=0.8, label="one ok seed"),
        Line2D([], [], ls="-", marker="D", color="black", ms=5, label="mean ± 95% CI"),
    ]
    axes[0].legend(handles=legend_handles, fontsize="x-small", loc="best")
    fig.suptitle("Final metrics per arm (runs that did not finish ok are counted under the arm)")
    return save_figure(fig, out)


def _mean_ci_marker(ax, x: float, row) -> None:
    """A diamond at the arm's mean with its 95% CI as error bar (no bar with one seed)."""
    if not np.isfinite(row["mean"]):
        return
    err = None
    if np.isfinite(row["ci_low"]):
        err = [[row["mean"] - row["ci_low"]], [row["ci_high"] - row["mean"]]]
    ax.errorbar([x], [row["mean"]], yerr=err, fmt="D", color="black", ms=5, capsize=4, zorder=3)


def _arm_tick_label(df: pd.DataFrame, arm: str) -> str:
    """Arm label over several lines, plus the count of runs that are not ok."""
    label = arm.replace(", ", "\n")
    groups = df.loc[df["arm"] == arm, "status"].map(status_group)
    bad = [f"{int((groups == g).sum())} {g}" for g in NOT_OK_GROUPS if (groups == g).any()]
    return label + (f"\n({', '.join(bad)})" if bad else "")


def plot_heatmap(df: pd.DataFrame, axes_keys: Sequence[str], metric: str, out: Path) -> Path:
    """(c) a two-axis grid: mean of `metric` over ok seeds per cell, annotated with n."""
    if len(axes_keys) != 2:
        raise PlotSkipped(f"the grid has {len(axes_keys)} axes (a heatmap needs exactly 2)")
    if metric is None:
        raise PlotSkipped("no metric to show")
    row_key, col_key = axes_keys
    rows, cols = _levels(df, row_key), _levels(df, col_key)
    values, counts = _cell_means(df, metric, row_key, col_key, rows, cols)
    if not np.isfinite(values).any():
        raise PlotSkipped(f"no ok run has a finite {metric}")
    fig = new_figure(1.6 * len(cols) + 3.2, 1.0 * len(rows) + 2.2)
    ax = fig.subplots()
    lower_better = metric_direction(metric) == "lower"
    # reversed for lower-is-better metrics, so the best cell is always the bright one
    cmap = colormaps["viridis_r" if lower_better else "viridis"].with_extremes(bad="#dddddd")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, aspect="auto")
    finite = values[np.isfinite(values)]
    mid = (finite.min() + finite.max()) / 2
    for (i, j), value in np.ndenumerate(values):
        if not np.isfinite(value):
            ax.text(j, i, "no ok runs", ha="center", va="center", fontsize="small")
            continue
        # dark text on the light end of the colormap, light text on the dark end
        light_cell = (value < mid) == lower_better
        text = f"{fmt_number(value, strip_zeros=False)}\nn={counts[i, j]}"
        color = "black" if light_cell else "white"
        ax.text(j, i, text, ha="center", va="center", fontsize="small", color=color)
    ax.set_xticks(range(len(cols)), [lb for _, lb in cols])
    ax.set_yticks(range(len(rows)), [lb for _, lb in rows])
    ax.set_xlabel(col_key)
    ax.set_ylabel(row_key)
    fig.colorbar(image, ax=ax, label=f"mean {metric_axis_label(metric)}")
    ax.set_title(f"mean {metric} over ok seeds{_direction_hint(metric)}")
    return save_figure(fig, out)


def _levels(df: pd.DataFrame, key: str) -> list[tuple[str, str]]:
    """(canonical value, label) of a grid axis: declared values first, then any other seen."""
    grid = df.attrs.get("grid", {})
    declared = [canonical(v) for v in grid.get(key, [])]
    labels = {canonical(v): format_value(v) for v in df[key]}
    labels.update({canonical(v): str(v) for v in grid.get(key, [])})
    seen = [c for c in pd.unique(df[key].map(canonical)) if c not in declared]
    return [(c, labels[c]) for c in declared + seen]


def _cell_means(df, metric, row_key, col_key, rows, cols) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the metric over the ok runs of each (row, col) cell, and how many there are."""
    ok = df[df["status"].map(status_group) == "ok"]
    value = pd.to_numeric(ok[metric], errors="coerce")
    canon_r, canon_c = ok[row_key].map(canonical), ok[col_key].map(canonical)
    values = np.full((len(rows), len(cols)), np.nan)
    counts = np.zeros((len(rows), len(cols)), dtype=int)
    for i, (r, _) in enumerate(rows):
        for j, (c, _) in enumerate(cols):
            cell = value[(canon_r == r) & (canon_c == c)]
            cell = cell[np.isfinite(cell)]
            counts[i, j] = len(cell)
            if len(cell):
                values[i, j] = cell.mean()
    return values, counts


def plot_grad_profile(df: pd.DataFrame, out: Path, colors: dict) -> Path:
    """(d) the vanishing-gradient profile: ||dL_T/dh_t|| over chunk position, log scale."""
    profile = load_diagnostic_profile(df, "last_loss_grad_norm")
    if profile.empty:
        raise PlotSkipped(
            f"no ok run has {DIAGNOSTICS_FILE} with last_loss_grad_norm "
            "(runs with record=false write none)"
        )
    fig = new_figure(7.5, 5.0)
    ax = fig.subplots()
    steps = sorted(set(profile["record_step"]))
    for arm in [a for a in arm_order(df) if a in set(profile["arm"])]:
        runs = profile[profile["arm"] == arm]
        by_pos = runs.groupby("position")["last_loss_grad_norm"]
        mean, lo, hi = by_pos.mean(), by_pos.min(), by_pos.max()
        positive = mean > 0  # a log axis cannot show zeros
        n = runs["path"].nunique()
        x = mean.index[positive]
        ax.plot(x, mean[positive], color=colors[arm], lw=1.6, marker=".", label=f"{arm} (n={n})")
        if n > 1:
            low = lo[positive].clip(lower=1e-300)
            ax.fill_between(x, low, hi[positive], color=colors[arm], alpha=0.15, lw=0)
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
        raise PlotSkipped(f"no ok run has a {HISTORY_FILE} with spectral_radius values")
    band = curve_band(curves, "spectral_radius")
    fig = new_figure(7.5, 5.0)
    ax = fig.subplots()
    kinds = _draw_bands(ax, df, band, colors)
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
