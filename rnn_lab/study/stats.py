"""Seed-aggregated statistics, the grid ledger and arm-vs-baseline comparisons.

Everything works on the table `rnn_lab.study.collect.collect` returns (one row per run, an `arm`
column, a `seed` column, a `status` column and metric columns). Runs whose status is not
`ok` (failed, diverged, incomplete, damaged, conflict) are counted per arm and left out of
every mean and test; they are never dropped silently.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from rnn_lab.run.rundir import (
    CONFLICT,
    DAMAGED,
    DIVERGED,
    FAILED,
    INCOMPLETE,
    INTERRUPTED,
    OK,
    RUNNING,
)
from rnn_lab.study.collect import arm_order
from rnn_lab.study.grid import arm_label, canonical

CONFIDENCE = 0.95
ALPHA = 0.05

# Which way is better, per metric: "lower", "higher", or None (a property, not a score, e.g.
# the spectral radius: a comparison then says "higher"/"lower" instead of "better"/"worse").
METRIC_DIRECTION: dict[str, str | None] = {
    "final_loss": "lower",
    "val_loss": "lower",
    "best_val_loss": "lower",
    "bits_per_char": "lower",
    "val_bits_per_char": "lower",
    "wall_time_s": "lower",
    "steps_per_s": "higher",
    "vocab_hit_rate": "higher",
    "category_separation": "higher",
    "noun_verb_separation": "higher",
    "memory_span": "higher",
    "memory_lag1_accuracy": "higher",
    "accuracy": "higher",
    "position_accuracy": "higher",
    "spectral_radius": None,
    "final_grad_norm": None,
    # sequence tasks (rnn_lab/inspect/task_metrics.py)
    "mse": "lower",  # adding: squared error of the answer
    "ce_per_step": "lower",  # copy: nats per time step over the whole sequence
    "recall_ce": "lower",  # copy: nats per recall step
    "recall_accuracy": "higher",
    "memory_capacity": "higher",  # sum of squared correlations over the delays
    # the structure metrics' margins over their baselines (rnn_lab/inspect/elman_structure.py)
    "dendrogram_noun_verb_ari": "higher",
    **{
        f"{name}_margin{part}": "higher"
        for name in (
            "category_separation",
            "noun_verb_separation",
            "noun_category_separation",
            "verb_category_separation",
        )
        for part in ("", "_ci_low", "_ci_high")
    },
    "dendrogram_noun_verb_ari_margin": "higher",
    # properties of the dynamics, not scores: the gradient's fall and per-step decay over a
    # chunk, and gated cells' per-gate spectral radii and gate saturation (rnn, gru, lstm gates)
    **{
        f"gradient_{kind}_{at}": None
        for kind in ("fall", "decay")
        for at in ("first", "median", "last")
    },
    **{
        f"{what}_{gate}": None
        for what in ("spectral_radius", "gate_saturation")
        for gate in "rznifgo"
    },
}

# Units for sentences, axis labels and tables; a metric not listed has none.
METRIC_UNITS: dict[str, str] = {
    "final_loss": "nats/char",
    "val_loss": "nats/char",
    "best_val_loss": "nats/char",
    "bits_per_char": "bits/char",
    "val_bits_per_char": "bits/char",
    "wall_time_s": "s",
    "steps_per_s": "steps/s",
    "memory_span": "characters",
    "ce_per_step": "nats/step",
    "recall_ce": "nats/step",
}

# Status -> the per-arm counter it goes to. Anything not listed (an unknown status) counts as
# failed, so it is visible rather than lost.
STATUS_GROUP = {
    OK: "ok",
    DIVERGED: "diverged",
    FAILED: "failed",
    INCOMPLETE: "incomplete",
    RUNNING: "incomplete",
    INTERRUPTED: "incomplete",
    DAMAGED: "damaged",
    CONFLICT: "conflict",
}
# The counters, in the order tables show them.
STATUS_GROUPS = ("ok", "failed", "diverged", "incomplete", "damaged", "conflict")


def metric_direction(metric: str) -> str | None:
    """ "lower", "higher" or None; names ending in loss/error default to lower-is-better."""
    if metric in METRIC_DIRECTION:
        return METRIC_DIRECTION[metric]
    name = metric.rsplit(".", 1)[-1]
    if name.endswith(("loss", "error", "bits_per_char")):
        return "lower"
    if name.endswith(("accuracy", "hit_rate", "separation")):
        return "higher"
    return None


def metric_unit(metric: str) -> str:
    return METRIC_UNITS.get(metric, "")


def metric_axis_label(metric: str) -> str:
    unit = metric_unit(metric)
    return f"{metric} ({unit})" if unit else metric


def status_group(status) -> str:
    return STATUS_GROUP.get(str(status), "failed")


# --------------------------------------------------------------------------- summaries


def mean_ci(values: Iterable[float], confidence: float = CONFIDENCE) -> dict:
    """n, mean, std (ddof=1), t-based CI of the mean, min, max of the finite values."""
    x = np.asarray([v for v in values if v is not None], dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    out = {
        "n": n,
        "mean": math.nan,
        "std": math.nan,
        "ci_low": math.nan,
        "ci_high": math.nan,
        "min": math.nan,
        "max": math.nan,
    }
    if n == 0:
        return out
    out.update(mean=float(x.mean()), min=float(x.min()), max=float(x.max()))
    if n >= 2:
        std = float(x.std(ddof=1))
        half = float(sps.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
        out.update(std=std, ci_low=out["mean"] - half, ci_high=out["mean"] + half)
    return out


def aggregate(
    df: pd.DataFrame,
    metrics: Sequence[str],
    arm_keys: Sequence[str] | None = None,
    confidence: float = CONFIDENCE,
) -> pd.DataFrame:
    """Per arm and metric: run counts by status and mean/std/CI/min/max over ok runs.

    Long format, one row per (arm, metric): arm, <arm keys>, metric, n_runs, n_ok, n (ok runs
    with a finite value), n_failed, n_diverged, n_incomplete, n_damaged, n_conflict, mean, std,
    ci_low, ci_high, min, max. A metric missing from the table gives rows with n = 0.
    """
    arm_keys = list(arm_keys if arm_keys is not None else df.attrs.get("arm_keys", []))
    arm_keys = [k for k in arm_keys if k in df.columns]
    rows = []
    for arm in arm_order(df):
        runs = df[df["arm"] == arm]
        groups = runs["status"].map(status_group)
        counts = {g: int((groups == g).sum()) for g in STATUS_GROUPS}
        ok = runs[groups == "ok"]
        for metric in metrics:
            values = pd.to_numeric(ok[metric], errors="coerce") if metric in ok else pd.Series([])
            summary = mean_ci(values.tolist(), confidence)
            rows.append(
                {
                    "arm": arm,
                    **{k: runs[k].iloc[0] for k in arm_keys},
                    "metric": metric,
                    "n_runs": len(runs),
                    "n_ok": counts["ok"],
                    "n": summary["n"],
                    **{f"n_{g}": counts[g] for g in STATUS_GROUPS[1:]},
                    **{k: summary[k] for k in ("mean", "std", "ci_low", "ci_high", "min", "max")},
                }
            )
    columns = [
        "arm",
        *arm_keys,
        "metric",
        "n_runs",
        "n_ok",
        "n",
        *(f"n_{g}" for g in STATUS_GROUPS[1:]),
        "mean",
        "std",
        "ci_low",
        "ci_high",
        "min",
        "max",
    ]
    return pd.DataFrame(rows, columns=columns)


# --------------------------------------------------------------------------- grid ledger


def grid_ledger(df: pd.DataFrame, grid: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """Declared grid cells (arm x seed) that have no usable run in the table: no run
    directory at all, or only a damaged one (it has to be run again either way).

    `grid` maps an override key (`init`, `seq_len`, `seed`, `optim.momentum`) to its declared
    values (default: `df.attrs["grid"]`). Values are compared canonically (1 == 1.0 == "1").
    Returns one row per missing cell: the grid keys, `arm` (labelled like the table's arms)
    and `seed`. Keys absent from the table's columns cannot be checked; they are listed in
    `attrs["unchecked_keys"]`. `attrs["n_cells"]` is the number of declared cells.
    """
    grid = dict(grid if grid is not None else df.attrs.get("grid", {}))
    grid = {k: list(v) for k, v in grid.items() if v}
    unchecked = [k for k in grid if k not in df.columns]
    keys = [k for k in grid if k in df.columns]
    arm_keys = [k for k in df.attrs.get("arm_keys", []) if k in keys] or [
        k for k in keys if k != "seed" and len(grid[k]) > 1
    ]
    usable = df[df["status"] != DAMAGED] if "status" in df else df
    present = {tuple(canonical(v) for v in row) for row in usable[keys].itertuples(index=False)}
    missing = []
    for cell in itertools.product(*(grid[k] for k in keys)):
        if tuple(canonical(v) for v in cell) in present:
            continue
        values = dict(zip(keys, cell))
        missing.append(
            {
                **values,
                "arm": arm_label({k: values[k] for k in arm_keys}),
                "seed": values.get("seed"),
            }
        )
    out = pd.DataFrame(missing, columns=[*keys, "arm"] + ([] if "seed" in keys else ["seed"]))
    out.attrs["unchecked_keys"] = unchecked
    out.attrs["n_cells"] = math.prod(len(grid[k]) for k in keys) if keys else 0
    return out


# --------------------------------------------------------------------------- comparisons


def holm_adjust(pvalues: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni step-down adjusted p-values, in the input order.

    With the m finite p-values sorted ascending, p_adj(i) = max_{j<=i} min(1, (m-j+1) p(j))
    (i, j counted from 1). NaN p-values (comparisons that could not be made) stay NaN and do
    not count towards m.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = len(finite)
    if m == 0:
        return out
    order = finite[np.argsort(p[finite], kind="stable")]
    running = 0.0
    for rank, idx in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[idx]))
        out[idx] = running
    return out


def baseline_counterparts(
    df: pd.DataFrame, baseline: dict | str | None, arm_keys: Sequence[str] | None = None
) -> tuple[dict[str, str | None], dict, list[str]]:
    """For each arm, the arm it is compared against; also the baseline used and notes.

    `baseline` names values for some arm keys (`{"init": "orthogonal"}`). An arm's
    counterpart keeps its own values on the other keys and takes the baseline's values on
    these, so in an init x activation grid every init is compared with orthogonal under the
    same activation. With no baseline (or one matching no arm), the first arm is the baseline.
    Returns ({arm: counterpart arm or None}, the baseline dict used, notes); arms that are
    themselves baselines are not keys of the mapping.
    """
    arm_keys = [
        k
        for k in (arm_keys if arm_keys is not None else df.attrs.get("arm_keys", []))
        if k in df.columns
    ]
    notes: list[str] = []
    arms = arm_order(df)
    first = df.drop_duplicates("arm").set_index("arm")
    baseline = parse_baseline(baseline)
    # A baseline may name a group choice (`init`) or its config key (`init.name`): accept both.
    resolved = {}
    for k, v in baseline.items():
        key = k
        if key not in arm_keys and key.endswith(".name") and key[: -len(".name")] in arm_keys:
            key = key[: -len(".name")]
        if key not in arm_keys and f"{key}.name" in arm_keys:
            key = f"{key}.name"
        if key in arm_keys:
            resolved[key] = v
        else:
            notes.append(f"baseline key {k!r} is not an axis of this sweep; ignored")
    if resolved and not any(
        all(canonical(first.loc[a, k]) == canonical(v) for k, v in resolved.items()) for a in arms
    ):
        notes.append(f"no arm matches the baseline {arm_label(resolved)}")
        resolved = {}
    if not resolved and arms:
        resolved = {k: first.loc[arms[0], k] for k in arm_keys}
        if baseline:
            notes.append(f"using the first arm ({arms[0]}) as the baseline instead")
        else:
            notes.append(f"no baseline declared; using the first arm ({arms[0]}) as the baseline")

    def key_of(arm, substitute):
        return tuple(
            canonical(resolved[k]) if substitute and k in resolved else canonical(first.loc[arm, k])
            for k in arm_keys
        )

    by_key = {key_of(a, False): a for a in arms}
    mapping: dict[str, str | None] = {}
    for arm in arms:
        if all(canonical(first.loc[arm, k]) == canonical(v) for k, v in resolved.items()):
            continue
        mapping[arm] = by_key.get(key_of(arm, True))
    return mapping, resolved, notes


def parse_baseline(baseline) -> dict:
    """A dict, or text like "init=orthogonal, activation=tanh", as {key: value}."""
    if not baseline:
        return {}
    if isinstance(baseline, dict):
        return dict(baseline)
    out = {}
    for part in str(baseline).split(","):
        if "=" in part:
            k, v = part.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def _ok_values_by_seed(df: pd.DataFrame, arm: str, metric: str) -> pd.Series:
    runs = df[(df["arm"] == arm) & (df["status"].map(status_group) == "ok")]
    if metric not in runs:
        return pd.Series(dtype=float)
    values = pd.to_numeric(runs[metric], errors="coerce")
    keep = np.isfinite(values)
    # A seed run twice in one arm (a rerun) contributes its mean, so pairs stay one per seed.
    return values[keep].groupby(runs.loc[keep, "seed"]).mean()


def compare_pair(
    arm_values: pd.Series, base_values: pd.Series, confidence: float = CONFIDENCE
) -> dict:
    """Compare one arm with its baseline; both Series are metric values indexed by seed.

    Paired t-test over shared seeds when there are at least 2; otherwise Welch's t-test if
    both sides have at least 2 runs; otherwise no test. `diff` is arm minus baseline.
    """
    shared = arm_values.index.intersection(base_values.index)
    result = {
        "n_pairs": len(shared),
        "n_arm": len(arm_values),
        "n_baseline": len(base_values),
        "mean_arm": float(arm_values.mean()) if len(arm_values) else math.nan,
        "mean_baseline": float(base_values.mean()) if len(base_values) else math.nan,
        "diff": math.nan,
        "ci_low": math.nan,
        "ci_high": math.nan,
        "t": math.nan,
        "dof": math.nan,
        "p": math.nan,
        "effect_size": math.nan,
        "effect_name": "",
        "test": "none",
        "note": "",
    }
    q = 0.5 + confidence / 2
    if len(shared) >= 2:
        a = arm_values.loc[shared].to_numpy(float)
        b = base_values.loc[shared].to_numpy(float)
        d = a - b
        n = len(d)
        mean, sd = float(d.mean()), float(d.std(ddof=1))
        half = float(sps.t.ppf(q, n - 1)) * sd / math.sqrt(n)
        result.update(
            test="paired t",
            diff=mean,
            ci_low=mean - half,
            ci_high=mean + half,
            dof=n - 1,
            effect_name="d_z",
        )
        # Differences equal up to rounding (e.g. 2.1 - 1.1 vs 3.1 - 2.1) have no real spread;
        # a t-test on rounding noise would report a meaningless t.
        if sd > 1e-12 * max(1.0, float(np.abs(a).max()), float(np.abs(b).max())):
            t, p = sps.ttest_rel(a, b)
            result.update(t=float(t), p=float(p), effect_size=mean / sd)
        elif mean == 0:  # identical on every seed: no evidence of any difference
            result.update(t=0.0, p=1.0, effect_size=0.0, note="identical on every shared seed")
        else:  # the same nonzero difference on every seed: t is infinite
            result.update(
                t=math.copysign(math.inf, mean),
                p=0.0,
                effect_size=math.copysign(math.inf, mean),
                note="the same difference on every shared seed",
            )
        return result
    if len(arm_values) >= 2 and len(base_values) >= 2:
        a, b = arm_values.to_numpy(float), base_values.to_numpy(float)
        na, nb = len(a), len(b)
        va, vb = a.var(ddof=1), b.var(ddof=1)
        mean = float(a.mean() - b.mean())
        se = math.sqrt(va / na + vb / nb)
        note = f"Welch's t-test: fewer than 2 shared seeds ({len(shared)}), {na} vs {nb} runs"
        pooled = math.sqrt(((na - 1) * va + (nb - 1) * vb) / (na + nb - 2))
        result.update(test="Welch t", diff=mean, effect_name="d", note=note)
        if se > 0:
            dof = (va / na + vb / nb) ** 2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
            half = float(sps.t.ppf(q, dof)) * se
            t, p = sps.ttest_ind(a, b, equal_var=False)
            result.update(
                ci_low=mean - half,
                ci_high=mean + half,
                t=float(t),
                p=float(p),
                dof=float(dof),
                effect_size=mean / pooled,
            )
        else:
            result.update(
                ci_low=mean,
                ci_high=mean,
                p=1.0 if mean == 0 else 0.0,
                effect_size=0.0 if mean == 0 else math.copysign(math.inf, mean),
            )
        return result
    result["note"] = (
        f"not enough ok runs ({len(arm_values)} vs {len(base_values)}, "
        f"{len(shared)} shared seeds; a test needs 2 shared seeds or 2 runs on each side)"
    )
    return result


def compare_to_baseline(
    df: pd.DataFrame,
    metrics: Sequence[str],
    baseline: dict | str | None = None,
    arm_keys: Sequence[str] | None = None,
    confidence: float = CONFIDENCE,
    alpha: float = ALPHA,
) -> pd.DataFrame:
    """Every arm against its baseline counterpart, for each metric; Holm across arms.

    The Holm family is the set of comparisons of one metric (one p-value per non-baseline
    arm). Columns: metric, arm, baseline, test, n_pairs, n_arm, n_baseline, mean_arm,
    mean_baseline, diff (arm - baseline), ci_low, ci_high, t, dof, p, p_holm, effect_size,
    effect_name, significant, note. `attrs["baseline"]` and `attrs["notes"]` say which
    baseline was used and why.
    """
    mapping, used, notes = baseline_counterparts(df, baseline, arm_keys)
    rows = []
    for metric in metrics:
        metric_rows = []
        for arm, base in mapping.items():
            row = {"metric": metric, "arm": arm, "baseline": base}
            if base is None:
                row.update(compare_pair(pd.Series(dtype=float), pd.Series(dtype=float)))
                row["note"] = "no baseline arm with the same other settings"
            else:
                row.update(
                    compare_pair(
                        _ok_values_by_seed(df, arm, metric),
                        _ok_values_by_seed(df, base, metric),
                        confidence,
                    )
                )
            metric_rows.append(row)
        adjusted = holm_adjust([r["p"] for r in metric_rows])
        for row, p_holm in zip(metric_rows, adjusted):
            row["p_holm"] = float(p_holm)
            row["significant"] = bool(np.isfinite(p_holm) and p_holm < alpha)
        rows.extend(metric_rows)
    columns = [
        "metric",
        "arm",
        "baseline",
        "test",
        "n_pairs",
        "n_arm",
        "n_baseline",
        "mean_arm",
        "mean_baseline",
        "diff",
        "ci_low",
        "ci_high",
        "t",
        "dof",
        "p",
        "p_holm",
        "effect_size",
        "effect_name",
        "significant",
        "note",
    ]
    out = pd.DataFrame(rows, columns=columns)
    out.attrs["baseline"] = used
    out.attrs["notes"] = notes
    out.attrs["alpha"] = alpha
    return out


# --------------------------------------------------------------------------- claims' tests

POWER = 0.8  # the power `seeds_to_decide` plans for
MAX_SEEDS_TO_DECIDE = 10_000


def difference_ci(
    arm_values: pd.Series, target, confidence: float = CONFIDENCE, factor: float = 1.0
) -> dict:
    """The difference arm - factor x target with its CI: `target` a number (the arm's t-interval
    shifted by it) or a Series of values indexed by seed (`compare_pair`: paired over shared
    seeds, Welch's t otherwise). Keys: n, diff, ci_low, ci_high, sd (of the paired
    differences or of the arm; Welch: sqrt(sd_a^2 + sd_b^2)), test, and compare_pair's keys for
    a Series."""
    if isinstance(target, pd.Series):
        c = compare_pair(arm_values, target * factor, confidence)
        sd = math.nan
        shared = arm_values.index.intersection(target.index)
        if c["test"] == "paired t":
            sd = float((arm_values.loc[shared] - factor * target.loc[shared]).std(ddof=1))
        elif c["test"] == "Welch t":
            sd = math.sqrt(arm_values.var(ddof=1) + (factor * target).var(ddof=1))
        return {**c, "n": c["n_pairs"] if c["test"] == "paired t" else c["n_arm"], "sd": sd}
    s = mean_ci(arm_values.to_numpy(float) - factor * float(target), confidence)
    return {
        "n": s["n"],
        "diff": s["mean"],
        "ci_low": s["ci_low"],
        "ci_high": s["ci_high"],
        "sd": s["std"],
        "test": "t" if s["n"] >= 2 else "none",
        "note": "" if s["n"] >= 2 else f"{s['n']} ok run: no CI",
    }


def equivalence_verdict(hold_ci: tuple[float, float], fail_ci: tuple[float, float], margin: float):
    """TOST: "holds" when the 90% CI of the difference (hold_ci) lies inside (-margin, margin),
    "fails" when the 95% CI (fail_ci) lies wholly outside [-margin, margin], else
    "inconclusive" (also when a CI is not finite)."""
    lo90, hi90 = hold_ci
    lo95, hi95 = fail_ci
    if not all(math.isfinite(x) for x in (lo90, hi90, lo95, hi95, margin)):
        return "inconclusive"
    if -margin < lo90 and hi90 < margin:
        return "holds"
    if lo95 > margin or hi95 < -margin:
        return "fails"
    return "inconclusive"


def seeds_for_power(
    effect: float, sd: float, alpha: float, power: float = POWER, max_n: int = MAX_SEEDS_TO_DECIDE
) -> int | None:
    """The smallest n whose one-sided one-sample t-test at level alpha detects a true mean
    `effect` away from the line with the given power, when the values spread with sd (the
    noncentral t). None when no n up to max_n does (no effect, or no spread to plan from)."""
    if not (math.isfinite(effect) and math.isfinite(sd)) or effect <= 0 or sd <= 0:
        return None
    lo, hi = 2, max_n

    def enough(n: int) -> bool:
        crit = sps.t.ppf(1 - alpha, n - 1)
        return float(sps.nct.sf(crit, n - 1, effect * math.sqrt(n) / sd)) >= power

    if not enough(hi):
        return None
    while lo < hi:  # power grows with n: bisect
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid + 1, hi)
    return lo


def seeds_to_decide(diff: float, sd: float, op: str, margin: float | None = None) -> int | None:
    """Seeds that would decide a claim with 80% power if the observed mean difference `diff`
    (arm - target) and spread `sd` were the truth: for an inequality, the 95% CI leaving the
    line (one-sided level 0.025); for `within`, the 90% CI inside +-margin (TOST, 0.05) when
    |diff| < margin, else the 95% CI outside it. Reported only: a study never adds seeds
    because of it."""
    if op == "within":
        if margin is None:
            return None
        gap = margin - abs(diff)
        return seeds_for_power(gap, sd, 0.05) if gap > 0 else seeds_for_power(-gap, sd, 0.025)
    return seeds_for_power(abs(diff), sd, (1 - CONFIDENCE) / 2)


# --------------------------------------------------------------------------- words


def fmt_number(x: float, digits: int = 3, strip_zeros: bool = True) -> str:
    """`digits` significant digits, no exponent in the usual range.

    Sentences drop trailing zeros ("by 0.2"); tables keep them so a column lines up.
    """
    if x is None or np.isnan(x):
        return "n/a"
    if np.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(x)))
    if magnitude < -3 or magnitude >= 6:
        return f"{x:.{digits - 1}e}"
    decimals = max(0, digits - 1 - magnitude)
    text = f"{x:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if strip_zeros and "." in text else text


def fmt_p(p: float) -> str:
    if p is None or not np.isfinite(p):
        return "p = n/a"
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.2g}" if p < 0.1 else f"p = {p:.2f}"


def describe_comparison(row: dict | pd.Series, alpha: float = ALPHA) -> str:
    """One sentence for one comparison row of `compare_to_baseline`.

    "init=xavier is worse than init=orthogonal on final_loss by 0.21 nats/char (95% CI
    0.15..0.27, p = 0.003 Holm-adjusted, 5 paired seeds, d_z = 2.1)", or "no detectable
    difference between ... (...)" when the Holm-adjusted p is not below alpha.
    """
    row = dict(row)
    metric, arm, base = row["metric"], row["arm"], row["baseline"]
    unit = metric_unit(metric)
    unit_text = f" {unit}" if unit else ""
    if base is None or row["test"] == "none":
        against = base if base is not None else "a baseline"
        return f"{arm} vs {against} on {metric}: not compared, {row['note']}."
    diff, lo, hi = row["diff"], row["ci_low"], row["ci_high"]
    if row["test"] == "paired t":
        sample = f"{row['n_pairs']} paired seeds"
    else:
        sample = (
            f"Welch's t-test, {row['n_arm']} vs {row['n_baseline']} runs, "
            f"{row['n_pairs']} shared seeds"
        )
    effect = f"{row['effect_name']} = {fmt_number(abs(row['effect_size']), 2)}"
    stats_text = f"{fmt_p(row['p_holm'])} Holm-adjusted, {sample}, {effect}"
    significant = np.isfinite(row["p_holm"]) and row["p_holm"] < alpha
    if not significant:
        return (
            f"no detectable difference between {arm} and {base} on {metric}: "
            f"{_signed(diff)}{unit_text} (95% CI {fmt_number(lo)}..{fmt_number(hi)}, "
            f"{stats_text})."
        )
    direction = metric_direction(metric)
    higher = diff > 0
    if direction is None:
        word = "higher" if higher else "lower"
    else:
        word = "better" if higher == (direction == "higher") else "worse"
    # The CI is stated for the magnitude after "by", so it reads in the same direction.
    low_mag, high_mag = (lo, hi) if higher else (-hi, -lo)
    return (
        f"{arm} is {word} than {base} on {metric} by {fmt_number(abs(diff))}{unit_text} "
        f"(95% CI {fmt_number(low_mag)}..{fmt_number(high_mag)}, {stats_text})."
    )


def _signed(x: float) -> str:
    text = fmt_number(x)
    return text if text.startswith("-") or not np.isfinite(x) else f"+{text}"
