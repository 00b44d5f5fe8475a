"""Claims as data: checks evaluated on fabricated collected tables whose answers are known,
the report's "Claims" section, and `rnn-lab reproduce`."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cli_helpers import run_cli  # noqa: E402
from fakeruns import make_fake_sweep  # noqa: E402

from rnn_lab.study.claims import (  # noqa: E402
    CLAIMS_TABLE,
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    WITHIN,
    ClaimError,
    check_claims,
    claim_rows,
    evaluate_claim,
    evaluate_claims,
    judge,
    parse_check,
    tally_text,
)
from rnn_lab.study.collect import collect  # noqa: E402
from rnn_lab.study.report import build_report  # noqa: E402
from rnn_lab.study.stats import equivalence_verdict, seeds_for_power  # noqa: E402

# final_loss per arm and seed: orthogonal ~1.0 (tight), xavier ~1.5, random ~1.2 with a wide
# spread, and every relu + random run diverged. `mse` only some arms have.
LOSS = {
    ("orthogonal", "tanh"): [1.00, 1.02, 0.98],
    ("orthogonal", "relu"): [1.05, 1.07, 1.03],
    ("xavier", "tanh"): [1.50, 1.55, 1.45],
    ("xavier", "relu"): [1.52, 1.58, 1.46],
    ("random", "tanh"): [0.6, 1.9, 1.1],
}
CLAIMS = [
    {
        "sentence": "orthogonal tanh ends below 1.2 nats/char",
        "source": "made up (holds)",
        "check": {
            "arm": {"init": "orthogonal", "activation": "tanh"},
            "metric": "final_loss",
            "op": "<",
            "value": 1.2,
        },
    },
    {
        "sentence": "orthogonal tanh ends above 1.2 nats/char",
        "source": "made up (fails)",
        "check": {
            "arm": {"init": "orthogonal", "activation": "tanh"},
            "metric": "final_loss",
            "op": ">",
            "value": 1.2,
        },
    },
    {
        "sentence": "random tanh ends below 1.2 nats/char",
        "source": "made up (inconclusive: its CI straddles 1.2)",
        "check": {
            "arm": {"init": "random", "activation": "tanh"},
            "metric": "final_loss",
            "op": "<",
            "value": 1.2,
        },
    },
]


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> pd.DataFrame:
    root = tmp_path_factory.mktemp("claims") / "sweep"
    cells = []
    for (init, activation), losses in LOSS.items():
        for seed, loss in enumerate(losses, 1):
            cell = {"init": init, "activation": activation, "seed": seed, "final_loss": loss}
            if init != "random":
                cell["mse"] = loss / 10
            cells.append(cell)
    for seed in (1, 2, 3):
        cells.append(
            {"init": "random", "activation": "relu", "seed": seed, "status": "diverged"}
            | {"final_loss": None, "error": "loss is nan at step 100"}
        )
    study = {"name": "fake", "question": "?", "baseline": {"init": "orthogonal"}}
    make_fake_sweep(root, cells, study={**study, "claims": CLAIMS})
    return collect(root, write=False)


def _check(**check) -> dict:
    return {"sentence": "s", "source": "t", "check": check}


ORTHO_TANH = {"init": "orthogonal", "activation": "tanh"}


# --------------------------------------------------------------------------- judging


@pytest.mark.parametrize(
    "low, high, op, threshold, verdict",
    [
        (0.1, 0.2, "<", 0.3, HOLDS),
        (0.1, 0.3, "<", 0.3, INCONCLUSIVE),  # touches the line: not wholly below
        (0.1, 0.3, "<=", 0.3, HOLDS),
        (0.3, 0.4, "<", 0.3, FAILS),
        (0.3, 0.4, "<=", 0.3, INCONCLUSIVE),
        (0.4, 0.5, ">", 0.3, HOLDS),
        (0.2, 0.4, ">", 0.3, INCONCLUSIVE),
        (0.1, 0.2, ">=", 0.3, FAILS),
        (0.3, 0.3, ">=", 0.3, HOLDS),  # every seed gave the same number
        (math.nan, math.nan, "<", 0.3, INCONCLUSIVE),
    ],
)
def test_judge(low, high, op, threshold, verdict):
    assert judge(low, high, op, threshold) == verdict


@pytest.mark.parametrize(
    "check, message",
    [
        ({"op": "<", "value": 1}, "no metric"),
        ({"metric": "m", "op": "=", "value": 1}, "op"),
        ({"metric": "m", "op": "<"}, "exactly one"),
        ({"metric": "m", "op": "<", "value": 1, "other": {"init": "x"}}, "exactly one"),
        ({"metric": "m", "op": "<", "value": "low"}, "not a number"),
        ({"metric": "m", "op": "<", "value": 1, "for": "some"}, "all or any"),
        ({"metric": "m", "op": "<", "value": 1, "arm": "orthogonal"}, "mapping"),
    ],
)
def test_parse_check_refuses_what_cannot_be_checked(check, message):
    with pytest.raises(ClaimError, match=message):
        parse_check(check)


# --------------------------------------------------------------------------- against a number


def test_a_holding_a_failing_and_an_inconclusive_claim(table):
    held, failed, unsure = evaluate_claims(table)  # the study's own claims, in order
    assert held["verdict"] == HOLDS and failed["verdict"] == FAILS
    assert unsure["verdict"] == INCONCLUSIVE
    arm = held["arms"][0]
    assert arm["n"] == 3 and arm["mean"] == pytest.approx(1.0)
    assert arm["ci_low"] < 1.0 < arm["ci_high"] < 1.2
    wide = unsure["arms"][0]
    assert wide["ci_low"] < 1.2 < wide["ci_high"] and wide["mean"] == pytest.approx(1.2)
    assert held["sentence"] == "orthogonal tanh ends below 1.2 nats/char"
    assert held["source"] == "made up (holds)"


def test_an_arm_whose_every_run_diverged_fails_with_the_reason(table):
    r = evaluate_claim(
        table,
        _check(arm={"init": "random", "activation": "relu"}, metric="final_loss", op="<", value=2),
    )
    assert r["verdict"] == FAILS
    assert r["reason"] == "every run of the arm failed (3 diverged)"


def test_missing_metric_unknown_key_and_unmatched_value_are_reasons(table):
    r = evaluate_claim(table, _check(arm=ORTHO_TANH, metric="nope", op="<", value=1))
    assert r["verdict"] == INCONCLUSIVE and "'nope' is not in the results" in r["reason"]
    r = evaluate_claim(table, _check(arm={"colour": "red"}, metric="final_loss", op="<", value=1))
    assert r["verdict"] == INCONCLUSIVE and "no run has a config key 'colour'" in r["reason"]
    r = evaluate_claim(
        table, _check(arm={"init": "identity"}, metric="final_loss", op="<", value=1)
    )
    assert r["verdict"] == INCONCLUSIVE and "no runs match" in r["reason"]
    # A key every run shares is matched against the shared value.
    r = evaluate_claim(table, _check(arm={"hidden_size": 32}, metric="final_loss", op="<", value=1))
    assert "every run has hidden_size=16" in r["reason"]
    r = evaluate_claim(
        table,
        _check(arm={**ORTHO_TANH, "hidden_size": 16}, metric="final_loss", op="<", value=1.2),
    )
    assert r["verdict"] == HOLDS


def test_one_run_has_no_ci(table):
    one = table[~((table["arm"] == "init=orthogonal, activation=tanh") & (table["seed"] != 1))]
    one.attrs = table.attrs
    r = evaluate_claim(one, _check(arm=ORTHO_TANH, metric="final_loss", op="<", value=5))
    assert r["verdict"] == INCONCLUSIVE and "no CI" in r["reason"]


def test_a_selector_matching_several_arms_needs_for(table):
    r = evaluate_claim(
        table, _check(arm={"init": "orthogonal"}, metric="final_loss", op="<", value=2)
    )
    assert r["verdict"] == INCONCLUSIVE and "matches 2 arms" in r["reason"]


def test_an_invalid_check_is_reported_not_raised(table):
    r = evaluate_claim(table, _check(metric="final_loss", op="=~", value=1))
    assert r["verdict"] == INCONCLUSIVE and r["reason"].startswith("invalid check")


# --------------------------------------------------------------------------- against another arm


def test_arm_against_its_counterpart_is_paired_by_seed(table):
    r = evaluate_claim(
        table, _check(arm=ORTHO_TANH, metric="final_loss", op="<", other={"init": "xavier"})
    )
    assert r["verdict"] == HOLDS
    arm = r["arms"][0]
    assert arm["other_arm"] == "init=xavier, activation=tanh"
    assert arm["test"] == "paired t" and arm["diff"] == pytest.approx(-0.5)
    assert arm["diff_ci_high"] < 0
    # The other way round it fails.
    r = evaluate_claim(
        table, _check(arm=ORTHO_TANH, metric="final_loss", op=">", other={"init": "xavier"})
    )
    assert r["verdict"] == FAILS


def test_against_an_arm_without_ok_runs(table):
    r = evaluate_claim(
        table,
        _check(
            arm={"init": "orthogonal", "activation": "relu"},
            metric="final_loss",
            op="<",
            other={"init": "random"},
        ),
    )
    assert r["verdict"] == INCONCLUSIVE and r["reason"].startswith("other: no ok runs")


def test_against_another_metric_of_the_same_runs(table):
    r = evaluate_claim(
        table, _check(arm=ORTHO_TANH, metric="mse", op="<", other_metric="final_loss")
    )
    assert r["verdict"] == HOLDS
    assert r["arms"][0]["other_mean"] == pytest.approx(1.0)
    assert r["arms"][0]["diff"] == pytest.approx(-0.9)


def test_for_all_and_any(table):
    every = _check(
        arm={"init": "orthogonal"}, metric="final_loss", op="<", other={"init": "xavier"}
    )
    r = evaluate_claim(table, {**every, "check": {**every["check"], "for": "all"}})
    assert r["verdict"] == HOLDS and len(r["arms"]) == 2 and "2 holds" in r["reason"]
    # Over every init with tanh: orthogonal holds, xavier fails, random is inconclusive.
    check = {"arm": {"activation": "tanh"}, "metric": "final_loss", "op": "<", "value": 1.2}
    r = evaluate_claim(table, _check(**check, **{"for": "all"}))
    assert r["verdict"] == FAILS
    assert r["reason"] == "all of 3 arms: 1 holds, 1 fails, 1 inconclusive"
    r = evaluate_claim(table, _check(**check, **{"for": "any"}))
    assert r["verdict"] == HOLDS
    check["value"] = 0.5  # random's wide CI straddles 0.5: not every arm fails
    assert evaluate_claim(table, _check(**check, **{"for": "any"}))["verdict"] == INCONCLUSIVE
    check["value"] = -5.0
    assert evaluate_claim(table, _check(**check, **{"for": "any"}))["verdict"] == FAILS
    check["value"] = 1.3  # xavier holds; random straddles; orthogonal fails
    check["op"] = ">"
    r = evaluate_claim(table, _check(**check, **{"for": "all"}))
    assert r["verdict"] == FAILS


# --------------------------------------------------------------------------- rows and report


def test_claim_rows_carry_verdicts_and_numbers(table):
    rows = claim_rows(evaluate_claims(table), study="fake")
    assert [r["verdict"] for r in rows] == [HOLDS, FAILS, INCONCLUSIVE]
    assert rows[0]["study"] == "fake" and rows[0]["claim"] == 1
    assert rows[0]["numbers"].startswith("final_loss 1 [") and "claimed < 1.2" in rows[0]["numbers"]
    assert rows[0]["n"] == 3 and rows[0]["value"] == 1.2


def test_report_has_a_claims_section_and_table(table):
    sweep_dir = Path(table.attrs["sweep_dir"])
    report = build_report(sweep_dir).read_text()
    section = report.split("## Claims", 1)[1].split("\n## ", 1)[0]
    assert "3 claims (3 reproduction: 1 hold, 1 fail, 1 inconclusive)" in section
    assert "**holds**" in section and "**fails**" in section and "**inconclusive**" in section
    assert report.index("## Claims") < report.index("## Comparisons")
    written = pd.read_csv(sweep_dir / CLAIMS_TABLE)
    assert list(written["verdict"]) == [HOLDS, FAILS, INCONCLUSIVE]


def test_a_study_without_claims_has_no_section(tmp_path):
    make_fake_sweep(tmp_path, [{"init": "orthogonal", "activation": "tanh", "seed": 1}])
    assert "## Claims" not in build_report(tmp_path).read_text()
    assert not (tmp_path / CLAIMS_TABLE).exists()


# --------------------------------------------------------------------------- rnn-lab reproduce


def test_reproduce_list_and_unknown_study():
    proc = run_cli(["reproduce", "--list"], module="rnn_lab.app.cli")
    assert proc.returncode == 0, proc.stderr
    names = [line.split()[0] for line in proc.stdout.splitlines()]
    assert {"seed_run", "elman_categories"} <= set(names)
    proc = run_cli(["reproduce", "init_activation"], module="rnn_lab.app.cli")
    assert proc.returncode == 2 and "not a study with claims" in proc.stderr


def test_reproduce_runs_the_study_and_prints_its_claims(tmp_path):
    sweep = tmp_path / "seed_run"
    tiny = ["steps=200", "hidden_size=8", "data.num_sentences=40", "analyze=false"]
    args = [
        "reproduce",
        "seed_run",
        *tiny,
        "seed=1,2",
        "launcher=basic",
        f"hydra.sweep.dir={sweep}",
    ]
    proc = run_cli(args, module="rnn_lab.app.cli", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert f"## Claims of seed_run ({sweep}" in out
    table = out.split("## Claims of seed_run", 1)[1]
    # analyze=false: no vocab hit rate to check, said so; the loss after 200 steps is far
    # outside 1.1 +- 0.2, so the two-sided claim fails.
    assert "| 3 | reproduction | **inconclusive** |" in table
    assert "'vocab_hit_rate' is not in the results" in table
    assert "| 1 | reproduction | **fails** |" in table and "within ±0.2 of 1.1" in table
    assert (sweep / "report.md").is_file() and (sweep / CLAIMS_TABLE).is_file()


def test_reproduce_all_stops_at_a_study_a_signal_stopped(monkeypatch, capsys):
    from rnn_lab.app import reproduce as rep

    ran = []

    def fake(name, overrides, study):
        ran.append((name, overrides))
        return rep.Reproduction(name, Path("multirun") / name, code=143 if name == "b" else 0)

    studies = {n: {"claims": [{}], "question": "?"} for n in ("a", "b", "c")}
    monkeypatch.setattr(rep, "studies_with_claims", lambda: studies)
    monkeypatch.setattr(rep, "reproduce", fake)
    assert rep.main_reproduce(["--all", "steps=10"]) == 143
    assert ran == [("a", ["steps=10"]), ("b", ["steps=10"])]
    captured = capsys.readouterr()
    assert "not run: c" in captured.err and "## Every study" in captured.out
    assert "| all | 0 s | 0 |" in captured.out  # the tally of what ran
    ran.clear()
    assert rep.main_reproduce(["a"]) == 0 and ran == [("a", [])]


# --------------------------------------------------------------------------- forms that can fail
# Each test below has an arm whose answer is known, and a plausible bug that would flip it:
# dropping diverged runs, judging the mean where every run is asked, a swapped TOST bound or
# confidence, pairing by position instead of by seed, ignoring the factor.

# Five values with mean 0 and sample sd sqrt(5) x 0.01: the t-intervals of their mean are
# +-2.132 x 0.01 (90%) and +-2.776 x 0.01 (95%).
UNIT = [-2 / 2.5**0.5, -1 / 2.5**0.5, 0.0, 1 / 2.5**0.5, 2 / 2.5**0.5]
SPREAD = 0.01 * 5**0.5


def _sweep(tmp_path, arms: dict, **extra_by_arm) -> pd.DataFrame:
    """A collected table: arms {(init, activation): [cell fields per seed, ...]}, each cell a
    dict with seed and the summary's fields."""
    cells = []
    for (init, activation), runs in arms.items():
        for run in runs:
            cells.append({"init": init, "activation": activation, **run})
    make_fake_sweep(tmp_path, cells, study={"name": "forms", "question": "?"})
    return collect(tmp_path, write=False)


def _runs(values, metric="mse", first_seed=1, **fields) -> list[dict]:
    return [
        {"seed": first_seed + i, metric: v, **{k: f[i] for k, f in fields.items()}}
        for i, v in enumerate(values)
    ]


DIVERGED = {"status": "diverged", "final_loss": None, "error": "loss is nan at step 50"}


def test_diverged_runs_count_against_the_claim_on_their_arm(tmp_path):
    learned = _runs([0.010, 0.012, 0.011])  # every ok run far below 0.05
    arms = {
        ("orthogonal", "tanh"): learned + [{"seed": 4, **DIVERGED}, {"seed": 5, **DIVERGED}],
        ("orthogonal", "relu"): [{"seed": s, **DIVERGED} for s in (1, 2, 3)],
    }
    df = _sweep(tmp_path, arms)
    check = {"arm": ORTHO_TANH, "metric": "mse", "op": "<", "value": 0.05}
    r = evaluate_claim(df, _check(**check))
    # The ok runs alone hold; the two diverged seeds mean it cannot.
    assert r["verdict"] == INCONCLUSIVE, r
    assert "2 of 5 runs count against it (2 diverged)" in r["reason"]
    row = claim_rows([r])[0]
    assert (row["seeds_for"], row["seeds_against"], row["seeds_failed"]) == (3, 0, 2)
    assert row["seeds_to_decide"] is None  # more seeds cannot outvote a diverged run
    # An arm whose every run diverged fails the claim.
    relu = evaluate_claim(df, _check(**{**check, "arm": {"activation": "relu"}}))
    assert relu["verdict"] == FAILS and "every run of the arm failed (3 diverged)" in relu["reason"]
    # An every-run claim fails on a diverged run, which it names.
    every = evaluate_claim(df, _check(**check, every_run=True))
    assert every["verdict"] == FAILS and "seed 4: diverged" in every["reason"]
    # on_failure: exclude is the old rule, said out loud.
    excluded = evaluate_claim(df, _check(**check, on_failure="exclude"))
    assert excluded["verdict"] == HOLDS and "2 runs excluded (2 diverged)" in excluded["reason"]
    assert claim_rows([excluded])[0]["runs_excluded"] == 2
    relu_excluded = evaluate_claim(
        df, _check(**{**check, "arm": {"activation": "relu"}}, on_failure="exclude")
    )
    assert relu_excluded["verdict"] == INCONCLUSIVE and "no ok runs" in relu_excluded["reason"]


def test_every_run_is_judged_run_by_run_and_names_the_violation(tmp_path):
    # The mean's 95% CI is wholly below 0.5, but seed 5's run is not.
    df = _sweep(tmp_path, {("orthogonal", "tanh"): _runs([0.10, 0.11, 0.12, 0.10, 0.52])})
    check = {"arm": ORTHO_TANH, "metric": "mse", "op": "<", "value": 0.5}
    assert evaluate_claim(df, _check(**check))["verdict"] == HOLDS  # the mean
    r = evaluate_claim(df, _check(**check, every_run=True))
    assert r["verdict"] == FAILS
    bad = df.loc[df["seed"] == 5, "path"].iloc[0]
    assert r["reason"] == f"violated by {bad} (seed 5: 0.52)"
    row = claim_rows([r])[0]
    assert (row["seeds_for"], row["seeds_against"]) == (4, 1) and row["violations"] == r["reason"][
        12:
    ]
    # Every run below 0.6: holds, with no CI needed (one run would do).
    assert evaluate_claim(df, _check(**{**check, "value": 0.6}, every_run=True))["verdict"] == HOLDS


@pytest.mark.parametrize(
    "mean, margin, verdict",
    [
        (0.0, 0.025, HOLDS),  # 90% CI +-0.0213 inside +-0.025; the 95% CI (+-0.0278) is not
        (0.02, 0.025, INCONCLUSIVE),  # 90% CI [-0.0013, 0.0413] straddles +0.025
        (-0.02, 0.025, INCONCLUSIVE),  # ... and -0.025
        (0.05, 0.025, INCONCLUSIVE),  # 90% CI wholly outside, the 95% CI [0.0222, ..] is not
        (0.06, 0.025, FAILS),  # 95% CI [0.0322, 0.0878] wholly above +0.025
        (-0.06, 0.025, FAILS),  # ... wholly below -0.025
    ],
)
def test_within_is_tost_90_percent_inside_holds_95_percent_outside_fails(
    tmp_path, mean, margin, verdict
):
    values = [0.163 + mean + SPREAD * z for z in UNIT]
    df = _sweep(tmp_path, {("orthogonal", "tanh"): _runs(values, baseline_mse=[0.163] * 5)})
    against_value = {"arm": ORTHO_TANH, "metric": "mse", "op": "within", "value": 0.163}
    r = evaluate_claim(df, _check(**against_value, margin=margin))
    assert r["verdict"] == verdict, r["arms"][0]
    arm = r["arms"][0]
    assert arm["diff_ci90_high"] - arm["diff"] == pytest.approx(2.132 * 0.01, abs=1e-4)
    assert arm["diff_ci_high"] - arm["diff"] == pytest.approx(2.776 * 0.01, abs=1e-4)
    # The same against the runs' own baseline metric (paired by seed), and as a relative margin.
    against_metric = {**against_value, "value": None, "other_metric": "baseline_mse"}
    assert evaluate_claim(df, _check(**against_metric, margin=margin))["verdict"] == verdict
    rel = evaluate_claim(df, _check(**against_metric, rel_margin=margin / 0.163))
    assert rel["verdict"] == verdict


@pytest.mark.parametrize(
    "ci90, ci95, verdict",
    [
        ((-0.9, 0.9), (-1.1, 1.1), HOLDS),
        ((-1.1, 0.5), (-1.2, 0.6), INCONCLUSIVE),
        ((1.1, 1.5), (0.9, 1.7), INCONCLUSIVE),
        ((1.1, 1.5), (1.05, 1.7), FAILS),
        ((-1.5, -1.1), (-1.7, -1.05), FAILS),
        ((-2.0, 2.0), (-2.5, 2.5), INCONCLUSIVE),  # wide: neither inside nor outside
        ((float("nan"),) * 2, (float("nan"),) * 2, INCONCLUSIVE),
    ],
)
def test_equivalence_verdict(ci90, ci95, verdict):
    assert equivalence_verdict(ci90, ci95, 1.0) == verdict


def test_stays_at_the_baseline_fails_for_a_network_that_beats_it(tmp_path):
    # The copy_memory case: 0.522 in every seed against the memoryless 0.520. "Gets below the
    # baseline" fails; "stays within 0.005 of it" holds; a network at 0.30 fails the latter.
    at = _runs([0.5221, 0.5219, 0.5222], metric="ce_per_step", memoryless_baseline=[0.52] * 3)
    below = _runs([0.30, 0.31, 0.29], metric="ce_per_step", memoryless_baseline=[0.52] * 3)
    df = _sweep(tmp_path, {("orthogonal", "tanh"): at, ("orthogonal", "relu"): below})
    base = {"metric": "ce_per_step", "other_metric": "memoryless_baseline"}
    tanh, relu = {"arm": ORTHO_TANH}, {"arm": {"activation": "relu"}}
    assert evaluate_claim(df, _check(**tanh, **base, op="<"))["verdict"] == FAILS
    assert evaluate_claim(df, _check(**tanh, **base, op=WITHIN, margin=0.005))["verdict"] == HOLDS
    assert evaluate_claim(df, _check(**relu, **base, op=WITHIN, margin=0.005))["verdict"] == FAILS


def test_another_arm_is_paired_by_seed_not_by_position(tmp_path):
    # init=xavier shares seeds 2-4 with orthogonal, each 0.1 above; by position (1-4 against
    # 2-5) the differences would be 3.9, -1.1, -1.1, -6.
    arms = {
        ("orthogonal", "tanh"): _runs([5.0, 1.0, 2.0, 3.0]),
        ("xavier", "tanh"): _runs([1.1, 2.1, 3.1, 9.0], first_seed=2),
    }
    df = _sweep(tmp_path, arms)
    check = {"arm": ORTHO_TANH, "metric": "mse", "op": "<", "other": {"init": "xavier"}}
    r = evaluate_claim(df, _check(**check))
    assert r["verdict"] == HOLDS and r["arms"][0]["diff"] == pytest.approx(-0.1)
    row = claim_rows([r])[0]
    assert (row["seeds_for"], row["seeds_against"]) == (3, 0)  # the 3 shared seeds
    # run by run, too: orthogonal's seed 1 has no partner, so it is not judged
    every = evaluate_claim(df, _check(**check, every_run=True))
    assert every["verdict"] == INCONCLUSIVE and "(seed 1: 5)" in every["reason"]


def test_factor_scales_a_baseline_read_from_each_run(tmp_path):
    # Under a tenth of each run's own baseline: 0.011 against 0.0163 holds; with a baseline of
    # 0.05 (a shorter sequence, say) the same MSE is more than a tenth of it.
    arms = {
        ("orthogonal", "tanh"): _runs([0.010, 0.012, 0.011], baseline_mse=[0.163, 0.165, 0.16]),
        ("orthogonal", "relu"): _runs([0.010, 0.012, 0.011], baseline_mse=[0.05, 0.051, 0.049]),
    }
    df = _sweep(tmp_path, arms)
    check = {"metric": "mse", "op": "<", "other_metric": "baseline_mse", "factor": 0.1}
    r = evaluate_claim(df, _check(arm=ORTHO_TANH, **check))
    assert r["verdict"] == HOLDS and r["arms"][0]["other_mean"] == pytest.approx(0.0488 / 3)
    assert evaluate_claim(df, _check(arm={"activation": "relu"}, **check))["verdict"] == FAILS
    every = evaluate_claim(df, _check(arm={"activation": "relu"}, **check, every_run=True))
    assert every["verdict"] == FAILS and every["reason"].count("seed") == 3
    assert "claimed < 0.1 x baseline_mse" in claim_rows([r])[0]["numbers"]


def test_kinds_and_their_tally(tmp_path):
    df = _sweep(tmp_path, {("orthogonal", "tanh"): _runs([0.10, 0.11, 0.12])})
    claims = [
        _check(arm=ORTHO_TANH, metric="mse", op="<", value=0.5),
        {**_check(arm=ORTHO_TANH, metric="mse", op=">", value=0.5), "kind": "expectation"},
        {
            **_check(arm=ORTHO_TANH, metric="mse", op="<", value=1, every_run=True),
            "kind": "consistency",
        },
    ]
    rows = claim_rows(evaluate_claims(df, claims))
    assert [r["kind"] for r in rows] == ["reproduction", "expectation", "consistency"]
    assert tally_text(rows) == (
        "1 reproduction: 1 hold, 0 fail, 0 inconclusive; 1 consistency: 1 hold, 0 fail, "
        "0 inconclusive; 1 expectation: 0 hold, 1 fail, 0 inconclusive"
    )
    with pytest.raises(
        ClaimError, match="kind 'theorem' is not one of reproduction, consistency, expectation"
    ):
        check_claims([{**claims[0], "kind": "theorem"}])
    with pytest.raises(ClaimError, match=r"study.claims\[2\]"):
        check_claims(
            [claims[0], {"sentence": "x", "check": {"metric": "m", "op": "within", "value": 1}}]
        )


def test_seeds_to_decide_is_the_80_percent_power_sample_size(tmp_path):
    # A one-sample t-test at one-sided 0.025 needs 10 seeds to detect a mean one sd away with
    # 80% power (noncentral t; the normal approximation says 7.85 + ~2).
    assert seeds_for_power(1.0, 1.0, 0.025) == 10
    assert seeds_for_power(0.5, 1.0, 0.025) > seeds_for_power(1.0, 1.0, 0.025)
    assert seeds_for_power(0.0, 1.0, 0.025) is None
    # An inconclusive claim gets it from its observed spread; a decided one does not.
    values = [0.5 + 0.1 + 0.2 * z for z in UNIT]  # mean 0.6, sd 0.2 against "< 0.5"
    df = _sweep(tmp_path, {("orthogonal", "tanh"): _runs(values)})
    unsure = claim_rows(
        [evaluate_claim(df, _check(arm=ORTHO_TANH, metric="mse", op="<", value=0.5))]
    )
    assert unsure[0]["verdict"] == INCONCLUSIVE
    assert unsure[0]["seeds_to_decide"] == seeds_for_power(0.1, 0.2, 0.025) > 5
    decided = claim_rows(
        [evaluate_claim(df, _check(arm=ORTHO_TANH, metric="mse", op="<", value=2))]
    )
    assert decided[0]["seeds_to_decide"] is None


@pytest.mark.parametrize(
    "check, message",
    [
        ({"metric": "m", "op": "within", "value": 1}, "exactly one of margin"),
        (
            {"metric": "m", "op": "within", "value": 1, "margin": 1, "rel_margin": 0.1},
            "exactly one",
        ),
        ({"metric": "m", "op": "<", "value": 1, "margin": 1}, "margin is for op within"),
        ({"metric": "m", "op": "within", "value": 1, "margin": -1}, "positive"),
        (
            {"metric": "m", "op": "<", "value": 1, "factor": "tenth"},
            "factor 'tenth' is not a number",
        ),
        ({"metric": "m", "op": "<", "value": 1, "on_failure": "ignore"}, "against, exclude"),
        ({"metric": "m", "op": "<", "value": 1, "every_run": "yes"}, "true or false"),
        ({"metric": "m", "op": "<", "value": 1, "every": True}, "unknown key 'every'"),
    ],
)
def test_parse_check_refuses_bad_new_forms(check, message):
    with pytest.raises(ClaimError, match=message):
        parse_check(check)


def test_contrast_compares_the_size_of_an_effect_between_arms(tmp_path):
    # random vs orthogonal: relu +1.0 (seeds 1-3: 1.0, 1.1, 0.9), tanh -0.1 (+-0.02): the init
    # matters more with relu; a signed difference would say the same here, so tanh's effect is
    # negative and larger in size in the second table.
    arms = {
        ("orthogonal", "relu"): _runs([1.0, 1.0, 1.0]),
        ("random", "relu"): _runs([2.0, 2.1, 1.9]),
        ("orthogonal", "tanh"): _runs([1.0, 1.0, 1.0]),
        ("random", "tanh"): _runs([0.9, 0.92, 0.88]),
    }
    df = _sweep(tmp_path / "a", arms)
    check = {"arm": {"init": "random", "activation": "relu"}, "metric": "mse", "op": ">"}
    check |= {"other": {"init": "orthogonal"}, "contrast": {"activation": "tanh"}}
    r = evaluate_claim(df, _check(**check))
    assert r["verdict"] == HOLDS and r["arms"][0]["diff"] == pytest.approx(0.9)
    assert (
        "|effect of init=orthogonal| 1 vs 0.1 on init=random, activation=tanh"
        in (claim_rows([r])[0]["numbers"])
    )
    arms[("random", "tanh")] = _runs([-0.5, -0.4, -0.6])  # tanh's effect: -1.5 in size 1.5
    df = _sweep(tmp_path / "b", arms)
    assert evaluate_claim(df, _check(**check))["verdict"] == FAILS
    with pytest.raises(ClaimError, match="contrast .* needs other"):
        parse_check({"metric": "m", "op": ">", "value": 1, "contrast": {"activation": "tanh"}})


def test_reproduce_all_writes_the_page_with_each_kind_apart(monkeypatch, tmp_path, capsys):
    from rnn_lab.app import reproduce as rep

    df = _sweep(tmp_path / "sweep", {("orthogonal", "tanh"): _runs([0.10, 0.11, 0.12])})
    claims = {
        "a": [
            _check(arm=ORTHO_TANH, metric="mse", op="<", value=0.5),
            {**_check(arm=ORTHO_TANH, metric="mse", op=">", value=0.5), "kind": "expectation"},
        ],
        "b": [
            {
                **_check(arm=ORTHO_TANH, metric="mse", op="<", value=1, every_run=True),
                "kind": "consistency",
            }
        ],
    }

    def fake(name, overrides, study):
        rows = claim_rows(evaluate_claims(df, claims[name]), study=name)
        return rep.Reproduction(name, tmp_path / name, wall_time_s=12.0, rows=rows)

    monkeypatch.setattr(
        rep, "studies_with_claims", lambda: {n: {"claims": c} for n, c in claims.items()}
    )
    monkeypatch.setattr(rep, "reproduce", fake)
    page = tmp_path / "docs" / "reproductions.md"
    assert rep.main_reproduce(["--all", "--out", str(page)]) == 0
    text = page.read_text()
    assert f"Written by `rnn-lab reproduce --all --out {page}`" in text
    assert "- commit: " in text and "- machine: " in text and " logical CPUs" in text
    assert "Started " in text and ", ended " in text
    assert "| a | 12 s | 2 | 1/0/0 | — | 0/1/0 | 0 |" in text  # holds/fails/inconclusive per kind
    assert "| b | 12 s | 1 | — | 1/0/0 | — | 0 |" in text
    assert "| all | 24 s | 3 | 1/0/0 | 1/0/0 | 0/1/0 |  |" in text
    sections = [line for line in text.splitlines() if line.startswith("### ")]
    assert sections == [
        "### Reproduction claims (1 holds, 0 fails, 0 inconclusive)",
        "### Consistency claims (1 holds, 0 fails, 0 inconclusive)",
        "### Expectation claims (0 holds, 1 fails, 0 inconclusive)",
    ]
    assert f"written: {page}" in capsys.readouterr().out
    # a run shrunk by overrides writes its page into multirun/, never over the shipped one
    assert rep._page_path(None, ["steps=100"]) == Path("multirun") / "reproductions-steps=100.md"
    assert rep._page_path(None, ["launcher=basic"]) == rep.DOCS_PAGE
