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
    ClaimError,
    claim_rows,
    evaluate_claim,
    evaluate_claims,
    judge,
    parse_check,
)
from rnn_lab.study.collect import collect  # noqa: E402
from rnn_lab.study.report import build_report  # noqa: E402

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


def test_an_arm_without_ok_runs_is_inconclusive_with_the_reason(table):
    r = evaluate_claim(
        table,
        _check(arm={"init": "random", "activation": "relu"}, metric="final_loss", op="<", value=2),
    )
    assert r["verdict"] == INCONCLUSIVE
    assert "no ok runs" in r["reason"] and "3 diverged" in r["reason"]


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
    assert "3 claims: 1 hold, 1 fail, 1 inconclusive" in section
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
    # analyze=false: no vocab hit rate to check, said so; the loss after 200 steps fails.
    assert "| 3 | **inconclusive** |" in table and "'vocab_hit_rate' is not in the results" in table
    assert "| 1 | **fails** |" in table and "final_loss" in table
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
    assert "not run: c" in captured.err and "## Every claim" in captured.out
    ran.clear()
    assert rep.main_reproduce(["a"]) == 0 and ran == [("a", [])]
