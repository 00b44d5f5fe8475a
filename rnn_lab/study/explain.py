"""Do the recorded dynamics explain the outcome? The report's "What explains it" section.

The walkthrough's argument is that gradient flow decides what an RNN learns. A study can test
that on its own runs: `explain(df, metric)` relates the study's main metric to every dynamics
scalar of the collected table (rnn_lab.study.dynamics: spectral radius, gradient fall and
per-step decay, Jacobian bound, gradient norm, clipping, saturation) by Spearman's rank
correlation, three ways:

- over runs: every ok run with a finite metric and scalar, 95% CI from a percentile bootstrap
  over runs;
- within arms (seed to seed): each arm's values ranked within the arm, the ranks centred on
  the arm's mean rank, the centred ranks of all arms pooled into one correlation (Pearson of
  the centred ranks); only arms with at least MIN_SEEDS_PER_ARM such runs count, and the CI
  resamples runs within each arm. It answers whether a seed that, say, vanishes faster than
  its arm-mates also ends worse, with the arm's settings held fixed;
- between arms: Spearman over the arm means, the CI from resampling runs within each arm.

A number needs MIN_RUNS runs (MIN_ARMS arms between arms); below that the section says why
instead of printing one. Runs that are not ok (failed, diverged, ...) and ok runs without a
finite metric are left out and counted. The bootstrap draws from a fixed seed, so the same
table gives the same section. All of it is correlational, and the section says so.

`explain_section_md(df, settings, sweep_dir)` writes the section, explain.csv (one row per
scalar) and plots/explain_scatter.png (the metric against the strongest scalar, one colour per
arm).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from scipy import stats as sps

from rnn_lab.inspect.figure_io import new_figure, save_figure
from rnn_lab.run.rundir import atomic_write_text
from rnn_lab.study.collect import arm_order
from rnn_lab.study.dynamics import PROFILE_SCALARS, dynamics_columns, scalar_meaning
from rnn_lab.study.figures import PLOTS_DIR, arm_colors, legend_below
from rnn_lab.study.markdown import markdown_table
from rnn_lab.study.stats import (
    baseline_counterparts,
    fmt_number,
    metric_axis_label,
    metric_direction,
    status_group,
)

log = logging.getLogger(__name__)

EXPLAIN_TABLE = "explain.csv"
SCATTER_PLOT = "explain_scatter.png"

MIN_RUNS = 6  # runs behind any correlation (over runs, or pooled within arms)
MIN_SEEDS_PER_ARM = 3  # an arm's runs ranked against each other within the arm
MIN_ARMS = 4  # arm means behind a between-arm correlation
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # fixed: the same table gives the same CIs
CONFIDENCE = 0.95


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Correlation:
    """A rank correlation with its bootstrap CI; `note` says why there is no number."""

    rho: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    n: int = 0  # runs
    arms: int = 0  # arms contributing (within and between arms)
    note: str = ""

    @property
    def has_number(self) -> bool:
        return math.isfinite(self.rho)

    @property
    def excludes_zero(self) -> bool:
        return bool(self.ci_low > 0 or self.ci_high < 0)  # False when the CI is NaN


def _rowwise_r(a: np.ndarray, b: np.ndarray, centre: bool = True) -> np.ndarray:
    """Pearson's r of each row of a with the same row of b; NaN where a row is constant."""
    if centre:
        a = a - a.mean(axis=-1, keepdims=True)
        b = b - b.mean(axis=-1, keepdims=True)
    den = np.sqrt(np.sum(a * a, axis=-1) * np.sum(b * b, axis=-1))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.sum(a * b, axis=-1) / den
    return np.where(den > 1e-12, r, np.nan)


def _bootstrap(rho: float, boot: np.ndarray, **counts) -> Correlation:
    """rho with the central CONFIDENCE interval of its resamples. A resample in which a
    variable is constant has no rho; when more than 1 - CONFIDENCE of them are such, the
    variation rests on too few runs for a CI, and the note says so."""
    ok = boot[np.isfinite(boot)]
    degenerate = 1 - len(ok) / len(boot)
    if degenerate > 1 - CONFIDENCE:
        note = f"no CI: {degenerate:.0%} of resamples constant, too few runs differ"
        return Correlation(rho, note=note, **counts)
    tail = 100 * (1 - CONFIDENCE) / 2
    lo, hi = np.percentile(ok, [tail, 100 - tail])
    return Correlation(rho, float(lo), float(hi), **counts)


def _rng() -> np.random.Generator:
    return np.random.default_rng(BOOTSTRAP_SEED)


def _constant(values: np.ndarray) -> bool:
    return bool(np.ptp(values) == 0) if len(values) else True


def spearman_over_runs(x, y) -> Correlation:
    """Spearman's rho of x and y (one value per run), 95% CI from resampling runs."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = len(x)
    if n < MIN_RUNS:
        return Correlation(n=n, note=f"too few runs ({n}; needs {MIN_RUNS})")
    if _constant(x) or _constant(y):
        return Correlation(n=n, note="constant over the runs")
    rho = float(sps.spearmanr(x, y).statistic)
    idx = _rng().integers(0, n, size=(BOOTSTRAP_RESAMPLES, n))
    boot = _rowwise_r(sps.rankdata(x[idx], axis=1), sps.rankdata(y[idx], axis=1))
    return _bootstrap(rho, boot, n=n)


def _centred_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks along the last axis, minus their mean (ties share the average rank)."""
    ranks = sps.rankdata(values, axis=-1)
    return ranks - ranks.mean(axis=-1, keepdims=True)


def spearman_within_arms(x, y, arms) -> Correlation:
    """Seed-to-seed rank correlation inside arms, pooled: ranks within each arm, centred on
    the arm's mean rank, one Pearson r over all arms' centred ranks. Only arms of at least
    MIN_SEEDS_PER_ARM runs in which both variables vary count (an arm where one is constant
    says nothing about how they go together); the CI resamples runs within each arm."""
    x, y, arms = np.asarray(x, float), np.asarray(y, float), np.asarray(arms, object)
    groups = [np.flatnonzero(arms == a) for a in pd.unique(arms)]
    largest = max((len(g) for g in groups), default=0)
    seeded = [g for g in groups if len(g) >= MIN_SEEDS_PER_ARM]
    if sum(len(g) for g in seeded) < MIN_RUNS:
        note = f"not enough seeds: {largest} per arm at most"
        return Correlation(n=sum(len(g) for g in seeded), arms=len(seeded), note=note)
    groups = [g for g in seeded if not _constant(x[g]) and not _constant(y[g])]
    n = sum(len(g) for g in groups)
    if n < MIN_RUNS:
        note = f"varies within too few arms ({len(groups)} of {len(seeded)}, {n} runs)"
        return Correlation(n=n, arms=len(groups), note=note)
    rx = np.concatenate([_centred_ranks(x[g]) for g in groups])
    ry = np.concatenate([_centred_ranks(y[g]) for g in groups])
    rho = float(_rowwise_r(rx, ry, centre=False))
    rng = _rng()
    picks = [rng.choice(g, size=(BOOTSTRAP_RESAMPLES, len(g))) for g in groups]
    bx = np.concatenate([_centred_ranks(x[p]) for p in picks], axis=1)
    by = np.concatenate([_centred_ranks(y[p]) for p in picks], axis=1)
    return _bootstrap(rho, _rowwise_r(bx, by, centre=False), n=n, arms=len(groups))


def spearman_between_arms(x, y, arms) -> Correlation:
    """Spearman's rho over the arm means, without a CI: the arms are the study's design, not
    a sample, so resampling seeds would only say how stable these few means are."""
    x, y, arms = np.asarray(x, float), np.asarray(y, float), np.asarray(arms, object)
    groups = [np.flatnonzero(arms == a) for a in pd.unique(arms)]
    k, n = len(groups), len(x)
    if k < MIN_ARMS:
        return Correlation(n=n, arms=k, note=f"too few arms ({k}; needs {MIN_ARMS})")
    mx = np.array([x[g].mean() for g in groups])
    my = np.array([y[g].mean() for g in groups])
    if _constant(mx) or _constant(my):
        return Correlation(n=n, arms=k, note="the same in every arm")
    return Correlation(float(sps.spearmanr(mx, my).statistic), n=n, arms=k)


# --------------------------------------------------------------------------- the analysis


@dataclass
class Explanation:
    """What the section is written from."""

    metric: str | None
    rows: list[dict] = field(default_factory=list)  # one per scalar, strongest first
    runs: pd.DataFrame = field(default_factory=pd.DataFrame)  # the ok runs used
    n_runs: int = 0  # every collected run
    left_out: dict[str, int] = field(default_factory=dict)  # status group -> runs, + no metric
    constant: dict[str, float] = field(default_factory=dict)  # scalar -> its one value
    same_order: dict[str, tuple[str, bool]] = field(default_factory=dict)  # -> (earlier, reversed)
    note: str = ""  # why nothing could be related

    @property
    def strongest(self) -> dict | None:
        """The row of the largest |rho| over runs that has a CI (else of any rho)."""
        numbered = [r for r in self.rows if r["over_runs"].has_number]
        with_ci = [r for r in numbered if math.isfinite(r["over_runs"].ci_low)]
        return (with_ci or numbered or [None])[0]


def main_metric(settings: dict, df: pd.DataFrame) -> str | None:
    """The metric a study is judged by: the study's `metric`, else the first of its
    `metrics` the table has (the report's headline and heatmap metric), else val_loss."""
    for name in (settings.get("metric"), *(settings.get("metrics") or []), "val_loss"):
        if name and name in df.columns:
            return str(name)
    return None


def explain(df: pd.DataFrame, metric: str | None) -> Explanation:
    """Relate `metric` to every dynamics scalar of the table over the ok runs."""
    ex = Explanation(metric=metric, n_runs=len(df))
    if metric is None or not len(df):
        ex.note = "no runs or no metric to explain"
        return ex
    groups = df["status"].map(status_group)
    ex.left_out = {g: int(n) for g, n in groups[groups != "ok"].value_counts().items()}
    runs = df[groups == "ok"].copy()
    runs[metric] = pd.to_numeric(runs[metric], errors="coerce")
    finite = np.isfinite(runs[metric].to_numpy(float))
    if (~finite).any():
        ex.left_out[f"ok without a finite {metric}"] = int((~finite).sum())
    ex.runs = runs[finite]
    scalars = [c for c in dynamics_columns(df.columns) if c != metric]
    if not scalars:
        ex.note = (
            "the table has no dynamics scalar (runs trained with record=false or analyze=false)"
        )
        return ex
    kept: dict[str, np.ndarray] = {}  # scalar -> ranks over the runs where it is finite
    for scalar in scalars:
        values = pd.to_numeric(ex.runs[scalar], errors="coerce").to_numpy(float)
        has = np.isfinite(values)
        if not has.any():
            continue
        if _constant(values[has]):
            ex.constant[scalar] = float(values[has][0])
            continue
        twin = _same_order(values, kept)
        if twin is not None:
            ex.same_order[scalar] = twin
            continue
        kept[scalar] = _ranks_where_finite(values)
        ex.rows.append(_scalar_row(ex.runs[has], metric, scalar, values[has]))
    ex.rows.sort(key=lambda r: -abs(r["over_runs"].rho) if r["over_runs"].has_number else 1.0)
    return ex


def _same_order(values: np.ndarray, kept: dict[str, np.ndarray]) -> tuple[str, bool] | None:
    """(an earlier scalar, reversed?) when `values` rank the same runs exactly as it does (a
    per-step decay and the fall over one chunk length are monotone functions of each other)."""
    has = np.isfinite(values)
    for name, other in kept.items():
        if not np.array_equal(np.isfinite(other), has):
            continue
        if np.array_equal(other[has], sps.rankdata(values[has])):
            return name, False
        if np.array_equal(other[has], sps.rankdata(-values[has])):
            return name, True
    return None


def _ranks_where_finite(values: np.ndarray) -> np.ndarray:
    has = np.isfinite(values)
    ranks = np.full(len(values), np.nan)
    ranks[has] = sps.rankdata(values[has])
    return ranks


def _scalar_row(runs: pd.DataFrame, metric: str, scalar: str, values: np.ndarray) -> dict:
    y, arms = runs[metric].to_numpy(float), runs["arm"].to_numpy(object)
    return {
        "scalar": scalar,
        "over_runs": spearman_over_runs(values, y),
        "within_arms": spearman_within_arms(values, y, arms),
        "between_arms": spearman_between_arms(values, y, arms),
    }


def explain_frame(ex: Explanation) -> pd.DataFrame:
    """The rows as a flat table (explain.csv): per scalar and way, rho, CI, n, arms, note."""
    out = []
    for row in ex.rows:
        flat = {"metric": ex.metric, "scalar": row["scalar"]}
        for way in ("over_runs", "within_arms", "between_arms"):
            c: Correlation = row[way]
            flat.update(
                {
                    f"{way}_rho": c.rho,
                    f"{way}_ci_low": c.ci_low,
                    f"{way}_ci_high": c.ci_high,
                    f"{way}_n": c.n,
                    f"{way}_arms": c.arms,
                    f"{way}_note": c.note,
                }
            )
        out.append(flat)
    return pd.DataFrame(out)


# --------------------------------------------------------------------------- the section


def explain_section_md(
    df: pd.DataFrame, settings: dict, sweep_dir: str | Path | None = None
) -> list[str]:
    """The report's "What explains it" section; with sweep_dir, also writes explain.csv and
    plots/explain_scatter.png there (an old scatter is removed when none can be drawn)."""
    ex = explain(df, main_metric(settings, df))
    out = ["## What explains it\n"]
    sweep_dir = Path(sweep_dir) if sweep_dir is not None else None
    scatter = sweep_dir / PLOTS_DIR / SCATTER_PLOT if sweep_dir is not None else None
    if sweep_dir is not None:  # an earlier report's files would show data this one lacks
        scatter.unlink(missing_ok=True)
        (sweep_dir / EXPLAIN_TABLE).unlink(missing_ok=True)
    if ex.note:
        return out + [f"Nothing to relate: {ex.note}.\n"]
    out.append(_method_text(ex) + "\n")
    out.append(_used_runs_text(ex) + "\n")
    if ex.rows:
        out += [_correlation_table_md(ex), ""]
    out += _folded_md(ex)
    out += [" ".join(_verdict_sentences(ex)) + "\n"]
    strongest = ex.strongest
    if strongest is not None and scatter is not None:
        out.append(_scatter_md(ex, strongest, scatter, arm_colors(arm_order(df))))
    out += _arms_md(ex, settings, df)
    out += _meanings_md(ex)
    if sweep_dir is not None and sweep_dir.is_dir():
        atomic_write_text(sweep_dir / EXPLAIN_TABLE, explain_frame(ex).to_csv(index=False))
        out.append(f"All numbers: [`{EXPLAIN_TABLE}`]({EXPLAIN_TABLE}).\n")
    return out


def _scatter_md(ex: Explanation, row: dict, path: Path, colors: dict) -> str:
    """Draw the scatter and link it; a drawing error is logged and said, never fatal."""
    try:
        plot_explain_scatter(ex, row, path, colors)
    except Exception as e:
        log.exception("plot %s failed", SCATTER_PLOT)
        return f"`{SCATTER_PLOT}` not drawn: error while drawing: {type(e).__name__}: {e}.\n"
    return (
        f"{ex.metric} against {row['scalar']}, one point per ok run, coloured by arm:\n\n"
        f"![{SCATTER_PLOT}]({PLOTS_DIR}/{SCATTER_PLOT})\n"
    )


def _method_text(ex: Explanation) -> str:
    direction = metric_direction(ex.metric)
    sign = {"lower": " (worse)", "higher": " (better)"}.get(direction, "")
    return (
        f"How {ex.metric}, the study's main metric, goes with each dynamics scalar the runs "
        f"recorded: Spearman's ρ over the ok runs; within arms (seed to seed: ranks centred "
        f"within each arm of ≥ {MIN_SEEDS_PER_ARM} ok runs where both vary, pooled), and over "
        "the arm means (no CI there: the arms are the study's design, not a sample). "
        f"ρ > 0: runs with a larger scalar have a larger {ex.metric}{sign}. 95% CIs: "
        f"percentile bootstrap, {BOOTSTRAP_RESAMPLES} resamples of the runs (within each arm "
        f"for the within-arm ρ), seed {BOOTSTRAP_SEED}. No number below {MIN_RUNS} runs or "
        f"{MIN_ARMS} arms."
    )


def _used_runs_text(ex: Explanation) -> str:
    used = len(ex.runs)
    if not ex.left_out:
        return f"All {ex.n_runs} runs are ok and used."
    parts = ", ".join(f"{n} {what}" for what, n in ex.left_out.items())
    return (
        f"{used} of {ex.n_runs} runs used; left out of every correlation: {parts} (a run "
        "that did not finish ok has no comparable metric or dynamics; the Results section "
        "counts them)."
    )


def _rho_text(c: Correlation) -> str:
    """ "0.93 [0.74, 0.98]"; a rho without a CI with the reason; the reason alone."""
    if not c.has_number:
        return c.note
    if math.isfinite(c.ci_low):
        return f"{c.rho:.2f} [{c.ci_low:.2f}, {c.ci_high:.2f}]"
    return f"{c.rho:.2f}" + (f" ({c.note})" if c.note else "")


def _correlation_table_md(ex: Explanation) -> str:
    header = [
        "dynamics scalar",
        "ρ over runs [95% CI]",
        "n",
        "ρ within arms [95% CI]",
        "n (arms)",
        "ρ over arm means",
        "arms",
    ]
    rows = []
    for row in ex.rows:
        over, within, between = row["over_runs"], row["within_arms"], row["between_arms"]
        name = row["scalar"]
        if row is ex.strongest:
            name = f"**{name}**"
        rows.append(
            [
                name,
                _rho_text(over),
                over.n,
                _rho_text(within),
                f"{within.n} ({within.arms})" if within.has_number else "—",
                _rho_text(between),
                between.arms,
            ]
        )
    return markdown_table(header, rows)


def _folded_md(ex: Explanation) -> list[str]:
    out = []
    if ex.constant:
        values = ", ".join(f"{k} = {fmt_number(v)}" for k, v in ex.constant.items())
        out.append(f"The same in every ok run, so not related to anything: {values}.\n")
    if ex.same_order:
        pairs = ", ".join(
            f"{k} ({'reversed ' if rev else ''}as {twin})"
            for k, (twin, rev) in ex.same_order.items()
        )
        out.append(
            f"Left out because they order the runs exactly as a scalar above (same |ρ|): {pairs}.\n"
        )
    return out


def _verdict_sentences(ex: Explanation) -> list[str]:
    """The strongest association, whether its CI excludes 0, within vs between arms, and that
    it is correlational."""
    best = ex.strongest
    if best is None:
        reasons = sorted({r["over_runs"].note for r in ex.rows}) or ["no scalar varies"]
        return [f"No dynamics scalar can be related to {ex.metric}: {'; '.join(reasons)}."]
    name, over = best["scalar"], best["over_runs"]
    k = len(ex.rows)
    first = (
        f"Of the {k} dynamics scalar{'s' if k > 1 else ''} in the table, {name} goes with "
        f"{ex.metric} most strongly over the {over.n} ok runs: ρ = {_rho_text(over)}"
    )
    if over.excludes_zero:
        first += ", and the CI excludes 0."
    elif not math.isfinite(over.ci_low):
        first += ", so no association is established."
    else:
        first += ", but the CI includes 0"
        others = [r for r in ex.rows if r["over_runs"].excludes_zero]
        if others:
            first += (
                f"; {others[0]['scalar']} (ρ = {_rho_text(others[0]['over_runs'])}) is the "
                "strongest whose CI excludes 0."
            )
        else:
            first += ": no scalar is distinguishable from no association."
    sentences = [first, _within_sentence(ex, best)]
    sentences.append(
        "This is correlational: it does not show that the dynamics cause the outcome (the "
        f"arms differ in their settings, which can move both the dynamics and {ex.metric})."
    )
    return sentences


def _within_sentence(ex: Explanation, best: dict) -> str:
    """Seed to seed within arms against the arms' differences, for the strongest scalar."""
    over, within, between = best["over_runs"], best["within_arms"], best["between_arms"]
    means = f"over the {between.arms} arm means ρ = {_rho_text(between)}"
    if not between.has_number:
        means = f"over the arm means: {between.note}"
    sample = f"{within.n} runs in {within.arms} arms"
    if not within.has_number:
        text = f"Seed to seed within arms it cannot be tested ({within.note}); {means}."
    elif within.excludes_zero and over.excludes_zero and within.rho * over.rho > 0:
        text = (
            f"It holds seed to seed within arms too (ρ = {_rho_text(within)}, {sample}; "
            f"{means}), so it is not only a difference between the arms' settings."
        )
    elif within.excludes_zero and over.excludes_zero:
        text = (
            f"Seed to seed within arms it is reversed (ρ = {_rho_text(within)}, {sample}): "
            "the seeds of one arm go the other way, so the association over runs comes from "
            f"the differences between arms ({means})."
        )
    elif within.excludes_zero:
        text = (
            f"Seed to seed within arms, though, ρ = {_rho_text(within)} ({sample}; {means}): "
            "the seeds of one arm follow it while the differences between arms hide it."
        )
    elif over.excludes_zero:
        text = (
            f"Within arms, seed to seed, it is ρ = {_rho_text(within)} ({sample}; the CI "
            f"includes 0): the association comes from the differences between arms ({means}), "
            "not from how the seeds of one arm differ."
        )
    else:
        text = f"Within arms, seed to seed, ρ = {_rho_text(within)} ({sample}); {means}."
    others = [
        r
        for r in ex.rows
        if r is not best
        and r["within_arms"].excludes_zero
        and abs(r["within_arms"].rho) > abs(within.rho if within.has_number else 0.0)
    ]
    if others:
        top = max(others, key=lambda r: abs(r["within_arms"].rho))
        text += (
            f" Seed to seed, {top['scalar']} goes with {ex.metric} most strongly "
            f"(ρ = {_rho_text(top['within_arms'])})."
        )
    return text


# --------------------------------------------------------------------------- per arm


def _arm_stats(ex: Explanation, columns: list[str]) -> pd.DataFrame:
    """Per arm (best first by the metric): n, and mean, sd, min, max of metric and columns."""
    runs = ex.runs[["arm", ex.metric, *columns]].copy()
    for c in columns:
        runs[c] = pd.to_numeric(runs[c], errors="coerce")
    stats = runs.groupby("arm", sort=False).agg(["mean", "std", "min", "max", "count"])
    ascending = metric_direction(ex.metric) != "higher"
    return stats.sort_values((ex.metric, "mean"), ascending=ascending, kind="stable")


def _arms_md(ex: Explanation, settings: dict, df: pd.DataFrame) -> list[str]:
    """Per-arm means of the metric, the strongest scalar and the gradient profile, and how the
    best arm differs from its baseline (or, when it is a baseline, from the worst arm)."""
    strongest = ex.strongest
    named = [strongest["scalar"]] if strongest else []
    profile = [s for s in PROFILE_SCALARS if s in ex.runs.columns and s != ex.metric]
    columns = [
        c
        for c in dict.fromkeys([*named, *profile])
        if pd.to_numeric(ex.runs[c], errors="coerce").notna().any()
    ]
    if not columns or ex.runs["arm"].nunique() < 2:
        return []
    stats = _arm_stats(ex, columns)

    def cell(arm, col):
        mean, sd = stats.loc[arm, (col, "mean")], stats.loc[arm, (col, "std")]
        text = fmt_number(mean, strip_zeros=False)
        return text + (f" ± {fmt_number(sd, 2, strip_zeros=False)}" if math.isfinite(sd) else "")

    best_word = {"lower": "lowest", "higher": "highest"}.get(metric_direction(ex.metric), "")
    order = f"best ({best_word} {ex.metric}) first" if best_word else f"by {ex.metric}"
    out = [
        f"**Per arm** (mean ± sd over the ok runs, {order}): the strongest scalar and the "
        "gradient profile (per-step decay of the gradient over the chunk at step 1, the init's, "
        "and its median over training) beside the metric.\n"
    ]
    header = ["arm", "ok runs", metric_axis_label(ex.metric), *columns]
    rows = [
        [
            arm,
            int(stats.loc[arm, (ex.metric, "count")]),
            *[cell(arm, c) for c in [ex.metric, *columns]],
        ]
        for arm in stats.index
    ]
    out += [markdown_table(header, rows), ""]
    return out + _pair_md(ex, settings, df, stats, columns)


def _contrasts(baseline, metric: str, df: pd.DataFrame, stats: pd.DataFrame) -> tuple[list, str]:
    """[(arm, the arm it is set against)] and a title: every arm whose mean beats its declared
    baseline's, best first; else (no baseline declared, or none beats it) the best against the
    worst arm."""
    higher = metric_direction(metric) == "higher"
    mean = stats[(metric, "mean")]
    mapping = baseline_counterparts(df, baseline)[0] if baseline else {}
    pairs = [
        (arm, mapping[arm])
        for arm in stats.index
        if mapping.get(arm) in stats.index
        and (mean[arm] > mean[mapping[arm]] if higher else mean[arm] < mean[mapping[arm]])
    ]
    if pairs:
        return pairs, "Arms that beat their baseline"
    return [(stats.index[0], stats.index[-1])], "The best arm against the worst"


def _pair_md(ex, settings: dict, df: pd.DataFrame, stats: pd.DataFrame, columns) -> list[str]:
    """The arms that beat their baseline (else the best against the worst): does each scalar
    differ the way its association over runs, and the vanishing-gradient argument, predict
    from the gap in the metric?"""
    if metric_direction(ex.metric) is None or len(stats) < 2:
        return []
    # without a declared baseline the first arm would stand in for one: none is named then
    pairs, title = _contrasts(settings.get("baseline"), ex.metric, df, stats)
    out = [
        f"**{title}** (arm means; *in line* / *against*: the scalar differs the way its "
        f"association with {ex.metric} over runs predicts from the gap in {ex.metric}, or the "
        "other way; *n.s.*: that association's CI includes 0, so it explains no gap; *apart*: "
        "no seed of one arm lies within the other's range):\n"
    ]
    rows = []
    for arm, other in pairs:
        m_arm, m_other = (stats.loc[a, (ex.metric, "mean")] for a in (arm, other))
        cells = [_gap_cell(ex, stats, col, (arm, other), m_arm - m_other) for col in columns]
        rows.append([arm, other, f"{fmt_number(m_arm)} vs {fmt_number(m_other)}", *cells])
    out += [markdown_table(["arm", "against", ex.metric, *columns], rows), ""]
    vanishing = _vanishing_text(stats, columns, pairs)
    return out + ([f"{vanishing}\n"] if vanishing else [])


def _gap_cell(ex, stats, col: str, pair: tuple[str, str], metric_gap: float) -> str:
    """ "0.0797 vs 0.912, apart, n.s.": the two arms' means of a scalar, whether their seeds
    overlap, and whether the gap goes the way the scalar's association over runs predicts."""
    arm, other = pair
    v_arm, v_other = (stats.loc[a, (col, "mean")] for a in pair)
    lo = max(stats.loc[arm, (col, "min")], stats.loc[other, (col, "min")])
    hi = min(stats.loc[arm, (col, "max")], stats.loc[other, (col, "max")])
    words = [f"{fmt_number(v_arm)} vs {fmt_number(v_other)}"]
    if lo > hi:
        words.append("apart")
    over = _over_runs_of(ex, col)
    predicted = np.sign(metric_gap) * np.sign(over.rho) if over is not None else 0
    actual = np.sign(v_arm - v_other)
    if over is None or not over.excludes_zero:
        words.append("n.s.")
    elif actual != 0 and predicted != 0:
        words.append("in line" if actual == predicted else "against")
    return ", ".join(words)


def _over_runs_of(ex: Explanation, col: str) -> Correlation | None:
    """The over-runs correlation of a scalar, also for one folded into a twin (sign flipped
    when it orders the runs in reverse)."""
    for row in ex.rows:
        if row["scalar"] == col:
            return row["over_runs"]
    if col in ex.same_order:
        twin, reverse = ex.same_order[col]
        c = _over_runs_of(ex, twin)
        if c is not None and reverse:
            return Correlation(-c.rho, -c.ci_high, -c.ci_low, c.n, c.arms, c.note)
        return c
    return None


def _vanishing_text(stats: pd.DataFrame, columns, pairs: list[tuple[str, str]]) -> str:
    """Whether each better arm's gradient vanishes faster or more slowly than the arm it beats,
    by each gradient-flow scalar, against the walkthrough's argument that a gradient that vanishes
    faster learns worse; arms with the same answer share a sentence."""
    groups: dict[tuple, list[str]] = {}
    for arm, other in pairs:
        faster, slower = [], []
        for col in columns:
            way = scalar_meaning(col).vanishing
            gap = stats.loc[arm, (col, "mean")] - stats.loc[other, (col, "mean")]
            if way is not None and gap != 0:
                (faster if (gap < 0) == (way == "lower") else slower).append(col)
        if faster or slower:
            groups.setdefault((tuple(faster), tuple(slower)), []).append(arm)
    out = []
    for (faster, slower), arms in groups.items():
        who = _join(arms)
        if faster and not slower:
            out.append(
                f"By {_join(faster)}, the gradient of {who} vanishes faster over the chunk than "
                "that of the arm it beats: the walkthrough's argument (a gradient that vanishes "
                "faster learns worse) predicts the opposite, so the gradient profile does not "
                "explain the gap."
            )
        elif slower and not faster:
            out.append(
                f"By {_join(slower)}, the gradient of {who} vanishes more slowly than that of "
                "the arm it beats, as the walkthrough's argument predicts."
            )
        else:
            out.append(
                f"The gradient of {who} vanishes faster by {_join(faster)} but more slowly by "
                f"{_join(slower)} than that of the arm it beats: the profile gives no one answer."
            )
    return " ".join(out)


def _join(words) -> str:
    words = list(words)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _meanings_md(ex: Explanation) -> list[str]:
    names = [r["scalar"] for r in ex.rows] + list(ex.constant) + list(ex.same_order)
    if not names:
        return []
    out = ["<details><summary>What the scalars are</summary>\n"]
    out += [f"- `{name}`: {scalar_meaning(name).meaning}" for name in names]
    return out + ["\n</details>\n"]


# --------------------------------------------------------------------------- the figure


def plot_explain_scatter(ex: Explanation, row: dict, out: Path, colors: dict) -> Path:
    """The metric against one scalar, a point per ok run, coloured by arm (legend below)."""
    scalar, metric = row["scalar"], ex.metric
    runs = ex.runs
    x = pd.to_numeric(runs[scalar], errors="coerce").to_numpy(float)
    y = runs[metric].to_numpy(float)
    fig = new_figure(7.5, 5.5)
    ax = fig.subplots()
    handles, labels = [], []
    for arm in arm_order(runs):
        pick = (runs["arm"] == arm).to_numpy() & np.isfinite(x)
        if not pick.any():
            continue
        ax.scatter(x[pick], y[pick], s=32, color=colors.get(arm, "grey"), alpha=0.85, zorder=2)
        handles.append(Line2D([], [], ls="", marker="o", color=colors.get(arm, "grey")))
        labels.append(arm)
    finite = x[np.isfinite(x)]
    if len(finite) and finite.min() > 0 and finite.max() / finite.min() > 100:
        ax.set_xscale("log")  # a gradient's fall spans orders of magnitude across arms
    unit = scalar_meaning(scalar).unit
    ax.set_xlabel(f"{scalar} ({unit})" if unit else scalar)
    ax.set_ylabel(metric_axis_label(metric))
    ax.grid(alpha=0.3)
    over = row["over_runs"]
    ax.set_title(
        f"{metric} against {scalar}: Spearman ρ = {_rho_text(over)}, {over.n} ok runs",
        fontsize="medium",
        loc="left",
    )
    legend_below(fig, handles, labels)
    return save_figure(fig, out)
