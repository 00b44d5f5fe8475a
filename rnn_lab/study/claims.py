"""Claims as data: a study's published statements, checked on its collected results.

A study may declare, in its `study:` block, a list of claims:

```yaml
study:
  claims:
    - sentence: "An IRNN drives the adding-task MSE under a tenth of the baseline."
      source: "Le, Jaitly & Hinton 2015, section 4.1"
      kind: reproduction
      check: {arm: {init: identity, activation: relu}, metric: mse, op: "<",
              other_metric: baseline_mse, factor: 0.1}
```

`kind` (default `reproduction`): `reproduction` (a paper's statement), `consistency` (a
theorem or a property of the code that holds by construction: a check of the code, not a
finding) or `expectation` (what the study itself expects, stated before its runs). The tables
tally each kind apart.

A check names the runs, a metric (a column of the collected table), a side and a target:

- `arm`: `{key: value, ...}`, the runs whose config matches every key (a key as in
  results.csv: `init` or `init.name`, `data.delay`, ...); absent or `{}`: every run.
- `op`: `<`, `<=`, `>`, `>=`, or `within` with `margin: M` (absolute) or `rel_margin: R`
  (M = R x |target|), then one target:
  - `value: NUMBER`;
  - `other: {key: value, ...}`: another arm, the counterpart of the matched arm with these
    keys changed (`{init: random}` = the same arm but init=random), paired by seed;
  - `other_metric: NAME` (alone, or with `other`): another metric, of the same runs (paired
    by seed) or of the other arm. Baselines are read this way from the runs' own analysis
    (`baseline_mse`, `memoryless_baseline`), never typed.
- `contrast: {key: value, ...}` (with `other`): the claim is on the size of the effect of
  `other`, |arm - factor x other| per seed, against the same effect on the contrast arm (the
  arm with these keys changed), paired by seed: `{arm: {activation: relu, init: random},
  other: {init: orthogonal}, contrast: {activation: tanh}, op: ">"}` is "the init matters more
  with relu than with tanh".
- `factor: F` (default 1) scales the target: `{op: "<", other_metric: baseline_mse,
  factor: 0.1}` is "under a tenth of the baseline".
- `every_run: true`: judged run by run, without a CI: holds when every run of the arm
  satisfies it, fails on any violation (the runs are named). For consistency checks and "in
  every seed" statements.
- `on_failure: against` (default) | `exclude`: a run of the arm that failed, diverged or did
  not finish counts against the claim: the claim cannot hold (an every-run claim fails), and an
  arm whose every run failed fails it. `exclude` leaves such runs out, and says how many.
- `for: all | any` (optional): `arm` may then match several arms, and the check is made on
  each; `all` holds when every arm holds and fails when any fails, `any` holds when some arm
  holds and fails when every arm fails; anything else is inconclusive. Without `for`, a
  selector matching more than one arm is an error of the claim (reported as inconclusive).

The verdict on the difference d = arm - factor x target (its 95% CI: the arm's t-interval
against a number, a paired t over shared seeds against another arm or metric, Welch's t when
fewer than 2 seeds are shared): for an inequality, **holds** when the whole CI lies on the
claimed side of 0, **fails** when it lies wholly on the other side; for `within` (TOST),
**holds** when the 90% CI lies inside (-M, M), **fails** when the 95% CI lies wholly outside
[-M, M]; **inconclusive** otherwise, and also, with the reason, when the arm has no runs, fewer
than 2 ok runs (no CI), or the metric is not in the table. Each claim also counts its seeds
(for, against, failed) and, when inconclusive, how many seeds would decide it with 80% power at
the observed spread (`stats.seeds_to_decide`, reported only). A claim's sentence and numbers
are never adjusted to its outcome: a claim that fails is a result.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from rnn_lab.run.rundir import atomic_write_text
from rnn_lab.study.grid import arm_label, canonical, format_value
from rnn_lab.study.stats import (
    CONFIDENCE,
    difference_ci,
    equivalence_verdict,
    fmt_number,
    mean_ci,
    seeds_to_decide,
    status_group,
)

CLAIMS_TABLE = "claims.csv"
INEQUALITIES = ("<", "<=", ">", ">=")
WITHIN = "within"
OPS = (*INEQUALITIES, WITHIN)
HOLDS, FAILS, INCONCLUSIVE = "holds", "fails", "inconclusive"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE)
REPRODUCTION, CONSISTENCY, EXPECTATION = "reproduction", "consistency", "expectation"
KINDS = (REPRODUCTION, CONSISTENCY, EXPECTATION)
AGAINST, EXCLUDE = "against", "exclude"
ON_FAILURE = (AGAINST, EXCLUDE)
HOLD_CONFIDENCE = 0.90  # TOST: equivalence at 5% on each side is the 90% CI inside the margin
CHECK_KEYS = ("arm", "metric", "op", "value", "other", "other_metric", "factor", "margin")
CHECK_KEYS += ("rel_margin", "every_run", "on_failure", "for", "contrast")


class ClaimError(ValueError):
    """A claim that cannot be checked as written (an unknown op, no metric, ...)."""


# --------------------------------------------------------------------------- the declaration


def study_claims(df_or_study) -> list[dict]:
    """The claims a study declares: from a collected table's `attrs["study"]` or a study block."""
    study = df_or_study.attrs.get("study") if isinstance(df_or_study, pd.DataFrame) else df_or_study
    claims = (study or {}).get("claims") or []
    return [dict(c) for c in claims]


def claim_kind(claim: dict) -> str:
    """The claim's kind (default reproduction), or ClaimError listing the kinds."""
    kind = claim.get("kind") or REPRODUCTION
    if kind not in KINDS:
        raise ClaimError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    return kind


def check_claims(claims: Iterable[dict]) -> None:
    """ClaimError for the first claim that cannot be checked as written, naming it (claim N,
    its sentence), the key and the allowed values; nothing for a sound list."""
    for i, claim in enumerate(claims, 1):
        try:
            if not isinstance(claim, dict):
                raise ClaimError(f"a claim must be a mapping, not {claim!r}")
            if not str(claim.get("sentence") or "").strip():
                raise ClaimError("the claim has no sentence")
            claim_kind(claim)
            parse_check(claim.get("check"))
        except ClaimError as e:
            sentence = str(claim.get("sentence", ""))[:80] if isinstance(claim, dict) else ""
            raise ClaimError(f"study.claims[{i}] ({sentence!r}): {e}") from None


def _number(check: dict, key: str, positive: bool = False) -> float:
    try:
        x = float(check[key])
    except (TypeError, ValueError) as e:
        raise ClaimError(f"{key} {check[key]!r} is not a number") from e
    if not math.isfinite(x) or (positive and x <= 0):
        raise ClaimError(f"{key} {check[key]!r} must be a {'positive ' if positive else ''}number")
    return x


def parse_check(check) -> dict:
    """The check with its defaults, or ClaimError naming what is wrong."""
    if not isinstance(check, dict):
        raise ClaimError(f"a check must be a mapping, not {check!r}")
    check = dict(check)
    unknown = [k for k in check if k not in CHECK_KEYS]
    if unknown:
        raise ClaimError(f"unknown key {unknown[0]!r}; a check has {', '.join(CHECK_KEYS)}")
    if not check.get("metric"):
        raise ClaimError("the check names no metric")
    if check.get("op") not in OPS:
        raise ClaimError(f"op {check.get('op')!r} is not one of {', '.join(OPS)}")
    has_value = check.get("value") is not None
    has_other = check.get("other") is not None or check.get("other_metric") is not None
    if has_value == has_other:
        raise ClaimError("a check needs exactly one of value, or other / other_metric")
    if has_value:
        check["value"] = _number(check, "value")
    check["factor"] = _number(check, "factor") if check.get("factor") is not None else 1.0
    margins = [k for k in ("margin", "rel_margin") if check.get(k) is not None]
    if check["op"] == WITHIN and len(margins) != 1:
        raise ClaimError("op within needs exactly one of margin (absolute) or rel_margin")
    if check["op"] != WITHIN and margins:
        raise ClaimError(f"{margins[0]} is for op within, not op {check['op']!r}")
    for key in margins:
        check[key] = _number(check, key, positive=True)
    if check.get("contrast") is not None and (check.get("other") is None or check.get("every_run")):
        raise ClaimError(
            "contrast compares effects of `other` between arms: it needs other, not every_run"
        )
    for key in ("arm", "other", "contrast"):
        if check.get(key) is not None and not isinstance(check[key], dict):
            raise ClaimError(f"{key} must be a mapping of config keys to values")
    check["arm"] = dict(check.get("arm") or {})
    if check.get("for") not in (None, "all", "any"):
        raise ClaimError(f"for: {check['for']!r} is not all or any")
    if check.get("every_run") not in (None, True, False):
        raise ClaimError(f"every_run: {check['every_run']!r} is not true or false")
    check["every_run"] = bool(check.get("every_run"))
    check["on_failure"] = check.get("on_failure") or AGAINST
    if check["on_failure"] not in ON_FAILURE:
        raise ClaimError(f"on_failure: {check['on_failure']!r} is not one of against, exclude")
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


def _ok(df: pd.DataFrame) -> pd.Series:
    return df["status"].map(status_group) == "ok"


def _metric_values(runs: pd.DataFrame, metric: str) -> pd.Series:
    return pd.to_numeric(runs[metric].map(_as_number), errors="coerce").astype(float)


def ok_values_by_seed(df: pd.DataFrame, mask: pd.Series, metric: str) -> pd.Series:
    """The metric of the ok runs in mask, one value per seed (a seed run twice: its mean),
    indexed by the seed's canonical text: two arms are paired by seed, never by position."""
    runs = df[mask & _ok(df)]
    values = _metric_values(runs, metric)
    keep = np.isfinite(values.to_numpy(float))
    return values[keep].groupby(runs.loc[keep, "seed"].map(canonical)).mean()


def _as_number(v):
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


def satisfied(diff: float, op: str, margin: float | None = None) -> bool:
    """Whether one difference (arm - factor x target) is on the claimed side."""
    if op == WITHIN:
        return abs(diff) <= margin
    return {"<": diff < 0, "<=": diff <= 0, ">": diff > 0, ">=": diff >= 0}[op]


def _margin(check: dict, target) -> float | None:
    """The check's absolute margin: `margin`, or rel_margin x |factor x target| (the other's
    mean for a target that is a metric or an arm)."""
    if check["op"] != WITHIN:
        return None
    if check.get("margin") is not None:
        return check["margin"]
    centre = float(target.mean()) if isinstance(target, pd.Series) else float(target)
    return check["rel_margin"] * abs(check["factor"] * centre)


def _failed_runs(df: pd.DataFrame, mask: pd.Series) -> pd.DataFrame:
    return df[mask & ~_ok(df)]


def _status_text(runs: pd.DataFrame) -> str:
    counts = runs["status"].map(status_group).value_counts()
    return ", ".join(f"{n} {s}" for s, n in counts.items())


def check_arm(df: pd.DataFrame, mask: pd.Series, check: dict) -> dict:
    """One arm (the runs in mask) against the check's number, other arm or other metric."""
    metric = check["metric"]
    label = df.loc[mask, "arm"].iloc[0] if mask.any() else arm_label(check["arm"])
    out = {"arm": label, "n": 0, "mean": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    out |= {"seeds_for": 0, "seeds_against": 0, "seeds_failed": 0, "runs_excluded": 0}
    if not mask.any():
        return {**out, "verdict": INCONCLUSIVE, "reason": "no runs match the arm"}
    if metric not in df.columns:
        return {
            **out,
            "verdict": INCONCLUSIVE,
            "reason": f"metric {metric!r} is not in the results",
        }
    failed = _failed_runs(df, mask)
    out["n_ok_runs"] = int((mask & _ok(df)).sum())
    values = ok_values_by_seed(df, mask, metric)
    s = mean_ci(values)
    out.update(n=s["n"], mean=s["mean"], ci_low=s["ci_low"], ci_high=s["ci_high"])
    out.update(seeds_failed=int(failed["seed"].map(canonical).nunique()))
    target, other = _target(df, mask, check)
    out.update(other)
    if target is None:  # the other arm or metric cannot be read: said in other["reason"]
        return _with_failures(out, failed, check, INCONCLUSIVE)
    if check.get("contrast") is not None:  # |arm - other| against the contrast arm's
        values, target, contrast = _contrast(df, mask, check, values, target)
        out.update(contrast)
        if target is None:
            return _with_failures(out, failed, check, INCONCLUSIVE)
        check = {**check, "factor": 1.0}
    margin = _margin(check, target)
    out["margin_abs"] = margin
    diffs = _seed_differences(values, target, check["factor"])
    out["seeds_for"] = int(sum(satisfied(d, check["op"], margin) for d in diffs))
    out["seeds_against"] = len(diffs) - out["seeds_for"]
    if check["every_run"]:
        judged = _judge_every_run(df, mask, check, target, margin)
    else:
        judged = _judge_ci(values, target, check, margin)
    out.update(judged)
    return _with_failures(out, failed, check, judged["verdict"])


def _target(df: pd.DataFrame, mask: pd.Series, check: dict) -> tuple[object, dict]:
    """(the number, or the other arm's / metric's ok values by seed; None when unreadable),
    and the fields that describe it (other_arm, other_mean, n_other, reason)."""
    if check.get("value") is not None:
        return check["value"], {}
    other_metric = check.get("other_metric") or check["metric"]
    other_mask = mask
    if check.get("other") is not None:
        label = df.loc[mask, "arm"].iloc[0]
        other_mask, why = select_runs(df, {**arm_values(df, label), **check["other"]})
        if why:
            return None, {"reason": f"other arm: {why}"}
    out = {"other_arm": df.loc[other_mask, "arm"].iloc[0] if other_mask.any() else None}
    n_other_arms = df.loc[other_mask, "arm"].nunique()
    if n_other_arms > 1:
        return None, {**out, "reason": f"other matches {n_other_arms} arms"}
    if not other_mask.any():
        return None, {**out, "reason": "other: no runs match the other arm"}
    if other_metric not in df.columns:
        return None, {**out, "reason": f"other: metric {other_metric!r} is not in the results"}
    if not (other_mask & _ok(df)).any():
        return None, {**out, "reason": f"other: no ok runs ({_status_text(df[other_mask])})"}
    target = ok_values_by_seed(df, other_mask, other_metric)
    out.update(other_mean=check["factor"] * float(target.mean()), n_other=len(target))
    if check.get("other") is not None and (other_mask & ~_ok(df)).any():
        out["other_note"] = f"other arm: {_status_text(_failed_runs(df, other_mask))} left out"
    return target, out


def _contrast(
    df: pd.DataFrame, mask: pd.Series, check: dict, values: pd.Series, target: pd.Series
) -> tuple[pd.Series, pd.Series | None, dict]:
    """The size of the arm's effect |arm - factor x other| per seed, and the same effect on
    the contrast arm (the arm with `contrast`'s keys changed, against its own `other`)."""
    effect = _seed_differences(values, target, check["factor"]).abs()
    label = df.loc[mask, "arm"].iloc[0]
    cmask, why = select_runs(df, {**arm_values(df, label), **check["contrast"]})
    n_arms = df.loc[cmask, "arm"].nunique()
    if why or n_arms != 1:
        why = why or f"matches {n_arms} arms"
        return effect, None, {"reason": f"contrast arm: {why}"}
    ctarget, cother = _target(df, cmask, check)
    out = {"contrast_arm": df.loc[cmask, "arm"].iloc[0], "effect_mean": float(effect.mean())}
    if ctarget is None:
        return effect, None, {**out, "reason": f"contrast arm's {cother.get('reason')}"}
    cvalues = ok_values_by_seed(df, cmask, check["metric"])
    ceffect = _seed_differences(cvalues, ctarget, check["factor"]).abs()
    out |= {"other_mean": float(ceffect.mean()), "n_other": len(ceffect)}
    return effect, ceffect, out


def _seed_differences(values: pd.Series, target, factor: float) -> pd.Series:
    """arm - factor x target for each seed that has both (a number: every seed)."""
    if isinstance(target, pd.Series):
        shared = values.index.intersection(target.index)
        return values.loc[shared] - factor * target.loc[shared]
    return values - factor * float(target)


def _judge_ci(values: pd.Series, target, check: dict, margin: float | None) -> dict:
    """The verdict from the CI of the difference (TOST for within)."""
    op = check["op"]
    c = difference_ci(values, target, CONFIDENCE, check["factor"])
    out = {"diff": c["diff"], "diff_ci_low": c["ci_low"], "diff_ci_high": c["ci_high"]}
    out["test"] = c["test"]
    if op == WITHIN:
        c90 = difference_ci(values, target, HOLD_CONFIDENCE, check["factor"])
        out.update(diff_ci90_low=c90["ci_low"], diff_ci90_high=c90["ci_high"])
        hold_ci, fail_ci = (c90["ci_low"], c90["ci_high"]), (c["ci_low"], c["ci_high"])
        verdict = equivalence_verdict(hold_ci, fail_ci, margin)
    else:
        verdict = judge(c["ci_low"], c["ci_high"], op, 0.0)
    out["verdict"] = verdict
    out["reason"] = c["note"] if c["test"] == "none" else ""
    if verdict == INCONCLUSIVE:
        out["seeds_to_decide"] = seeds_to_decide(c["diff"], c["sd"], op, margin)
    return out


def _judge_every_run(
    df: pd.DataFrame, mask: pd.Series, check: dict, target, margin: float | None
) -> dict:
    """Run by run: holds when every ok run satisfies the check, fails on any violation (named)."""
    runs = df[mask & _ok(df)]
    x = _metric_values(runs, check["metric"])
    factor = check["factor"]
    if not isinstance(target, pd.Series):
        y = pd.Series(float(target), index=runs.index)
    elif check.get("other") is None:  # another metric of the same run
        y = _metric_values(runs, check.get("other_metric") or check["metric"])
    else:  # the other arm's run of the same seed
        y = runs["seed"].map(canonical).map(target).astype(float)
    d = x - factor * y
    judged = np.isfinite(d.to_numpy(float))
    bad = [i for i in runs.index[judged] if not satisfied(d[i], check["op"], margin)]
    out = {"n_runs_judged": int(judged.sum()), "min": float(x.min()), "max": float(x.max())}
    out["violations"] = [_run_name(df.loc[i], x[i]) for i in bad]
    if bad:
        return {**out, "verdict": FAILS, "reason": f"violated by {'; '.join(out['violations'])}"}
    unjudged = [_run_name(df.loc[i], x[i]) for i in runs.index[~judged]]
    if unjudged:
        reason = f"not judged (no value or no partner): {'; '.join(unjudged)}"
        return {**out, "verdict": INCONCLUSIVE, "reason": reason}
    if not len(runs):
        return {**out, "verdict": INCONCLUSIVE, "reason": "no ok runs"}
    return {**out, "verdict": HOLDS, "reason": ""}


def _run_name(run: pd.Series, value: float) -> str:
    return f"{run['path']} (seed {format_value(run['seed'])}: {_num(value)})"


def _with_failures(out: dict, failed: pd.DataFrame, check: dict, verdict: str) -> dict:
    out.update(_failure_rule(out, failed, check, verdict))  # after the rule's own updates
    return out


def _failure_rule(out: dict, failed: pd.DataFrame, check: dict, verdict: str) -> dict:
    """The verdict and reason once the arm's failed, diverged and incomplete runs are counted
    (on_failure: against) or left out and counted (exclude)."""
    reasons = [r for r in (out.get("reason"), out.get("other_note")) if r]
    if not len(failed):
        return {"verdict": verdict, "reason": "; ".join(reasons)}
    what = _status_text(failed)
    n_runs = len(failed) + out["n_ok_runs"]
    if check["on_failure"] == EXCLUDE:
        note = f"{len(failed)} run{'s' if len(failed) > 1 else ''} excluded ({what})"
        out["runs_excluded"] = len(failed)
        if out["n_ok_runs"] == 0:
            return {"verdict": INCONCLUSIVE, "reason": f"no ok runs, {note}"}
        return {"verdict": verdict, "reason": "; ".join([*reasons, note])}
    out["seeds_to_decide"] = None  # more seeds cannot outvote a failed run
    if out["n_ok_runs"] == 0:
        return {"verdict": FAILS, "reason": f"every run of the arm failed ({what})"}
    names = [
        f"{r['path']} (seed {format_value(r['seed'])}: {r['status']})" for _, r in failed.iterrows()
    ]
    if check["every_run"]:
        out["violations"] = [*out.get("violations", []), *names]
        return {
            "verdict": FAILS,
            "reason": "; ".join([*reasons, f"violated by {'; '.join(names)}"]),
        }
    note = f"{len(failed)} of {n_runs} runs count against it ({what})"
    if verdict == HOLDS:
        return {"verdict": INCONCLUSIVE, "reason": "; ".join([*reasons, note, "it cannot hold"])}
    return {"verdict": verdict, "reason": "; ".join([*reasons, note])}


def evaluate_claim(df: pd.DataFrame, claim: dict) -> dict:
    """One claim's verdict with its numbers: a flat record (its arms' results in `arms`)."""
    base = {
        "sentence": str(claim.get("sentence", "")),
        "source": str(claim.get("source", "")),
        "check": claim.get("check"),
        "kind": claim.get("kind") or REPRODUCTION,
    }
    try:
        claim_kind(claim)
        check = parse_check(claim.get("check"))
    except ClaimError as e:
        return {**base, "verdict": INCONCLUSIVE, "reason": f"invalid check: {e}", "arms": []}
    base["check"] = check
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
    else:  # each arm's own reason (a diverged run, a missing metric) after the tally
        reason = "; ".join(
            [reason, *(f"{a['arm']}: {a['reason']}" for a in arms if a.get("reason"))]
        )
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


def target_text(check: dict, arm: dict | None = None) -> str:
    """ "< 0.05", "< 0.1 x baseline_mse", "within ±0.02 of init=random's val_loss" ..."""
    op = check.get("op")
    factor = check.get("factor", 1.0) or 1.0
    scale = "" if factor == 1 else f"{_num(factor)} x "
    if check.get("value") is not None:
        what = f"{scale}{_num(float(check['value']))}" if scale else _num(float(check["value"]))
    else:
        other = check.get("other_metric") or check.get("metric")
        where = (arm or {}).get("other_arm") if check.get("other") is not None else None
        what = f"{scale}{other}" + (f" of {where}" if where else "")
    if check.get("contrast") is not None:
        where = (arm or {}).get("contrast_arm") or arm_label(check["contrast"])
        return f"{op} the same effect on {where}"
    if op == WITHIN:
        if check.get("margin") is not None:
            margin = _num(check["margin"])
        else:
            margin = f"{_num(check.get('rel_margin'))} x |target|"
            if arm and arm.get("margin_abs") is not None:
                margin += f" = {_num(arm['margin_abs'])}"
        return f"within ±{margin} of {what}"
    return f"{op} {what}"


def numbers_text(check: dict | None, arm: dict) -> str:
    """ "mse 0.012 [0.008, 0.016] (n=3); claimed < 0.05" and the like."""
    if not isinstance(check, dict) or (arm.get("n", 0) == 0 and not arm.get("seeds_failed")):
        return "—"
    metric = check.get("metric")
    claimed = target_text(check, arm)
    if check.get("every_run"):
        text = f"{metric} {_num(arm.get('min'))}..{_num(arm.get('max'))} over {arm['n']} seeds"
        return f"{text}; claimed in every run: {claimed}"
    ci = f" [{_num(arm['ci_low'])}, {_num(arm['ci_high'])}]" if arm["n"] >= 2 else ""
    text = f"{metric} {_num(arm['mean'])}{ci} (n={arm['n']})"
    if "diff" not in arm or (check.get("value") is not None and check.get("op") != WITHIN):
        return f"{text}; claimed {claimed}"
    if check.get("contrast") is not None:
        text += (
            f"; |effect of {_other_keys(check)}| {_num(arm.get('effect_mean'))} vs "
            f"{_num(arm.get('other_mean'))} on {arm.get('contrast_arm')}"
        )
    elif check.get("value") is None:
        text += f" vs {_num(arm.get('other_mean'))} (n={arm.get('n_other')})"
    diff = (
        f"difference {_num(arm['diff'])} [{_num(arm['diff_ci_low'])}, {_num(arm['diff_ci_high'])}]"
    )
    if check.get("op") == WITHIN:
        diff += f", 90% CI [{_num(arm.get('diff_ci90_low'))}, {_num(arm.get('diff_ci90_high'))}]"
    return f"{text}; {diff} ({arm.get('test')}); claimed {claimed}"


def _other_keys(check: dict) -> str:
    return ", ".join(f"{k}={format_value(v)}" for k, v in (check.get("other") or {}).items())


def seeds_text(row: dict) -> str:
    """ "seeds 3 for, 0 against, 2 failed" (failed only when there are)."""
    text = f"seeds {row.get('seeds_for', 0)} for, {row.get('seeds_against', 0)} against"
    if row.get("seeds_failed"):
        text += f", {row['seeds_failed']} failed"
    if row.get("runs_excluded"):
        text += f" ({row['runs_excluded']} runs excluded)"
    return text


def claim_rows(
    results: list[dict], study: str | None = None, declared: list | None = None
) -> list[dict]:
    """One flat row per claim (claims.csv, the tables printed by `rnn-lab reproduce`);
    `declared`: each claim's declared_before_results (True, False or None: not recorded)."""
    rows = []
    for i, r in enumerate(results, 1):
        arms = r.get("arms") or []
        numbers = "; ".join(
            (f"{a['arm']}: " if len(arms) > 1 else "") + numbers_text(r.get("check"), a)
            for a in arms
        )
        row = {"study": study, "claim": i} if study is not None else {"claim": i}
        row.update(
            kind=r.get("kind") or REPRODUCTION,
            verdict=r["verdict"],
            sentence=r["sentence"],
            source=r["source"],
            numbers=numbers or "—",
            reason=r.get("reason") or "",
        )
        for key in ("seeds_for", "seeds_against", "seeds_failed", "runs_excluded"):
            row[key] = sum(int(a.get(key) or 0) for a in arms)
        decide = [a["seeds_to_decide"] for a in arms if a.get("seeds_to_decide") is not None]
        row["seeds_to_decide"] = max(decide) if decide and r["verdict"] == INCONCLUSIVE else None
        row["declared_before_results"] = declared[i - 1] if declared else None
        rows.append({**row, **_row_numbers(r.get("check"), arms)})
    return rows


def _row_numbers(check, arms: list[dict]) -> dict:
    """The numbers of a one-arm claim as columns (claims.csv); a for-all/any claim's are in
    its `numbers` text, one arm after another."""
    check = check if isinstance(check, dict) else {}
    out = {k: check.get(k) for k in ("metric", "op", "value", "other_metric", "factor")}
    out |= {"margin": check.get("margin"), "rel_margin": check.get("rel_margin")}
    out |= {"every_run": check.get("every_run"), "on_failure": check.get("on_failure")}
    keys = ("n", "mean", "ci_low", "ci_high", "other_arm", "other_mean", "diff")
    keys += ("diff_ci_low", "diff_ci_high", "diff_ci90_low", "diff_ci90_high")
    one = arms[0] if len(arms) == 1 else {}
    out |= {k: one.get(k) for k in keys}
    out["violations"] = "; ".join(v for a in arms for v in a.get("violations") or [])
    return out


def kind_counts(rows: list[dict]) -> dict[str, dict[str, int]]:
    """{kind: {verdict: count}} over claim rows, every kind and verdict present."""
    return {
        k: {v: sum(r["kind"] == k and r["verdict"] == v for r in rows) for v in VERDICTS}
        for k in KINDS
    }


def tally_text(rows: list[dict]) -> str:
    """ "reproduction: 4 hold, 1 fails, 0 inconclusive; consistency: ..." (kinds present)."""
    parts = []
    for kind, counts in kind_counts(rows).items():
        n = sum(counts.values())
        if n:
            parts.append(
                f"{n} {kind}: {counts[HOLDS]} hold, {counts[FAILS]} fail, "
                f"{counts[INCONCLUSIVE]} inconclusive"
            )
    return "; ".join(parts) or "no claims"


RULE_TEXT = (
    "A claim holds when the whole 95% CI of arm − target (t-interval over the seeds' ok runs; "
    "against another arm or metric, paired over shared seeds) lies on the claimed side, fails "
    "when it lies wholly on the other side; a `within` claim holds when the 90% CI lies inside "
    "± the margin and fails when the 95% CI lies wholly outside it; an every-run claim holds "
    "when every run satisfies it. A run that failed, diverged or did not finish counts against "
    "the claim on its arm (it cannot hold; with every run failed it fails) unless the claim "
    "says `on_failure: exclude`. Inconclusive otherwise."
)


def claims_section_md(
    df: pd.DataFrame, sweep_dir: str | Path | None = None, rows=None
) -> list[str]:
    """The report's "Claims" section (nothing when the study declares no claims); writes
    claims.csv into sweep_dir when given. `rows`: the claim rows, when already made."""
    rows = claim_rows(evaluate_claims(df)) if rows is None else rows
    if not rows:
        return []
    if sweep_dir is not None and Path(sweep_dir).is_dir():
        atomic_write_text(Path(sweep_dir) / CLAIMS_TABLE, pd.DataFrame(rows).to_csv(index=False))
    out = ["## Claims\n", f"{len(rows)} claims ({tally_text(rows)}). {RULE_TEXT}\n"]
    out += claims_table_md(rows, ("kind",))
    out.append(f"\nAll numbers: [`{CLAIMS_TABLE}`]({CLAIMS_TABLE}).\n")
    return out


def claims_table_md(rows: list[dict], extra: tuple[str, ...] = ()) -> list[str]:
    """A markdown table of claim rows (columns: #, extra, verdict, claim, source, numbers)."""
    header = ["#", *extra, "verdict", "claim", "source", "numbers"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(" --- " for _ in header) + "|",
    ]
    for row in rows:
        numbers = f"{row['numbers']}; {seeds_text(row)}"
        numbers += f" — {row['reason']}" if row.get("reason") else ""
        if row.get("seeds_to_decide"):
            numbers += f" (~{row['seeds_to_decide']} seeds would decide it at 80% power)"
        sentence = row["sentence"]
        if row.get("declared_before_results") is False:
            sentence += " *(declared after the results)*"
        cells = [row["claim"], *(row.get(k, "") for k in extra), f"**{row['verdict']}**"]
        cells += [sentence, row["source"], numbers]
        lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    return lines


def _md_cell(value) -> str:
    return " ".join(str(value).split()).replace("|", "\\|")
