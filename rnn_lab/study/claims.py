"""Claims as data: a study's published statements, checked on its collected results.

A study may declare, in its `study:` block, a list of claims:

```yaml
study:
  claims:
    - sentence: "An IRNN drives the adding-task MSE far below the 0.167 baseline."
      source: "Le, Jaitly & Hinton 2015, section 4.1"
      check: {arm: {init: identity, activation: relu}, metric: mse, op: "<", value: 0.05}
```

A check names the runs, a metric (a column of the collected table) and a side:

- `arm`: `{key: value, ...}`, the runs whose config matches every key (a key as in
  results.csv: `init` or `init.name`, `data.delay`, ...); absent or `{}`: every run.
- `op`: `<`, `<=`, `>` or `>=`, then one of
  - `value: NUMBER`: the arm's mean against the number, judged with the 95% t-interval of
    the mean over the arm's ok runs (`stats.mean_ci`);
  - `other: {key: value, ...}`: against another arm, the counterpart of the matched arm with
    these keys changed (`{init: random}` = the same arm but init=random): the difference
    arm - other against 0, with its 95% CI from a paired t over shared seeds, Welch's t
    otherwise (`stats.compare_pair`);
  - `other_metric: NAME` (alone, or with `other`): against another metric, of the same arm
    (paired by seed) or of the other arm.
- `for: all | any` (optional): `arm` may then match several arms, and the check is made on
  each; `all` holds when every arm holds and fails when any fails, `any` holds when some arm
  holds and fails when every arm fails; anything else is inconclusive. Without `for`, a
  selector matching more than one arm is an error of the claim (reported as inconclusive).

The verdict: **holds** when the whole CI lies on the claimed side, **fails** when the whole
CI lies on the other side, **inconclusive** otherwise, and also, with the reason, when the
arm has no ok runs, fewer than 2 (no CI), or the metric is not in the table. A claim's
sentence and numbers are never adjusted to its outcome: a claim that fails is a result.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from rnn_lab.run.rundir import atomic_write_text
from rnn_lab.study.collect import arm_label, canonical, format_value
from rnn_lab.study.stats import compare_pair, fmt_number, mean_ci, status_group

CLAIMS_TABLE = "claims.csv"
OPS = ("<", "<=", ">", ">=")
HOLDS, FAILS, INCONCLUSIVE = "holds", "fails", "inconclusive"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE)


class ClaimError(ValueError):
    """A claim that cannot be checked as written (an unknown op, no metric, ...)."""


# --------------------------------------------------------------------------- the declaration


def study_claims(df_or_study) -> list[dict]:
    """The claims a study declares: from a collected table's `attrs["study"]` or a study block."""
    study = df_or_study.attrs.get("study") if isinstance(df_or_study, pd.DataFrame) else df_or_study
    claims = (study or {}).get("claims") or []
    return [dict(c) for c in claims]


def parse_check(check) -> dict:
    """The check with its defaults, or ClaimError naming what is wrong."""
    if not isinstance(check, dict):
        raise ClaimError(f"a check must be a mapping, not {check!r}")
    check = dict(check)
    if not check.get("metric"):
        raise ClaimError("the check names no metric")
    if check.get("op") not in OPS:
        raise ClaimError(f"op {check.get('op')!r} is not one of {', '.join(OPS)}")
    has_value = check.get("value") is not None
    has_other = check.get("other") is not None or check.get("other_metric") is not None
    if has_value == has_other:
        raise ClaimError("a check needs exactly one of value, or other / other_metric")
    if has_value:
        try:
            check["value"] = float(check["value"])
        except (TypeError, ValueError) as e:
            raise ClaimError(f"value {check['value']!r} is not a number") from e
    for key in ("arm", "other"):
        if check.get(key) is not None and not isinstance(check[key], dict):
            raise ClaimError(f"{key} must be a mapping of config keys to values")
    check["arm"] = dict(check.get("arm") or {})
    if check.get("for") not in (None, "all", "any"):
        raise ClaimError(f"for: {check['for']!r} is not all or any")
    return check


# --------------------------------------------------------------------------- selecting runs


def _column(df: pd.DataFrame, key: str) -> str | None:
    for name in (key, f"{key}.name", key.removesuffix(".name")):
        if name in df.columns:
            return name
    return None


def select_runs(df: pd.DataFrame, selector: dict) -> tuple[pd.Series, str | None]:
    """(boolean mask of the runs matching every key of selector, reason when none can)."""
    mask = pd.Series(True, index=df.index)
    constant = df.attrs.get("constant_config") or {}
    for key, value in selector.items():
        col = _column(df, str(key))
        if col is not None:
            mask &= df[col].map(canonical) == canonical(value)
            continue
        const_key = next((k for k in (key, f"{key}.name") if k in constant), None)
        if const_key is None:
            return mask & False, f"no run has a config key {key!r}"
        if canonical(constant[const_key]) != canonical(value):
            given = format_value(constant[const_key])
            return mask & False, f"every run has {key}={given}, none {key}={format_value(value)}"
    return mask, None


def arm_values(df: pd.DataFrame, arm: str) -> dict:
    """The arm keys' values of the runs labelled `arm`."""
    row = df[df["arm"] == arm].iloc[0]
    return {k: row[k] for k in df.attrs.get("arm_keys", []) if k in df.columns}


def ok_values_by_seed(df: pd.DataFrame, mask: pd.Series, metric: str) -> pd.Series:
    """The metric of the ok runs in mask, one value per seed (a seed run twice: its mean)."""
    runs = df[mask & (df["status"].map(status_group) == "ok")]
    values = pd.to_numeric(runs[metric].map(_number), errors="coerce")
    keep = np.isfinite(values.to_numpy(float))
    return values[keep].groupby(runs.loc[keep, "seed"].map(canonical)).mean()


def _number(v):
    if isinstance(v, bool | np.bool_):
        return float(v)
    return v


# --------------------------------------------------------------------------- judging


def judge(low: float, high: float, op: str, threshold: float) -> str:
    """holds: [low, high] wholly on op's side of threshold; fails: wholly on the other side."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return INCONCLUSIVE
    claimed = {"<": high < threshold, "<=": high <= threshold}
    claimed |= {">": low > threshold, ">=": low >= threshold}
    other = {"<": low >= threshold, "<=": low > threshold}
    other |= {">": high <= threshold, ">=": high < threshold}
    return HOLDS if claimed[op] else FAILS if other[op] else INCONCLUSIVE


def check_arm(df: pd.DataFrame, mask: pd.Series, check: dict) -> dict:
    """One arm (the runs in mask) against the check's number, other arm or other metric."""
    metric = check["metric"]
    label = df.loc[mask, "arm"].iloc[0] if mask.any() else arm_label(check["arm"])
    out = {"arm": label, "n": 0, "mean": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    reason = _missing(df, mask, metric)
    if reason:
        return {**out, "verdict": INCONCLUSIVE, "reason": reason}
    values = ok_values_by_seed(df, mask, metric)
    s = mean_ci(values)
    out.update(n=s["n"], mean=s["mean"], ci_low=s["ci_low"], ci_high=s["ci_high"])
    if check.get("value") is not None:
        verdict = judge(s["ci_low"], s["ci_high"], check["op"], check["value"])
        reason = "" if s["n"] >= 2 else f"{s['n']} ok run: no CI"
        return {**out, "verdict": verdict, "reason": reason}
    return {**out, **_against_other(df, mask, check, values)}


def _missing(df: pd.DataFrame, mask: pd.Series, metric: str) -> str:
    if not mask.any():
        return "no runs match the arm"
    if metric not in df.columns:
        return f"metric {metric!r} is not in the results"
    ok = mask & (df["status"].map(status_group) == "ok")
    if not ok.any():
        counts = df.loc[mask, "status"].value_counts()
        return "no ok runs (" + ", ".join(f"{n} {s}" for s, n in counts.items()) + ")"
    return ""


def _against_other(df: pd.DataFrame, mask: pd.Series, check: dict, values: pd.Series) -> dict:
    """The difference arm - other (arm and/or metric) against 0."""
    other_metric = check.get("other_metric") or check["metric"]
    other_mask = mask
    if check.get("other") is not None:
        label = df.loc[mask, "arm"].iloc[0]
        other_mask, why = select_runs(df, {**arm_values(df, label), **check["other"]})
        if why:
            return {"verdict": INCONCLUSIVE, "reason": f"other arm: {why}"}
    out = {"other_arm": df.loc[other_mask, "arm"].iloc[0] if other_mask.any() else None}
    n_other_arms = df.loc[other_mask, "arm"].nunique()
    if n_other_arms > 1:
        return {**out, "verdict": INCONCLUSIVE, "reason": f"other matches {n_other_arms} arms"}
    reason = _missing(df, other_mask, other_metric)
    if reason:
        return {**out, "verdict": INCONCLUSIVE, "reason": f"other: {reason}"}
    other_values = ok_values_by_seed(df, other_mask, other_metric)
    c = compare_pair(values, other_values)
    out.update(
        other_mean=c["mean_baseline"],
        diff=c["diff"],
        diff_ci_low=c["ci_low"],
        diff_ci_high=c["ci_high"],
        n_other=c["n_baseline"],
        test=c["test"],
    )
    verdict = judge(c["ci_low"], c["ci_high"], check["op"], 0.0)
    return {**out, "verdict": verdict, "reason": c["note"] if c["test"] == "none" else ""}


def evaluate_claim(df: pd.DataFrame, claim: dict) -> dict:
    """One claim's verdict with its numbers: a flat record (its arms' results in `arms`)."""
    base = {
        "sentence": str(claim.get("sentence", "")),
        "source": str(claim.get("source", "")),
        "check": claim.get("check"),
    }
    try:
        check = parse_check(claim.get("check"))
    except ClaimError as e:
        return {**base, "verdict": INCONCLUSIVE, "reason": f"invalid check: {e}", "arms": []}
    mask, why = select_runs(df, check["arm"])
    if why or not mask.any():
        reason = why or f"no runs match {arm_label(check['arm'])}"
        return {**base, "verdict": INCONCLUSIVE, "reason": reason, "arms": []}
    labels = list(pd.unique(df.loc[mask, "arm"]))
    if check.get("for") is None and len(labels) > 1:
        reason = f"the arm matches {len(labels)} arms; name more keys or add for: all | any"
        return {**base, "verdict": INCONCLUSIVE, "reason": reason, "arms": []}
    arms = [check_arm(df, mask & (df["arm"] == label), check) for label in labels]
    verdict, reason = combine([a["verdict"] for a in arms], check.get("for"))
    if len(arms) == 1:
        reason = arms[0].get("reason") or reason
    return {**base, "verdict": verdict, "reason": reason, "arms": arms}


def combine(verdicts: list[str], quantifier: str | None) -> tuple[str, str]:
    """The verdict of a claim over its arms (one arm: that arm's)."""
    if len(verdicts) == 1 and quantifier is None:
        return verdicts[0], ""
    counts = {v: verdicts.count(v) for v in VERDICTS}
    tally = ", ".join(f"{counts[v]} {v}" for v in VERDICTS if counts[v])
    n = len(verdicts)
    if quantifier == "any":
        verdict = HOLDS if counts[HOLDS] else FAILS if counts[FAILS] == n else INCONCLUSIVE
    else:
        verdict = FAILS if counts[FAILS] else HOLDS if counts[HOLDS] == n else INCONCLUSIVE
    return verdict, f"{quantifier or 'all'} of {n} arms: {tally}"


def evaluate_claims(df: pd.DataFrame, claims: Iterable[dict] | None = None) -> list[dict]:
    """Every claim of the study (or the ones given) evaluated on the collected table."""
    claims = study_claims(df) if claims is None else list(claims)
    return [evaluate_claim(df, c) for c in claims]


# --------------------------------------------------------------------------- the words


def _num(x) -> str:
    return fmt_number(x, 3) if x is not None and not pd.isna(x) else "?"


def numbers_text(check: dict | None, arm: dict) -> str:
    """ "mse 0.012 [0.008, 0.016] (n=3) vs < 0.05" and the like."""
    if not isinstance(check, dict) or arm.get("n", 0) == 0:
        return "—"
    metric = check.get("metric")
    ci = f" [{_num(arm['ci_low'])}, {_num(arm['ci_high'])}]" if arm["n"] >= 2 else ""
    text = f"{metric} {_num(arm['mean'])}{ci} (n={arm['n']})"
    if check.get("value") is not None:
        return f"{text}; claimed {check['op']} {_num(float(check['value']))}"
    if "diff" not in arm:
        return text
    other = check.get("other_metric") or metric
    where = f"{arm.get('other_arm')}" if check.get("other") is not None else "same runs"
    return (
        f"{text} vs {other} {_num(arm['other_mean'])} (n={arm.get('n_other')}, {where}); "
        f"difference {_num(arm['diff'])} [{_num(arm['diff_ci_low'])}, "
        f"{_num(arm['diff_ci_high'])}] ({arm.get('test')}), claimed {check['op']} 0"
    )


def claim_rows(results: list[dict], study: str | None = None) -> list[dict]:
    """One flat row per claim (claims.csv, the tables printed by `rnn-lab reproduce`)."""
    rows = []
    for i, r in enumerate(results, 1):
        arms = r.get("arms") or []
        numbers = "; ".join(
            (f"{a['arm']}: " if len(arms) > 1 else "") + numbers_text(r.get("check"), a)
            for a in arms
        )
        row = {"study": study, "claim": i} if study is not None else {"claim": i}
        row.update(
            verdict=r["verdict"],
            sentence=r["sentence"],
            source=r["source"],
            numbers=numbers or "—",
            reason=r.get("reason") or "",
        )
        rows.append({**row, **_row_numbers(r.get("check"), arms)})
    return rows


def _row_numbers(check, arms: list[dict]) -> dict:
    """The numbers of a one-arm claim as columns (claims.csv); a for-all/any claim's are in
    its `numbers` text, one arm after another."""
    check = check if isinstance(check, dict) else {}
    out = {"metric": check.get("metric"), "op": check.get("op"), "value": check.get("value")}
    keys = ("n", "mean", "ci_low", "ci_high", "other_arm", "other_mean", "diff")
    keys += ("diff_ci_low", "diff_ci_high")
    one = arms[0] if len(arms) == 1 else {}
    return {**out, **{k: one.get(k) for k in keys}}


def claims_section_md(df: pd.DataFrame, sweep_dir: str | Path | None = None) -> list[str]:
    """The report's "Claims" section (nothing when the study declares no claims); writes
    claims.csv into sweep_dir when given."""
    results = evaluate_claims(df)
    if not results:
        return []
    rows = claim_rows(results)
    if sweep_dir is not None and Path(sweep_dir).is_dir():
        atomic_write_text(Path(sweep_dir) / CLAIMS_TABLE, pd.DataFrame(rows).to_csv(index=False))
    counts = {v: sum(r["verdict"] == v for r in results) for v in VERDICTS}
    out = ["## Claims\n"]
    out.append(
        f"{len(results)} claims: {counts[HOLDS]} hold, {counts[FAILS]} fail, "
        f"{counts[INCONCLUSIVE]} inconclusive. A claim holds when the whole 95% CI (t-interval "
        "over the seeds' ok runs; for a difference between arms, paired over shared seeds) "
        "lies on the claimed side, fails when it lies wholly on the other side, and is "
        "inconclusive otherwise.\n"
    )
    out += claims_table_md(rows)
    out.append(f"\nAll numbers: [`{CLAIMS_TABLE}`]({CLAIMS_TABLE}).\n")
    return out


def claims_table_md(rows: list[dict], extra: tuple[str, ...] = ()) -> list[str]:
    """A markdown table of claim rows (columns: #, verdict, claim, source, numbers, extra)."""
    header = ["#", *extra, "verdict", "claim", "source", "numbers"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(" --- " for _ in header) + "|",
    ]
    for row in rows:
        numbers = row["numbers"] + (f" — {row['reason']}" if row.get("reason") else "")
        cells = [row["claim"], *(row.get(k, "") for k in extra), f"**{row['verdict']}**"]
        cells += [row["sentence"], row["source"], numbers]
        lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    return lines


def _md_cell(value) -> str:
    return " ".join(str(value).split()).replace("|", "\\|")
