"""The report's figures: arms compared over a sweep, one PNG each in ``<sweep_dir>/plots/``.

`draw_report_figures(df, settings, plots_dir)` draws every figure the collected table has data
for and says, for each one it cannot draw, why. Figures are built with matplotlib's object
API (``Figure``, never pyplot), as a run's own plots are (rnn_lab.inspect.plots), and written
by the one shared atomic ``save_figure``. Data come from the table and from the runs' files
read through rnn_lab.study.curves.
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
from rnn_lab.study.collect import arm_order
from rnn_lab.study.curves import load_curves, load_diagnostic_profile
from rnn_lab.study.grid import canonical, format_value
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
# Up to this many seeds per arm the spectral-radius plot draws every seed as a thin line
# instead of a band (bands of a few seeds are wide enough to hide the lines).
MAX_SEEDS_FOR_SEED_LINES = 5

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


def has_gated_arms(df: pd.DataFrame) -> bool:
    """Does the study hold GRU or LSTM runs (collect's `cell` column: rnn, gru or lstm)?"""
    if "cell" not in df.columns:
        return False
    return any(canonical(v) not in ("rnn", "null") for v in df["cell"])


def _weights_text(df: pd.DataFrame) -> dict[str, str]:
    """How the figures name the recurrent weights and state: W_hh and h for vanilla-only
    studies; with gated arms the largest recurrent block (W_hh itself for the vanilla cell)
    and the state s (h for rnn and GRU, (h, c) for the LSTM)."""
    if not has_gated_arms(df):
        return {"radius": "spectral radius ρ(W_hh)", "of": "W_hh", "h": "h"}
    return {
        "radius": "spectral radius (largest recurrent block)",
        "of": "the largest recurrent block (W_hh for cell=rnn, the largest gate block for "
        "gru and lstm)",
        "h": "s",
    }


def _figure_jobs(df: pd.DataFrame, settings: dict) -> list[tuple[str, str, Callable]]:
    metrics = settings["metrics"]
    first_metric = metrics[0] if metrics else None
    colors = arm_colors(arm_order(df))
    names = _weights_text(df)
    state = (
        " (with gated arms the state s_t: h_t for rnn and gru, (h_t, c_t) for lstm)"
        if names["h"] == "s"
        else ""
    )
    return [
        (
            "loss_curves.png",
            "Training and validation loss per arm: mean over seeds, shaded 95% CI (the seed "
            f"range for arms with fewer than {MIN_SEEDS_FOR_CI_BAND} seeds). The y-axis "
            f"covers the {CLIP_PERCENTILE}th percentile of the means after the first "
            f"{WARMUP_FRACTION:.0%} of the steps (and where training starts); a mean above it "
            "is marked ▲ on the top edge.",
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
            "Vanishing-gradient profile at the last recorded step: the norm of the last step's "
            f"loss gradient reaching {names['h']}_(T-k), divided by its value at {names['h']}_T, "
            "against the lag k, so arms of different seq_len share one axis (slope = decay per "
            f"step){state}.",
            lambda p: plot_grad_profile(df, p, colors),
        ),
        (
            "spectral_radius.png",
            f"Spectral radius of {names['of']} over training per arm: mean over seeds, and each "
            "seed as a "
            f"thin line (a light 95% CI band above {MAX_SEEDS_FOR_SEED_LINES} seeds per arm).",
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


def legend_below(fig, handles, labels):
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


# The y-range of a curve panel: the first steps (a loss spike of one seed at step 20 reaches
# 50 nats while the curves live between 1 and 3.3) never set it; above the 99th percentile of
# what is drawn after them the axis is clipped, and a mean off the top is marked with a ▲.
WARMUP_FRACTION = 0.05  # of a panel's step range
CLIP_PERCENTILE = 99


def _robust_ylim(ax, steps, values, firsts, floor: float | None = None) -> float | None:
    """Set a y-range that one early spike cannot flatten; return the top when it clips.

    `steps`, `values`: every drawn point (means, or per-seed values). The range runs from the
    lowest point after the first 5% of the step range up to the 99th percentile of those
    points, and covers `firsts` (each curve's first value: where training starts stays in
    view). Returns the top of the axis when some drawn value lies above it, else None.
    """
    steps, values = np.asarray(steps, float), np.asarray(values, float)
    finite = np.isfinite(values)
    if finite.sum() < 20:  # too few points for percentiles to mean anything
        return None
    start = np.nanmin(steps) + WARMUP_FRACTION * (np.nanmax(steps) - np.nanmin(steps))
    later = values[finite & (steps >= start)]
    if len(later) < 10:
        later = values[finite]
    lo, hi = later.min(), np.percentile(later, CLIP_PERCENTILE)  # only spikes go up
    firsts = np.asarray(firsts, float)
    firsts = firsts[np.isfinite(firsts)]
    if len(firsts):
        lo, hi = min(lo, firsts.min()), max(hi, firsts.max())
    pad = 0.05 * (hi - lo) if hi > lo else 0.05 * abs(hi) + 1e-3
    low = lo - pad if floor is None else max(floor, lo - pad)
    top = hi + pad
    ax.set_ylim(low, top)
    return top if np.nanmax(values) > top else None


def _mark_off_top(ax, band: pd.DataFrame, top: float, colors: dict) -> None:
    """A ▲ on the top edge at every step where an arm's mean is above the axis."""
    above = band[band["mean"] > top]
    for arm, rows in above.groupby("arm", sort=False):
        ax.plot(
            rows["step"],
            np.full(len(rows), top),
            ls="",
            marker="^",
            ms=6,
            color=colors.get(arm, "black"),
            clip_on=False,
            zorder=4,
        )


def _clipped_label(label: str, top: float | None) -> str:
    if top is None:
        return label
    return f"{label}\n(y clipped at {fmt_number(top)}; ▲ = a mean off the top)"


def _first_means(band: pd.DataFrame) -> np.ndarray:
    """Each arm's mean at its first recorded step."""
    return band.sort_values("step").groupby("arm", sort=False)["mean"].first().to_numpy(float)


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
        top = _robust_ylim(ax, band["step"], band["mean"], _first_means(band), floor=0.0)
        if top is not None:
            _mark_off_top(ax, band, top, colors)
        ax.set_xlabel("training step")
        ax.set_ylabel(_clipped_label("loss (nats/char)", top))
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    legend_below(fig, handles, labels)
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


def grad_profile_by_lag(profile: pd.DataFrame) -> pd.DataFrame:
    """Each run's vanishing-gradient profile normalised and aligned by lag, so arms of different
    seq_len compare: lag k = T - t (0 = the chunk's last character), ratio =
    ||dL_T/dh_{T-k}|| / ||dL_T/dh_T||. A run whose value at t = T is not positive is left out
    (nothing to normalise by). Columns: arm, path, lag, ratio."""
    parts = []
    for (arm, path), run in profile.groupby(["arm", "path"], sort=False):
        run = run.sort_values("position")
        values = run["last_loss_grad_norm"].to_numpy(float)
        last = values[-1]
        if not (np.isfinite(last) and last > 0):
            log.warning("gradient profile: %s has ||dL_T/dh_T|| = %s; left out", path, last)
            continue
        lag = run["position"].to_numpy().max() - run["position"].to_numpy()
        parts.append(pd.DataFrame({"arm": arm, "path": path, "lag": lag, "ratio": values / last}))
    if not parts:
        return pd.DataFrame(columns=["arm", "path", "lag", "ratio"])
    return pd.concat(parts, ignore_index=True)


def _per_step_factor(lags: np.ndarray, ratios: np.ndarray) -> float:
    """The average factor per step back through the chunk: ratio at the largest lag ^ (1/lag)."""
    k = int(lags.max()) if len(lags) else 0
    if k <= 0 or not np.isfinite(ratios[lags == k]).all():
        return np.nan
    return float(ratios[lags == k][0] ** (1.0 / k))


def plot_grad_profile(df: pd.DataFrame, out: Path, colors: dict) -> Path:
    """(d) the vanishing-gradient profile, normalised and by lag, log scale.

    ||dL_T/dh_{T-k}|| / ||dL_T/dh_T|| against the lag k: every run divided by its own value at
    the chunk's last position, so arms of different seq_len (whose chunks have different
    lengths and whose losses differ in scale) share one axis and the slope reads as the
    per-step decay. Line: geometric mean over seeds; band: min-max over seeds.
    """
    profile = load_diagnostic_profile(df, "last_loss_grad_norm")
    if profile.empty:
        raise PlotSkipped(
            f"no ok run has {DIAGNOSTICS_FILE} with last_loss_grad_norm "
            "(runs with record=false write none)"
        )
    by_lag = grad_profile_by_lag(profile)
    if by_lag.empty:
        raise PlotSkipped("no run's gradient reaching the last position is positive")
    fig = new_figure(7.5, 5.0)
    ax = fig.subplots()
    steps = sorted(set(profile["record_step"]))
    for arm in [a for a in arm_order(df) if a in set(by_lag["arm"])]:
        runs = by_lag[(by_lag["arm"] == arm) & (by_lag["ratio"] > 0)]  # log axis: no zeros
        grouped = runs.groupby("lag")["ratio"]
        mean = np.exp(grouped.apply(lambda r: np.log(r).mean()))
        n = runs["path"].nunique()
        factor = _per_step_factor(mean.index.to_numpy(), mean.to_numpy())
        decay = f"; ×{fmt_number(factor, 2)} per step" if np.isfinite(factor) else ""
        ax.plot(
            mean.index, mean, color=colors[arm], lw=1.6, marker=".", label=f"{arm} (n={n}{decay})"
        )
        if n > 1:
            ax.fill_between(
                mean.index, grouped.min(), grouped.max(), color=colors[arm], alpha=0.15, lw=0
            )
    ax.axhline(1.0, color="grey", ls=":", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("lag k: steps back from the chunk's last character (k = T − t)")
    h = _weights_text(df)["h"]
    ax.set_ylabel(f"‖∂L_T / ∂{h}_(T−k)‖ / ‖∂L_T / ∂{h}_T‖ (log scale)")
    at = f"step {steps[0]}" if len(steps) == 1 and steps[0] >= 0 else "the last recorded step"
    ax.set_title(
        f"Gradient of the last step's loss reaching {h}_(T−k), relative to {h}_T, at {at}\n"
        "(line: geometric mean over seeds; band: min-max; ×: average factor per step)",
        fontsize="medium",
    )
    ax.grid(alpha=0.3, which="both")
    handles, labels = ax.get_legend_handles_labels()
    legend_below(fig, handles, labels)
    return save_figure(fig, out)


def plot_spectral_radius(df: pd.DataFrame, out: Path, colors: dict) -> Path:
    """(e) spectral radius of W_hh over training per arm: the mean over seeds as a bold line.
    history.csv's spectral_radius: for gated cells the largest over their recurrent blocks,
    and the labels say so when the study has gated arms.

    With few seeds (at most MAX_SEEDS_FOR_SEED_LINES) every seed is a thin line of the arm's
    colour: a t-based CI over 3 seeds is 4.3 standard errors wide each way and its bands hid
    the lines. With more seeds a light 95% CI band.
    """
    curves = load_curves(df, "spectral_radius")
    if curves.empty:
        raise PlotSkipped(f"no ok run has a {HISTORY_FILE} with spectral_radius values")
    band = curve_band(curves, "spectral_radius")
    fig = new_figure(7.5, 5.0)
    ax = fig.subplots()
    few = curves.groupby("arm")["path"].nunique().max() <= MAX_SEEDS_FOR_SEED_LINES
    present = set(band["arm"])
    for arm in [a for a in arm_order(df) if a in present]:
        rows = band[band["arm"] == arm]
        if few:
            for _, run in curves[curves["arm"] == arm].groupby("path", sort=False):
                ax.plot(
                    run["step"],
                    run["spectral_radius"],
                    color=colors[arm],
                    lw=0.7,
                    alpha=0.35,
                    zorder=1,
                )
        else:
            ok = rows["n"].to_numpy() >= 2
            ax.fill_between(
                rows["step"],
                rows["ci_low"],
                rows["ci_high"],
                where=ok,
                color=colors[arm],
                alpha=0.1,
                lw=0,
            )
        ax.plot(rows["step"], rows["mean"], color=colors[arm], lw=2.0, label=arm, zorder=3)
    # rho = 1 is where a linear recurrence neither shrinks nor grows its state
    ax.axhline(1.0, color="grey", ls="--", lw=1, label="ρ = 1")
    drawn = curves if few else band.rename(columns={"mean": "spectral_radius"})
    top = _robust_ylim(ax, drawn["step"], drawn["spectral_radius"], _first_means(band), 0.0)
    if top is not None:
        _mark_off_top(ax, band, top, colors)
    ax.set_xlabel("training step")
    names = _weights_text(df)
    ax.set_ylabel(_clipped_label(names["radius"], top))
    spread = "thin lines: each seed" if few else "light band: 95% CI over seeds"
    what = "W_hh" if names["h"] == "h" else "the largest recurrent block"
    ax.set_title(
        f"Spectral radius of {what} over training\n({_n_seeds_text(curves)}; bold line: mean "
        f"over seeds; {spread})",
        fontsize="medium",
    )
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    legend_below(fig, handles, labels)
    return save_figure(fig, out)


# --------------------------------------------------------------------------- rnn-lab compare


def plot_folder_comparison(table: pd.DataFrame, runs: pd.DataFrame, out: Path) -> Path:
    """`rnn-lab compare`'s figure: each metric per arm per folder.

    One panel per metric, stacked, sharing the arm axis. In each arm's slot every folder has
    its ok seeds as dots and its mean ± 95% CI as a diamond, in the folder's colour; thin grey
    lines join a seed's values across folders (what the paired test pairs). `*` over an arm:
    its difference from the reference folder is significant (Holm-adjusted p < alpha).
    """
    a = table.attrs
    metrics = [m for m in a["metrics"] if table.loc[table["metric"] == m, "n"].fillna(0).any()]
    if not metrics:
        raise PlotSkipped("no folder has an ok run with a value for the metrics compared")
    arms, folders = a["arms"], [f["label"] for f in a["folders"]]
    colors = arm_colors(folders)
    width = 0.7 / len(folders)  # each folder's share of an arm's slot
    offsets = {f: (i - (len(folders) - 1) / 2) * width for i, f in enumerate(folders)}
    fig = new_figure(
        max(6.5, 1.3 * len(arms) * max(1, len(folders) / 2) + 2.0), 2.6 * len(metrics) + 1.8
    )
    axes = fig.subplots(len(metrics), 1, sharex=True, squeeze=False)[:, 0]
    rng = np.random.default_rng(0)
    for ax, metric in zip(axes, metrics):
        rows = table[table["metric"] == metric]
        values = runs[runs["metric"] == metric]
        for i, arm in enumerate(arms):
            _seed_pair_lines(
                ax, values[values["arm"] == arm], [i + offsets[f] for f in folders], folders
            )
            for folder in folders:
                x = i + offsets[folder]
                y = values.loc[(values["arm"] == arm) & (values["folder"] == folder), "value"]
                jitter = rng.uniform(-0.15, 0.15, size=len(y)) * width
                ax.scatter(x + jitter, y, s=16, color=colors[folder], alpha=0.55, zorder=2)
                row = rows[(rows["arm"] == arm) & (rows["folder"] == folder)]
                if len(row):
                    _folder_mean_marker(ax, x, row.iloc[0], colors[folder])
            if rows.loc[rows["arm"] == arm, "significant"].any():
                _significance_star(ax, i, rows[rows["arm"] == arm], values[values["arm"] == arm])
        ax.margins(y=0.12)  # room for the stars above the highest error bar
        ax.set_ylabel(metric_axis_label(metric))
        ax.set_title(f"{metric}{_direction_hint(metric)}", fontsize="medium", loc="left")
        ax.grid(axis="y", alpha=0.3)
    bottom = axes[-1]
    bottom.set_xticks(range(len(arms)), [arm.replace(", ", "\n") for arm in arms], fontsize="small")
    bottom.set_xlim(-0.6, len(arms) - 0.4)
    bottom.set_xlabel("arm")
    handles = [Line2D([], [], ls="", marker="D", color=colors[f], label=f) for f in folders]
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncol=min(len(folders), 4),
        frameon=False,
        fontsize="small",
        title="folder (dots: seeds; ◆: mean ± 95% CI)",
        title_fontsize="small",
    )
    reference = a["reference"]
    fig.suptitle(
        f"Each metric per arm per folder (* = differs from {reference}, Holm p < {a['alpha']})"
    )
    return save_figure(fig, out)


def _significance_star(ax, x: float, rows: pd.DataFrame, values: pd.DataFrame) -> None:
    """A `*` just above the arm's highest point (seed value or CI end)."""
    tops = pd.concat([rows["ci_high"], rows["mean"], values["value"]]).to_numpy(float)
    tops = tops[np.isfinite(tops)]
    if len(tops):
        ax.annotate(
            "*",
            (x, tops.max()),
            xytext=(0, 2),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize="large",
            fontweight="bold",
        )


def _folder_mean_marker(ax, x: float, row, color) -> None:
    if not np.isfinite(row["mean"]):
        return
    err = None
    if np.isfinite(row["ci_low"]):
        err = [[row["mean"] - row["ci_low"]], [row["ci_high"] - row["mean"]]]
    ax.errorbar(
        [x],
        [row["mean"]],
        yerr=err,
        fmt="D",
        color=color,
        mec="black",
        mew=0.6,
        ms=6,
        capsize=3,
        zorder=3,
    )


def _seed_pair_lines(ax, values: pd.DataFrame, xs: list[float], folders: list[str]) -> None:
    """A thin line per seed through its values in every folder that ran it."""
    if values.empty:
        return
    wide = values.pivot_table(index="seed", columns="folder", values="value", aggfunc="mean")
    for _, seed_values in wide.iterrows():
        pts = [(x, seed_values.get(f)) for x, f in zip(xs, folders)]
        pts = [(x, y) for x, y in pts if y is not None and np.isfinite(y)]
        if len(pts) >= 2:
            ax.plot(*zip(*pts), color="grey", lw=0.6, alpha=0.5, zorder=1)
