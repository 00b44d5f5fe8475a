"""Pre-registration and the Answer: what a study declared when it started, recorded in its
sweep folder and compared by the report with the declaration in force; the report opening with
its answer. Fabricated sweeps for the rules, then real tiny sweeps of a study file kept outside
the repository (found through Hydra's search path) for the whole path, every claim form in it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from cli_helpers import run_cli  # noqa: E402
from fakeruns import make_fake_sweep  # noqa: E402

from rnn_lab.run.rundir import DECLARATIONS_FILE, SWEEP_STATE_DIR  # noqa: E402
from rnn_lab.study.answer import answer_block  # noqa: E402
from rnn_lab.study.claims import CLAIMS_TABLE, ClaimError  # noqa: E402
from rnn_lab.study.collect import collect  # noqa: E402
from rnn_lab.study.declaration import (  # noqa: E402
    read_declarations,
    record_declaration,
    review,
)
from rnn_lab.study.report import build_report  # noqa: E402


def _claim(sentence, value, kind=None, op="<") -> dict:
    claim = {"sentence": sentence, "source": "made up"}
    claim["check"] = {
        "arm": {"init": "orthogonal"},
        "metric": "final_loss",
        "op": op,
        "value": value,
    }
    return {**claim, "kind": kind} if kind else claim


GRID = {"init": ["orthogonal", "xavier"], "seed": ["1", "2"]}


def _study(claims, **extra) -> dict:
    return {"name": "pre", "question": "does it learn?", "expect": "yes", "claims": claims, **extra}


def _runs(sweep: Path, study: dict, seeds=(1, 2)) -> None:
    cells = [
        {
            "init": init,
            "activation": "tanh",
            "seed": s,
            "final_loss": 1.0 + 0.01 * s + (init == "xavier"),
        }
        for init in ("orthogonal", "xavier")
        for s in seeds
    ]
    make_fake_sweep(sweep, cells, study=study, override_keys=("init", "seed"))


def test_the_record_is_appended_only_when_the_declaration_changes(tmp_path):
    study = _study([_claim("below 2", 2.0)])
    first = record_declaration(tmp_path, study, GRID)
    assert first["finished_runs"] == 0 and first["claims"] == study["claims"]
    assert first["grid"] == {"init": ["orthogonal", "xavier"], "seed": ["1", "2"]}
    assert record_declaration(tmp_path, study, GRID) is None  # a resumed study: nothing new
    # where the runs execute is not part of the declaration
    assert record_declaration(tmp_path, study, {**GRID, "launcher": ["basic"]}) is None
    _runs(tmp_path, study)
    changed = record_declaration(tmp_path, _study([_claim("below 2", 1.5)]), GRID)
    assert changed["finished_runs"] == 4
    log = read_declarations(tmp_path)
    assert [e["finished_runs"] for e in log] == [0, 4]
    assert (
        json.loads((tmp_path / SWEEP_STATE_DIR / DECLARATIONS_FILE).read_text())["declarations"]
        == log
    )


def test_a_claim_that_cannot_be_checked_is_refused_before_anything_is_written(tmp_path):
    bad = _study(
        [
            _claim("fine", 2.0),
            {"sentence": "no margin", "check": {"metric": "m", "op": "within", "value": 1}},
        ]
    )
    with pytest.raises(
        ClaimError, match=r"study.claims\[2\] \('no margin'\): op within needs exactly one"
    ):
        record_declaration(tmp_path, bad, GRID)
    assert not (tmp_path / SWEEP_STATE_DIR).exists()


def test_claims_and_seeds_declared_after_the_results_are_marked(tmp_path):
    kept, changed = _claim("below 2", 2.0), _claim("below 1.5", 1.5)
    record_declaration(tmp_path, _study([kept, changed, _claim("dropped", 9.0)]), GRID)
    # The runs end; then claim 2's number is changed, claim 3 dropped, a claim added, seed 3 run.
    later = _study([kept, _claim("below 1.5", 1.2), _claim("added", 3.0, kind="expectation")])
    _runs(tmp_path, later, seeds=(1, 2))
    record_declaration(tmp_path, later, {**GRID, "seed": ["1", "2", "3"]})
    _runs(tmp_path, later, seeds=(1, 2, 3))
    df = collect(tmp_path, write=False)
    r = review(df)
    assert r.declared_before == [True, False, False]
    assert [c["claim"] for c in r.late_claims] == [2, 3]
    assert {w["sentence"]: w["replaced_by"] for w in r.withdrawn} == {
        "below 1.5": 2,
        "dropped": None,
    }
    assert [s["seed"] for s in r.late_seeds] == ["3"]

    report = build_report(tmp_path).read_text()
    answer = answer_block(report)
    assert "below 1.5 *(declared after the results)*" in answer
    assert "below 2 *(declared after the results)*" not in report
    assert "Seeds added after the results: 3" in answer
    section = report.split("## Pre-registration", 1)[1].split("\n## ", 1)[0]
    assert (
        "Claim 2 was **declared after the results**" in section
        and "when 4 runs had ended" in section
    )
    assert "Claim 2 replaces, after the results, the version declared" in section
    assert "Withdrawn after the results" in section and "dropped" in section
    assert "Seed 3 was **added after the results**" in section
    table = pd.read_csv(tmp_path / CLAIMS_TABLE)
    assert list(table["declared_before_results"]) == [True, False, False]


def test_without_a_record_nothing_is_claimed_about_when(tmp_path):
    _runs(tmp_path, _study([_claim("below 2", 2.0)]))
    report = build_report(tmp_path).read_text()
    assert "whether its claims were written before its results cannot be told" in report
    assert pd.read_csv(tmp_path / CLAIMS_TABLE)["declared_before_results"].isna().all()


def test_the_report_opens_with_its_answer_failed_expectations_first(tmp_path):
    claims = [
        _claim("a reproduction that holds", 2.0),
        _claim("an expectation that holds", 2.0, kind="expectation"),
        _claim("a consistency check that holds", 5.0, kind="consistency"),
        _claim("an expectation that fails", 0.5, kind="expectation"),
    ]
    _runs(tmp_path, _study(claims))
    report = build_report(tmp_path).read_text()
    sections = [s.split("\n", 1)[0] for s in report.split("\n## ")[1:]]
    assert sections[0] == "Answer" and sections.index("Answer") < sections.index("Grid")
    answer = answer_block(report)
    assert "**Question.** does it learn?" in answer and "**Expected (as declared).** yes" in answer
    assert (
        "4 claims: 1 reproduction: 1 hold, 0 fail, 0 inconclusive; 1 consistency: 1 hold" in answer
    )
    lines = [line for line in answer.splitlines() if line.startswith("- ")]
    assert [line.split(") ", 1)[1].split(" Numbers:")[0] for line in lines] == [
        "an expectation that fails",
        "an expectation that holds",
        "a reproduction that holds",
        "a consistency check that holds",
    ]
    assert lines[0].startswith("- **fails** (expectation, claim 4)")
    assert "final_loss 1.02 [" in lines[0] and "seeds 0 for, 2 against" in lines[0]


# --------------------------------------------------------------------------- a study of one's own

# Every claim form, on tiny runs (tests/fixtures/own_study.yaml, copied out of the repository).
OWN_STUDY = (Path(__file__).parent / "fixtures" / "own_study.yaml").read_text()


def _sweep_own(study_file: Path, sweep: Path, *extra: str):
    """`rnn-lab study PATH`, the way a user runs a study file kept outside the repository."""
    args = ["study", str(study_file), "launcher=basic", f"hydra.sweep.dir={sweep}", *extra]
    return run_cli(args, cwd=study_file.parent, module="rnn_lab.app.cli")


def test_a_study_of_ones_own_every_form_and_its_preregistration(tmp_path):
    own = tmp_path / "studies"
    own.mkdir()
    study_file = own / "own.yaml"
    study_file.write_text(OWN_STUDY.replace("VALUE", "10"))
    sweep = tmp_path / "sweep"
    proc = _sweep_own(study_file, sweep)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pd.read_csv(sweep / CLAIMS_TABLE)
    assert list(table["kind"]) == ["expectation", "consistency"] + ["reproduction"] * 6
    verdicts = dict(zip(table["claim"], table["verdict"]))
    assert verdicts[1] == "fails" and verdicts[2] == "holds" and verdicts[3] == "holds"
    assert verdicts[4] == "holds" and verdicts[8] == "holds"
    assert verdicts[6] == "fails" and table.loc[5, "seeds_failed"] == 3  # every run diverged
    assert verdicts[7] == "inconclusive" and table.loc[6, "runs_excluded"] == 3
    assert "no ok runs, 3 runs excluded (3 diverged)" in table.loc[6, "reason"]
    assert table.loc[4, "numbers"].count("within ±0.5 x |target| = ") == 1
    assert table["declared_before_results"].all()
    report = (sweep / "report.md").read_text()
    assert report.split("\n## ", 2)[1].startswith("Answer")
    assert "Every claim in force and every seed was declared before any result." in report
    first = yaml.safe_load(study_file.read_text())["study"]["claims"]
    assert read_declarations(sweep)[0]["claims"] == first

    # The expectation's number changed after the results, and a fourth seed added.
    study_file.write_text(OWN_STUDY.replace("VALUE", "1"))
    proc = _sweep_own(study_file, sweep, "seed=1,2,3,4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "declaration changed after 12 runs had ended" in proc.stdout + proc.stderr
    table = pd.read_csv(sweep / CLAIMS_TABLE)
    assert list(table["declared_before_results"]) == [False] + [True] * 7
    answer = answer_block((sweep / "report.md").read_text())
    late = [line for line in answer.splitlines() if "(declared after the results)" in line]
    assert len(late) == 1 and "The untrained orthogonal arm's loss is above 10" in late[0]
    assert "Seeds added after the results: 4" in answer

    # A claim that cannot be checked stops the study before any run, naming it.
    study_file.write_text(OWN_STUDY.replace("VALUE", "1").replace("margin: 1.0", "margin: -1"))
    proc = _sweep_own(study_file, sweep, "seed=1,2,3,4,5")
    assert proc.returncode == 2
    assert "study.claims[4]" in proc.stderr and "margin -1 must be a positive number" in proc.stderr
    assert not (sweep / "init=orthogonal,diverge_factor=0.0" / "seed=5").exists()
    assert len(read_declarations(sweep)) == 2
