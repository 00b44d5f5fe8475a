"""The report's "What explains it" section: rank correlations of the study's metric with the
recorded dynamics, on collected tables whose relation is known, and on a tiny real sweep."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cli_helpers import TINY, run_cli  # noqa: E402
from fakeruns import fake_config, fake_summary, make_fake_run  # noqa: E402

from rnn_lab.study.collect import collect  # noqa: E402
from rnn_lab.study.dynamics import history_scalars  # noqa: E402
from rnn_lab.study.explain import (  # noqa: E402
    MIN_RUNS,
    SCATTER_PLOT,
    explain,
    explain_section_md,
    main_metric,
    spearman_over_runs,
    spearman_within_arms,
)

SETTINGS = {"metrics": ["val_loss", "final_loss"], "baseline": {"init": "orthogonal"}}


def table(arms: dict[str, dict[str, list]], status: dict | None = None) -> pd.DataFrame:
    """A collected table: arm name -> column -> one value per seed (the arm name is the
    `init` key); `status` maps (arm, seed index) to a status other than ok."""
    rows = []
    for arm, columns in arms.items():
        n = len(next(iter(columns.values())))
        for i in range(n):
            row = {"arm": f"init={arm}", "init": arm, "seed": i + 1}
            row["status"] = (status or {}).get((arm, i), "ok")
            row.update({k: v[i] for k, v in columns.items()})
            rows.append(row)
    df = pd.DataFrame(rows)
    df.attrs["arm_keys"] = ["init"]
    return df


def section(df: pd.DataFrame, settings=SETTINGS, sweep_dir=None) -> str:
    return "\n".join(explain_section_md(df, settings, sweep_dir))


def row_of(ex, scalar: str) -> dict:
    return next(r for r in ex.rows if r["scalar"] == scalar)


# --------------------------------------------------------------------------- statistics


def test_monotone_relation_has_rho_one_and_a_ci_at_one():
    x = np.linspace(0.1, 3.0, 20)
    c = spearman_over_runs(x, np.exp(x))  # monotone, not linear
    assert c.rho == pytest.approx(1.0) and c.ci_low == pytest.approx(1.0) and c.n == 20
    c = spearman_over_runs(x, np.exp(-x))
    assert c.rho == pytest.approx(-1.0) and c.ci_high == pytest.approx(-1.0) and c.excludes_zero


def test_independent_variables_give_cis_covering_zero():
    """20 independent data sets: the 95% CI covers 0 in nearly all of them, and rho is
    small (a bug that ranks x against itself, or pairs sorted values, would give 1)."""
    covered = 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        c = spearman_over_runs(rng.normal(size=30), rng.normal(size=30))
        covered += c.ci_low < 0 < c.ci_high
        assert abs(c.rho) < 0.6
    assert covered >= 17


def test_within_arm_relation_hidden_by_the_arms_differences():
    """In every arm a larger x goes with a larger y, but the arms' offsets in y do not follow
    their offsets in x: over runs the CI covers 0, within arms rho = 1 with a CI above 0."""
    rng = np.random.default_rng(0)
    arms = {}
    for k, offset in enumerate([0.0, 3.0, -3.0, 1.0]):
        u = rng.uniform(0, 1, 5)
        arms[f"a{k}"] = {"gradient_decay_median": list(10 * k + u), "val_loss": list(offset + u)}
    df = table(arms)
    r = row_of(explain(df, "val_loss"), "gradient_decay_median")
    assert r["over_runs"].ci_low < 0 < r["over_runs"].ci_high
    assert r["within_arms"].rho == pytest.approx(1.0) and r["within_arms"].ci_low > 0
    assert r["within_arms"].n == 20 and r["within_arms"].arms == 4
    text = section(df)
    assert "the seeds of one arm follow it while the differences between arms hide it" in text


def test_within_arm_relation_reversed_by_the_arms_differences():
    """In every arm a larger x goes with a larger y, but the arms with a larger x have a far
    smaller y: over runs rho < 0, within arms rho = +1, and the section says it reverses."""
    rng = np.random.default_rng(1)
    arms = {}
    for k in range(4):
        u = np.sort(rng.uniform(0, 1, 5))
        arms[f"a{k}"] = {"gradient_decay_median": list(10 * k + u), "val_loss": list(-10 * k + u)}
    df = table(arms)
    r = row_of(explain(df, "val_loss"), "gradient_decay_median")
    assert r["over_runs"].rho < -0.5 and r["over_runs"].excludes_zero
    assert r["within_arms"].rho == pytest.approx(1.0) and r["within_arms"].ci_low > 0
    assert r["between_arms"].rho == pytest.approx(-1.0)
    text = section(df)
    assert "Seed to seed within arms it is reversed" in text
    assert "It holds seed to seed within arms too" not in text


def test_between_arm_relation_without_a_within_arm_one():
    """Arms differ in both x and y together; inside an arm the seeds' x and y are
    independent: over runs rho is high, within arms the CI covers 0."""
    rng = np.random.default_rng(2)
    arms = {
        f"a{k}": {
            "gradient_decay_median": list(k + rng.uniform(0, 0.3, 6)),
            "val_loss": list(k + rng.uniform(0, 0.3, 6)),
        }
        for k in range(5)
    }
    df = table(arms)
    r = row_of(explain(df, "val_loss"), "gradient_decay_median")
    assert r["over_runs"].rho > 0.8 and r["over_runs"].excludes_zero
    assert r["within_arms"].ci_low < 0 < r["within_arms"].ci_high
    assert "the association comes from the differences between arms" in section(df)


def test_within_arms_ranks_inside_each_arm_not_over_all_runs():
    """Pooling must rank within arms: x and y equal to the arm's offset plus independent
    noise have within-arm rho near 0, while ranking the pooled values would give ~1."""
    rng = np.random.default_rng(3)
    arms = np.repeat(np.arange(6), 4)
    x = arms * 5 + rng.normal(size=24)
    y = arms * 5 + rng.normal(size=24)
    c = spearman_within_arms(x, y, arms)
    assert abs(c.rho) < 0.5 and c.n == 24 and c.arms == 6


def test_within_arms_counts_only_arms_where_both_vary():
    """An arm whose scalar is the same in every seed says nothing about the relation; it must
    not dilute the pooled rho (it would give 0.82 here instead of 1) nor count in n."""
    x = [1.0, 2.0, 3.0, 4.0]
    arms = {
        "a": {"gradient_decay_median": x, "val_loss": x},
        "b": {"gradient_decay_median": x, "val_loss": [v + 5 for v in x]},
        "c": {"gradient_decay_median": [7.0] * 4, "val_loss": [2.0, 9.0, 1.0, 5.0]},
    }
    c = row_of(explain(table(arms), "val_loss"), "gradient_decay_median")["within_arms"]
    assert c.rho == pytest.approx(1.0) and (c.n, c.arms) == (8, 2)


def test_a_scalar_that_differs_in_one_or_two_runs_gets_no_ci_and_is_not_the_strongest():
    """Bootstrap resamples that miss the few runs where a scalar differs have no rho; their
    share is reported instead of a CI made of the others only."""
    rng = np.random.default_rng(7)
    loss = rng.normal(size=18)
    rare = np.zeros(18)
    rare[np.argsort(loss)[:2]] = 1.0  # perfectly placed: |rho| is the largest
    arms = {
        "a": {
            "saturation_first": list(rare),
            "gradient_decay_median": list(loss + rng.normal(0, 1.0, 18)),
            "val_loss": list(loss),
        }
    }
    ex = explain(table(arms), "val_loss")
    over = row_of(ex, "saturation_first")["over_runs"]
    assert over.has_number and np.isnan(over.ci_low) and "of resamples constant" in over.note
    assert abs(over.rho) > abs(row_of(ex, "gradient_decay_median")["over_runs"].rho)
    assert ex.strongest["scalar"] == "gradient_decay_median"


def test_section_is_deterministic(tmp_path):
    rng = np.random.default_rng(4)
    arms = {
        a: {"gradient_decay_median": list(rng.normal(size=4)), "val_loss": list(rng.normal(size=4))}
        for a in "abcd"
    }
    df = table(arms)
    first = section(df, sweep_dir=tmp_path)
    png = (tmp_path / "plots" / SCATTER_PLOT).read_bytes()
    assert section(df, sweep_dir=tmp_path) == first
    assert (tmp_path / "plots" / SCATTER_PLOT).read_bytes() == png
    assert (tmp_path / "explain.csv").exists()


# --------------------------------------------------------------------------- what is left out


def test_diverged_and_nan_runs_are_left_out_and_counted():
    """Diverged and failed runs carry finite but wild numbers that would turn the relation
    around if they were counted; an ok run without a val_loss is left out too."""
    x = list(np.arange(8.0))
    good = {"gradient_decay_median": x, "val_loss": [v * 0.1 for v in x]}
    df = table({"a": good, "b": {k: list(v) for k, v in good.items()}})
    df = pd.concat(
        [
            df,
            pd.DataFrame(
                [
                    {
                        "arm": "init=a",
                        "init": "a",
                        "seed": 9,
                        "status": "diverged",
                        "gradient_decay_median": 100.0,
                        "val_loss": -50.0,
                    },
                    {
                        "arm": "init=b",
                        "init": "b",
                        "seed": 9,
                        "status": "failed",
                        "gradient_decay_median": 90.0,
                        "val_loss": -40.0,
                    },
                    {
                        "arm": "init=b",
                        "init": "b",
                        "seed": 10,
                        "status": "ok",
                        "gradient_decay_median": 80.0,
                        "val_loss": np.nan,
                    },
                ]
            ),
        ],
        ignore_index=True,
    )
    df.attrs["arm_keys"] = ["init"]
    ex = explain(df, "val_loss")
    r = row_of(ex, "gradient_decay_median")
    assert r["over_runs"].n == 16 and r["over_runs"].rho == pytest.approx(1.0)
    assert ex.left_out == {"diverged": 1, "failed": 1, "ok without a finite val_loss": 1}
    text = section(df)
    assert (
        "16 of 19 runs used; left out of every correlation: 1 diverged, 1 failed, "
        "1 ok without a finite val_loss" in text
    )


def test_too_few_runs_say_so_instead_of_a_number():
    arms = {
        "a": {"gradient_decay_median": [1.0, 2.0], "val_loss": [0.5, 0.7]},
        "b": {"gradient_decay_median": [3.0, 4.0], "val_loss": [0.9, 1.1]},
    }
    df = table(arms)
    ex = explain(df, "val_loss")
    r = row_of(ex, "gradient_decay_median")
    assert not r["over_runs"].has_number and f"needs {MIN_RUNS}" in r["over_runs"].note
    assert (
        not r["within_arms"].has_number
        and "not enough seeds: 2 per arm at most" in r["within_arms"].note
    )
    assert not r["between_arms"].has_number
    text = section(df)
    assert "too few runs (4; needs 6)" in text and "not enough seeds" in text
    assert "ρ = " not in text.split("| --- |")[1]  # no number in the table


def test_within_arms_with_two_seeds_is_not_a_number_even_with_many_arms():
    rng = np.random.default_rng(5)
    arms = {
        f"a{k}": {
            "gradient_decay_median": list(rng.normal(size=2)),
            "val_loss": list(rng.normal(size=2)),
        }
        for k in range(6)
    }
    r = row_of(explain(table(arms), "val_loss"), "gradient_decay_median")
    assert r["over_runs"].has_number and r["over_runs"].n == 12
    assert not r["within_arms"].has_number and "not enough seeds" in r["within_arms"].note


def test_constant_and_duplicate_scalars_are_named_not_correlated():
    x = np.arange(1.0, 9.0)
    arms = {
        "a": {
            "gradient_decay_first": list(x),
            "gradient_fall_first": list(1 / x),  # same order, reversed
            "clip_fraction_run": [1.0] * 8,
            "val_loss": list(x**2),
        }
    }
    ex = explain(table(arms), "val_loss")
    assert [r["scalar"] for r in ex.rows] == ["gradient_decay_first"]
    assert ex.constant == {"clip_fraction_run": 1.0}
    assert ex.same_order == {"gradient_fall_first": ("gradient_decay_first", True)}
    text = section(table(arms))
    assert (
        "clip_fraction_run = 1" in text
        and "gradient_fall_first (reversed as gradient_decay_first)" in text
    )


def test_main_metric_is_the_studys_first_metric():
    df = table({"a": {"final_loss": [1.0], "val_loss": [1.0], "gradient_decay_median": [1.0]}})
    assert main_metric({"metrics": ["final_loss", "val_loss"]}, df) == "final_loss"
    assert main_metric({"metrics": ["absent", "val_loss"]}, df) == "val_loss"
    assert main_metric({"metric": "val_loss", "metrics": ["final_loss"]}, df) == "val_loss"
    assert main_metric({"metrics": []}, df) == "val_loss"


def test_no_dynamics_scalars_says_so():
    df = table({"a": {"val_loss": [1.0, 2.0, 3.0]}})
    text = section(df)
    assert "## What explains it" in text and "no dynamics scalar" in text


# --------------------------------------------------------------------------- the answer


def init_activation_like(best_vanishes: bool) -> pd.DataFrame:
    """An init study where the best arm (random) has the fastest-vanishing gradient profile
    (`best_vanishes`), or the slowest; saturation tracks the loss over every arm."""
    rng = np.random.default_rng(6)
    loss = {"random": 0.71, "orthogonal": 0.78, "xavier": 0.79, "identity": 1.0}
    decay = {"random": 0.08, "orthogonal": 0.91, "xavier": 0.89, "identity": 0.7}
    if not best_vanishes:
        decay = {"random": 0.99, "orthogonal": 0.91, "xavier": 0.89, "identity": 0.7}
    arms = {}
    for arm, m in loss.items():
        arms[arm] = {
            "val_loss": list(m + rng.normal(0, 0.005, 4)),
            "saturation_median": list(m * 0.1 + rng.normal(0, 0.0001, 4)),
            "gradient_decay_first": list(decay[arm] + rng.normal(0, 0.002, 4)),
        }
    return table(arms)


def test_says_whether_the_gradient_profile_explains_an_arm_beating_its_baseline():
    text = section(init_activation_like(best_vanishes=True))
    pair = text.split("**Arms that beat their baseline**")[1]
    # random is the only arm better than the baseline orthogonal; its decay is far lower
    assert re.search(
        r"\| init=random \| init=orthogonal \| 0\.7\d+ vs 0\.7\d+ \| .* \| "
        r"0\.0\d+ vs 0\.9\d+, apart, (n\.s\.|against) \|",
        pair,
    )
    assert "| init=xavier |" not in pair and "| init=identity |" not in pair
    assert re.search(r"\| 0\.07\d* vs 0\.07\d*, apart, in line \|", pair)  # saturation tracks loss
    assert (
        "By gradient_decay_first, the gradient of init=random vanishes faster over the chunk "
        "than that of the arm it beats" in pair
    )
    assert "so the gradient profile does not explain the gap" in pair
    text = section(init_activation_like(best_vanishes=False))
    assert (
        "the gradient of init=random vanishes more slowly than that of the arm it beats, as "
        "the walkthrough's argument predicts" in text
    )


def test_without_a_declared_baseline_the_best_arm_is_set_against_the_worst():
    text = section(init_activation_like(best_vanishes=True), settings={"metrics": ["val_loss"]})
    pair = text.split("**The best arm against the worst**")[1]
    assert re.search(r"\| init=random \| init=identity \| 0\.7\d* vs 1(\.\d+)? \|", pair)


def test_sentences_name_the_strongest_scalar_and_say_it_is_correlational():
    text = section(init_activation_like(best_vanishes=True))
    assert "saturation_median goes with val_loss most strongly over the 16 ok runs: ρ = " in text
    assert "the CI excludes 0" in text
    assert "This is correlational: it does not show that the dynamics cause the outcome" in text
    assert "| **saturation_median** |" in text  # the strongest row is marked


# --------------------------------------------------------------------------- collected scalars


def test_history_scalars_weight_clip_fraction_by_the_steps_each_row_covers():
    rows = [
        {"step": 1, "clip_fraction": 1.0, "grad_norm": 9.0, "saturation": 0.5},
        {"step": 10, "clip_fraction": 0.0, "grad_norm": 3.0},
        {"step": 20, "clip_fraction": 0.5, "grad_norm": 1.0, "saturation": 0.1},
        {"step": 30, "clip_fraction": 0.0, "grad_norm": 2.0, "saturation": 0.2},
    ]
    out = history_scalars(rows)
    assert out["clip_fraction_run"] == pytest.approx((1 * 1 + 0 * 9 + 0.5 * 10 + 0) / 30)
    assert out["grad_norm_median"] == pytest.approx(2.5)
    assert out["saturation_first"] == 0.5 and out["saturation_median"] == pytest.approx(0.2)
    assert history_scalars([{"step": 5, "loss": 1.0}]) == {}


def test_collect_adds_the_history_scalars_to_each_run(tmp_path):
    history = (
        "step,loss,val_loss,lr,grad_norm,clipped,clip_ratio,clip_fraction,spectral_radius,saturation\n"
        "1,3.0,,0.01,8.0,1,0.6,1.0,1.0,0.25\n"
        "100,2.0,,0.01,4.0,0,1.0,0.5,1.0,0.05\n"
        "200,1.5,1.6,0.01,2.0,0,1.0,0.0,1.0,0.15\n"
    )
    make_fake_run(
        tmp_path / "0", fake_config(), ["init=orthogonal"], fake_summary(), history=history
    )
    row = collect(tmp_path, write=False).iloc[0]
    assert row["clip_fraction_run"] == pytest.approx((1 + 0.5 * 99) / 200)
    assert row["grad_norm_median"] == pytest.approx(4.0)
    assert row["saturation_first"] == 0.25 and row["saturation_median"] == pytest.approx(0.15)


# --------------------------------------------------------------------------- a real sweep


def test_tiny_real_study_report_has_the_section_and_its_scatter(tmp_path):
    """rnn-lab study demo narrowed to 2 inits x 3 seeds of 40 steps, analysed (so the
    gradient profile is in the table): the report relates val_loss to the recorded dynamics
    and draws the scatter."""
    sweep = tmp_path / "demo"
    tiny = [o for o in TINY if o != "analyze=false"]
    proc = run_cli(
        [
            "study",
            "demo",
            "init=orthogonal,random",
            "activation=tanh",
            "seed=1,2,3",
            *tiny,
            f"hydra.sweep.dir={sweep}",
        ],
        module="rnn_lab.app.cli",
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (sweep / "report.md").read_text()
    text = report.split("## What explains it", 1)[1].split("\n## ", 1)[0]
    assert "All 6 runs are ok and used." in text
    rows = {
        line.split(" | ")[0].strip("| *") for line in text.splitlines() if line.startswith("| ")
    }
    assert {"gradient_decay_first", "spectral_radius", "final_grad_norm"} <= rows
    assert "This is correlational" in text
    assert f"![{SCATTER_PLOT}](plots/{SCATTER_PLOT})" in text
    assert (sweep / "plots" / SCATTER_PLOT).stat().st_size > 10_000
    table_csv = pd.read_csv(sweep / "explain.csv")
    assert set(table_csv["metric"]) == {"val_loss"} and (table_csv["over_runs_n"] == 6).all()
    results = pd.read_csv(sweep / "results.csv")
    assert results["clip_fraction_run"].between(0, 1).all()
