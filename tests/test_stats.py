"""Statistics against numbers computed by hand (or by closed forms independent of scipy)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from rnn_lab.study.stats import (
    aggregate,
    baseline_counterparts,
    compare_pair,
    compare_to_baseline,
    describe_comparison,
    fmt_number,
    grid_ledger,
    holm_adjust,
    mean_ci,
    metric_direction,
)

T_975_DF2 = 4.302652729749464  # Student t quantile, two-sided 95%, 2 degrees of freedom
T_975_DF3 = 3.182446305284263


def t3_cdf(t: float) -> float:
    """Closed-form CDF of Student's t with 3 degrees of freedom (no scipy involved)."""
    u = t / math.sqrt(3)
    return 0.5 + (u / (1 + u * u) + math.atan(u)) / math.pi


def runs_table(rows: list[tuple], arm_keys=("init",)) -> pd.DataFrame:
    """rows: (init, seed, status, final_loss) -> a table shaped like collect()'s."""
    df = pd.DataFrame(rows, columns=["init", "seed", "status", "final_loss"])
    df["arm"] = "init=" + df["init"]
    df.attrs["arm_keys"] = list(arm_keys)
    return df


# --------------------------------------------------------------------------- mean and CI


def test_mean_ci_matches_hand_computation():
    out = mean_ci([1.0, 2.0, 4.0])
    mean = 7 / 3
    std = math.sqrt(((1 - mean) ** 2 + (2 - mean) ** 2 + (4 - mean) ** 2) / 2)
    half = T_975_DF2 * std / math.sqrt(3)
    assert out["n"] == 3
    assert out["mean"] == pytest.approx(2.3333333333333335)
    assert out["std"] == pytest.approx(1.5275252316519465)
    assert out["std"] == pytest.approx(std)
    assert out["ci_low"] == pytest.approx(mean - half)
    assert out["ci_high"] == pytest.approx(mean + half)
    assert out["ci_high"] == pytest.approx(6.1279164, abs=1e-6)
    assert (out["min"], out["max"]) == (1.0, 4.0)


def test_mean_ci_ignores_missing_and_single_value_has_no_ci():
    out = mean_ci([2.0, None, float("nan"), float("inf")])
    assert out["n"] == 1 and out["mean"] == 2.0
    assert math.isnan(out["std"]) and math.isnan(out["ci_low"])
    assert mean_ci([])["n"] == 0


def test_aggregate_counts_non_ok_runs_per_arm_and_excludes_them():
    df = runs_table(
        [
            ("orthogonal", 1, "ok", 1.0),
            ("orthogonal", 2, "ok", 2.0),
            ("orthogonal", 3, "ok", 4.0),
            ("orthogonal", 4, "failed", None),
            ("orthogonal", 5, "diverged", 99.0),  # a diverged value must not leak into the mean
            ("xavier", 1, "ok", 3.0),
            ("xavier", 2, "incomplete", 0.1),
            ("xavier", 3, "interrupted", 0.1),
            ("xavier", 4, "weird-status", 0.1),  # unknown statuses count as failed
        ]
    )
    table = aggregate(df, ["final_loss"]).set_index("arm")
    ortho = table.loc["init=orthogonal"]
    assert (ortho["n_runs"], ortho["n_ok"], ortho["n"]) == (5, 3, 3)
    assert (ortho["n_failed"], ortho["n_diverged"], ortho["n_incomplete"]) == (1, 1, 0)
    assert ortho["mean"] == pytest.approx(7 / 3)
    assert ortho["ci_high"] == pytest.approx(7 / 3 + T_975_DF2 * 1.5275252316519465 / math.sqrt(3))
    assert ortho["init"] == "orthogonal"
    xavier = table.loc["init=xavier"]
    assert (xavier["n_ok"], xavier["n_incomplete"], xavier["n_failed"]) == (1, 2, 1)
    assert xavier["mean"] == 3.0 and math.isnan(xavier["std"])


def test_aggregate_missing_metric_gives_zero_n():
    df = runs_table([("orthogonal", 1, "ok", 1.0)])
    row = aggregate(df, ["vocab_hit_rate"]).iloc[0]
    assert row["n"] == 0 and math.isnan(row["mean"]) and row["n_ok"] == 1


# --------------------------------------------------------------------------- Holm


def test_holm_adjust_known_values():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, max(0.06, 0.04*1) = 0.06
    adjusted = holm_adjust([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])


def test_holm_adjust_caps_at_one_and_skips_nan():
    np.testing.assert_allclose(holm_adjust([0.5, 0.6]), [1.0, 1.0])
    out = holm_adjust([0.02, float("nan"), 0.01])  # m = 2, not 3
    np.testing.assert_allclose(out[[0, 2]], [0.02, 0.02])
    assert math.isnan(out[1])
    np.testing.assert_allclose(holm_adjust([0.04]), [0.04])


# --------------------------------------------------------------------------- paired / Welch


def test_paired_comparison_matches_hand_computation():
    arm = pd.Series([1.0, 2.0, 3.0, 4.0], index=[1, 2, 3, 4])
    base = pd.Series([0.5, 1.8, 2.1, 3.9, 7.0], index=[1, 2, 3, 4, 5])  # seed 5 is unpaired
    out = compare_pair(arm, base)
    d = np.array([0.5, 0.2, 0.9, 0.1])
    sd = math.sqrt(((d - d.mean()) ** 2).sum() / 3)
    t = d.mean() / (sd / 2)
    p = 2 * (1 - t3_cdf(t))
    assert out["test"] == "paired t" and out["n_pairs"] == 4
    assert out["diff"] == pytest.approx(0.425)
    assert out["t"] == pytest.approx(t) and out["t"] == pytest.approx(2.3650683683768583)
    assert out["p"] == pytest.approx(p, rel=1e-9) and out["p"] == pytest.approx(0.0989446, abs=1e-6)
    assert out["effect_name"] == "d_z" and out["effect_size"] == pytest.approx(0.425 / sd)
    assert out["ci_low"] == pytest.approx(0.425 - T_975_DF3 * sd / 2)
    assert out["ci_high"] == pytest.approx(0.425 + T_975_DF3 * sd / 2)


def test_welch_fallback_without_shared_seeds():
    arm = pd.Series([1.0, 2.0, 3.0], index=[1, 2, 3])
    base = pd.Series([2.0, 4.0, 6.0, 8.0], index=[4, 5, 6, 7])
    out = compare_pair(arm, base)
    va, vb = 1.0, 20 / 3
    se = math.sqrt(va / 3 + vb / 4)
    dof = se**4 / ((va / 3) ** 2 / 2 + (vb / 4) ** 2 / 3)
    assert out["test"] == "Welch t" and out["n_pairs"] == 0
    assert "Welch" in out["note"] and "fewer than 2 shared seeds" in out["note"]
    assert out["diff"] == pytest.approx(2.0 - 5.0)
    assert out["t"] == pytest.approx(-3.0 / se)
    assert out["dof"] == pytest.approx(dof)
    pooled = math.sqrt((2 * va + 3 * vb) / 5)
    assert out["effect_name"] == "d" and out["effect_size"] == pytest.approx(-3.0 / pooled)
    row = {
        **out,
        "metric": "final_loss",
        "arm": "init=xavier",
        "baseline": "init=orthogonal",
        "p_holm": out["p"],
    }
    text = describe_comparison(row)
    assert "Welch's t-test, 3 vs 4 runs, 0 shared seeds" in text and ", d = " in text


def test_no_test_when_too_few_runs():
    out = compare_pair(pd.Series([1.0], index=[1]), pd.Series([2.0, 3.0], index=[2, 3]))
    assert out["test"] == "none" and math.isnan(out["p"])
    assert "not enough ok runs (1 vs 2, 0 shared seeds" in out["note"]


def test_compare_to_baseline_holm_across_arms_and_counterparts_per_activation():
    rows = []
    rng = np.random.default_rng(0)
    for init, shift in (("orthogonal", 0.0), ("xavier", 0.3), ("random", 0.01)):
        for act in ("tanh", "relu"):
            for seed in (1, 2, 3, 4, 5):
                rows.append(
                    (init, act, seed, "ok", 1.0 + shift + 0.05 * seed + float(rng.normal(0, 0.01)))
                )
    df = pd.DataFrame(rows, columns=["init", "activation", "seed", "status", "final_loss"])
    df["arm"] = "init=" + df["init"] + ", activation=" + df["activation"]
    df.attrs["arm_keys"] = ["init", "activation"]

    mapping, used, _ = baseline_counterparts(df, {"init": "orthogonal"})
    assert used == {"init": "orthogonal"}
    assert mapping["init=xavier, activation=relu"] == "init=orthogonal, activation=relu"
    assert mapping["init=random, activation=tanh"] == "init=orthogonal, activation=tanh"
    assert "init=orthogonal, activation=tanh" not in mapping

    result = compare_to_baseline(df, ["final_loss"], {"init": "orthogonal"})
    assert len(result) == 4
    np.testing.assert_allclose(result["p_holm"], holm_adjust(result["p"].to_numpy()))
    xavier = result[result["arm"] == "init=xavier, activation=tanh"].iloc[0]
    assert xavier["n_pairs"] == 5 and xavier["significant"]
    assert xavier["diff"] == pytest.approx(0.3, abs=0.03)
    sentence = describe_comparison(xavier)
    assert sentence.startswith(
        "init=xavier, activation=tanh is worse than init=orthogonal, activation=tanh on "
        f"final_loss by {fmt_number(xavier['diff'])} nats/char (95% CI "
        f"{fmt_number(xavier['ci_low'])}..{fmt_number(xavier['ci_high'])}, "
    )
    assert "nats/char" in sentence and "Holm-adjusted" in sentence
    assert "5 paired seeds" in sentence and "d_z = " in sentence


def test_baseline_accepts_config_key_spelling_and_falls_back_to_first_arm():
    df = runs_table([("orthogonal", 1, "ok", 1.0), ("xavier", 1, "ok", 2.0)])
    mapping, used, notes = baseline_counterparts(df, {"init.name": "xavier"})
    assert used == {"init": "xavier"} and mapping == {"init=orthogonal": "init=xavier"}
    mapping, used, notes = baseline_counterparts(df, None)
    assert used == {"init": "orthogonal"} and "no baseline declared" in notes[0]


def test_sentences_follow_metric_direction():
    row = {
        "metric": "vocab_hit_rate",
        "arm": "init=xavier",
        "baseline": "init=orthogonal",
        "test": "paired t",
        "diff": 0.1,
        "ci_low": 0.05,
        "ci_high": 0.15,
        "p_holm": 0.004,
        "n_pairs": 5,
        "n_arm": 5,
        "n_baseline": 5,
        "effect_size": 2.0,
        "effect_name": "d_z",
        "note": "",
    }
    assert "is better than init=orthogonal on vocab_hit_rate by 0.1 " in describe_comparison(row)
    row.update(metric="final_loss", diff=-0.21, ci_low=-0.27, ci_high=-0.15, p_holm=0.003)
    text = describe_comparison(row)
    assert "is better than" in text and "by 0.21 nats/char (95% CI 0.15..0.27, p = 0.003" in text
    row.update(metric="spectral_radius")
    assert "is lower than" in describe_comparison(row)
    row.update(p_holm=0.2)
    text = describe_comparison(row)
    assert text.startswith("no detectable difference between init=xavier and init=orthogonal")
    assert "-0.21" in text and "p = 0.20 Holm-adjusted" in text
    assert metric_direction("some_new_loss") == "lower"
    assert metric_direction("mystery") is None


def test_fmt_number():
    assert fmt_number(0.21) == "0.21"
    assert fmt_number(1234.5) == "1234" or fmt_number(1234.5) == "1235"
    assert fmt_number(0.2, strip_zeros=False) == "0.200"
    assert fmt_number(float("nan")) == "n/a"


# --------------------------------------------------------------------------- ledger


def test_grid_ledger_lists_missing_cells():
    df = runs_table(
        [("orthogonal", 1, "ok", 1.0), ("orthogonal", 2, "failed", None), ("xavier", 2, "ok", 2.0)]
    )
    df["seed"] = df["seed"].astype(int)
    grid = {"init": ["orthogonal", "xavier"], "seed": ["1", "2", "3"]}
    ledger = grid_ledger(df, grid)
    missing = sorted(zip(ledger["init"], ledger["seed"]))
    assert missing == [("orthogonal", "3"), ("xavier", "1"), ("xavier", "3")]
    assert set(ledger["arm"]) == {"init=orthogonal", "init=xavier"}
    assert ledger.attrs["n_cells"] == 6


def test_grid_ledger_matches_values_canonically():
    df = pd.DataFrame(
        {"clip": [1.0, 0], "seed": [1, 1], "arm": ["clip=1.0", "clip=0"], "status": ["ok", "ok"]}
    )
    df.attrs["arm_keys"] = ["clip"]
    ledger = grid_ledger(df, {"clip": ["0", "1", "5.0"], "seed": ["1"], "not_a_column": ["x"]})
    assert list(ledger["clip"]) == ["5.0"]
    assert ledger.attrs["unchecked_keys"] == ["not_a_column"]


# --------------------------------------------------------------------------- pairing by seed


def test_paired_comparisons_pair_seeds_by_seed_not_by_position():
    """Arms list their seeds in different orders and miss different seeds; every number of
    the paired comparison must come from seed-aligned values (scipy's ttest_rel on them), and
    Holm must adjust within each metric (checked by hand)."""
    final_loss = {
        "orthogonal": {1: 1.00, 2: 1.30, 3: 0.90, 4: 1.15, 5: 1.05},
        "xavier": {1: 1.21, 2: 1.45, 4: 1.42, 5: 1.17},  # no seed 3
        "random": {2: 1.52, 3: 1.07, 4: 1.29, 5: 1.33, 6: 2.90},  # no seed 1; seed 6 unpaired
    }
    hit_rate = {
        arm: {s: 2.0 - v + 0.01 * s * s for s, v in vals.items()}
        for arm, vals in final_loss.items()
    }
    order = {"orthogonal": [4, 1, 5, 2, 3], "xavier": [2, 5, 1, 4], "random": [6, 3, 2, 5, 4]}
    rows = []
    for arm, seeds in order.items():
        rows += [(arm, s, "ok", final_loss[arm][s], hit_rate[arm][s]) for s in seeds]
    rows.append(("random", 1, "failed", 99.0, 99.0))  # not ok: never paired with seed 1
    df = pd.DataFrame(rows, columns=["init", "seed", "status", "final_loss", "vocab_hit_rate"])
    df["arm"] = "init=" + df["init"]
    df.attrs["arm_keys"] = ["init"]

    result = compare_to_baseline(df, ["final_loss", "vocab_hit_rate"], {"init": "orthogonal"})
    assert len(result) == 4
    for metric, values in (("final_loss", final_loss), ("vocab_hit_rate", hit_rate)):
        rows = result[result["metric"] == metric].set_index("arm")
        p_by_arm = {}
        for arm in ("xavier", "random"):
            shared = sorted(set(values[arm]) & set(values["orthogonal"]))
            a = np.array([values[arm][s] for s in shared])
            b = np.array([values["orthogonal"][s] for s in shared])
            expected = sps.ttest_rel(a, b)
            row = rows.loc[f"init={arm}"]
            assert row["test"] == "paired t" and row["n_pairs"] == len(shared) == 4
            assert row["diff"] == pytest.approx(float(np.mean(a - b)), rel=1e-12)
            assert row["t"] == pytest.approx(float(expected.statistic), rel=1e-12)
            assert row["p"] == pytest.approx(float(expected.pvalue), rel=1e-12)
            p_by_arm[arm] = float(expected.pvalue)
            # Pairing by position (in row order, or in seed order cut to the shorter arm) would
            # have given other numbers: this test can tell the difference.
            for arm_order_, base_order in (
                (order[arm], order["orthogonal"]),
                (sorted(values[arm]), sorted(values["orthogonal"])),
            ):
                n = min(len(arm_order_), len(base_order))
                pa = [values[arm][s] for s in arm_order_[:n]]
                pb = [values["orthogonal"][s] for s in base_order[:n]]
                assert sps.ttest_rel(pa, pb).pvalue != pytest.approx(row["p"], rel=1e-6)
        # Holm over this metric's two comparisons: the smaller p times 2, the larger times 1
        # but never below the smaller's adjusted value, both capped at 1.
        (arm_lo, p_lo), (arm_hi, p_hi) = sorted(p_by_arm.items(), key=lambda kv: kv[1])
        holm_lo = min(1.0, 2 * p_lo)
        holm_hi = min(1.0, max(holm_lo, p_hi))
        assert rows.loc[f"init={arm_lo}", "p_holm"] == pytest.approx(holm_lo, rel=1e-12)
        assert rows.loc[f"init={arm_hi}", "p_holm"] == pytest.approx(holm_hi, rel=1e-12)
