"""`rnn-lab compare` / `rnn_lab.compare`: sweeps of one grid matched arm by arm.

Unit tests build fake sweep folders (tests/fakeruns.py) whose numbers are known, and check the
matching, the arms found in only one folder and every number against scipy; one test runs two
tiny real studies that differ only in `steps` through the command line, as a user would.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_helpers import run_cli
from fakeruns import fake_config, fake_summary, make_fake_run, write_multirun_yaml
from scipy import stats as sps

import rnn_lab
from rnn_lab.study.compare import compare, compare_folders, main_compare
from rnn_lab.study.stats import holm_adjust

STUDY = {
    "name": "init_study",
    "question": "Which init?",
    "baseline": {"init": "orthogonal"},
    "metrics": ["final_loss", "spectral_radius"],
    "axes": ["init"],
}


def fake_sweep(root: Path, steps: int, values: dict, seeds=(1, 2, 3), **summary_extra) -> Path:
    """A sweep over init (seeds as given) at `steps`; values: init -> {seed: final_loss}.

    spectral_radius is 1 + final_loss / 10, so it moves with the loss."""
    inits = list(values)
    params = {"init": ",".join(inits), "seed": ",".join(str(s) for s in seeds)}
    num = 0
    for init, by_seed in values.items():
        for seed, loss in by_seed.items():
            config = fake_config(init=init, seed=seed, steps=steps, study=STUDY)
            overrides = [f"init={init}", f"seed={seed}", f"steps={steps}"]
            status = summary_extra.get("status", {}).get((init, seed), "ok")
            summary = fake_summary(
                status=status,
                final_loss=None if status == "failed" else loss,
                val_loss=None if status == "failed" else loss + 0.05,
                spectral_radius=None if status == "failed" else 1 + loss / 10,
                steps=steps,
            )
            make_fake_run(
                root / f"init={init}" / f"seed={seed}",
                config,
                overrides,
                summary,
                sweeper_params=params,
                num=num,
                sweep_dir=str(root),
            )
            num += 1
    write_multirun_yaml(root, [f"steps={steps}"], params, STUDY)
    return root


A = {
    "orthogonal": {1: 1.10, 2: 1.15, 3: 1.12},
    "xavier": {1: 1.30, 2: 1.28, 3: 1.35},
}
B = {
    "orthogonal": {1: 1.00, 2: 1.02, 3: 1.01},
    "xavier": {1: 1.31, 2: 1.20, 3: 1.29},
    "random": {1: 1.60, 2: 1.70, 3: 1.65},
}


@pytest.fixture
def two_sweeps(tmp_path):
    return fake_sweep(tmp_path / "a", 200, A), fake_sweep(tmp_path / "b", 400, B)


def _row(table, metric, arm, folder) -> pd.Series:
    rows = table[(table["metric"] == metric) & (table["arm"] == arm) & (table["folder"] == folder)]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def test_arms_are_matched_by_their_settings_and_steps_is_the_difference(two_sweeps):
    table = compare(list(two_sweeps))
    a = table.attrs
    assert a["difference"] == {"steps": ["200", "400"]}
    assert a["arm_keys"] == ["init"]  # steps is the folders' difference, not part of the arm
    assert [f["label"] for f in a["folders"]] == ["steps=200", "steps=400"]
    assert a["reference"] == "steps=200"
    assert a["arms"] == ["init=orthogonal", "init=xavier", "init=random"]
    assert a["metrics"] == ["final_loss", "spectral_radius"]  # the study's, by default
    # one row per (metric, arm, folder), the reference folder first within an arm
    assert len(table) == 2 * 3 * 2
    first = table[table["metric"] == "final_loss"]
    assert list(first["folder"])[:2] == ["steps=200", "steps=400"]
    row = _row(table, "final_loss", "init=orthogonal", "steps=200")
    assert row["n"] == 3 and math.isclose(row["mean"], np.mean(list(A["orthogonal"].values())))


def test_numbers_are_scipy_paired_t_and_holm_across_arms(two_sweeps):
    table = compare(list(two_sweeps), metrics=["final_loss"])
    rows = []
    for init in ("orthogonal", "xavier"):
        b = np.array([B[init][s] for s in (1, 2, 3)])
        a = np.array([A[init][s] for s in (1, 2, 3)])
        t, p = sps.ttest_rel(b, a)
        row = _row(table, "final_loss", f"init={init}", "steps=400")
        assert row["test"] == "paired t" and row["n_pairs"] == 3
        assert math.isclose(row["diff"], float(np.mean(b - a)), rel_tol=1e-12)
        assert math.isclose(row["t"], t, rel_tol=1e-9) and math.isclose(row["p"], p, rel_tol=1e-9)
        d = b - a
        half = sps.t.ppf(0.975, 2) * d.std(ddof=1) / math.sqrt(3)
        assert math.isclose(row["diff_ci_low"], d.mean() - half, rel_tol=1e-9)
        assert math.isclose(row["diff_ci_high"], d.mean() + half, rel_tol=1e-9)
        for side, values in (("steps=200", a), ("steps=400", b)):
            cell = _row(table, "final_loss", f"init={init}", side)
            ci = sps.t.interval(0.95, 2, loc=values.mean(), scale=sps.sem(values))
            assert math.isclose(cell["ci_low"], ci[0], rel_tol=1e-9)
            assert math.isclose(cell["ci_high"], ci[1], rel_tol=1e-9)
        rows.append((row, p))
    # Holm over the two arms present in both folders (random has no partner: no test)
    expected = holm_adjust([p for _, p in rows])
    sorted_p = sorted(p for _, p in rows)
    assert math.isclose(max(expected), max(min(1, 2 * sorted_p[0]), sorted_p[1]))
    for (row, _), want in zip(rows, expected):
        assert math.isclose(row["p_holm"], want, rel_tol=1e-12)
        assert row["significant"] == (want < 0.05)
    lone = _row(table, "final_loss", "init=random", "steps=400")
    assert lone["present"] and pd.isna(lone["test"]) and not lone["significant"]


def test_arms_in_only_one_folder_are_listed(two_sweeps, tmp_path):
    result = compare_folders(list(two_sweeps))
    assert result.table.attrs["only_in"] == {"init=random": ["steps=400"]}
    absent = _row(result.table, "final_loss", "init=random", "steps=200")
    assert not absent["present"] and absent["n_runs"] == 0
    assert main_compare([str(d) for d in two_sweeps] + ["--out", str(tmp_path / "out")]) == 0
    out = tmp_path / "out" / "compare.md"
    text = out.read_text()
    assert "## Arms not in every folder" in text and "- init=random: only in steps=400" in text
    assert "| init=random | absent |" in text
    assert "init=random: not compared, no runs in steps=200." in text
    assert (out.parent / "compare.png").stat().st_size > 10_000
    assert pd.read_csv(out.parent / "compare.csv").shape[0] == len(result.table)
    assert "](compare.png)" in text and "](compare.csv)" in text


def test_only_shared_seeds_are_paired(tmp_path):
    a = fake_sweep(tmp_path / "a", 200, {"orthogonal": {1: 1.1, 2: 1.2, 3: 1.15}})
    b = fake_sweep(tmp_path / "b", 300, {"orthogonal": {2: 1.0, 3: 1.1, 4: 0.9}}, seeds=(2, 3, 4))
    row = _row(compare([a, b]), "final_loss", "all runs", "steps=300")
    t, p = sps.ttest_rel([1.0, 1.1], [1.2, 1.15])
    assert row["n_pairs"] == 2 and row["test"] == "paired t"
    assert math.isclose(row["p"], p, rel_tol=1e-9) and math.isclose(row["t"], t, rel_tol=1e-9)
    assert math.isclose(row["diff"], -0.125, rel_tol=1e-9)
    assert row["n_folder"] == 3 and row["n_reference"] == 3


def test_failed_runs_are_counted_not_averaged(tmp_path):
    a = fake_sweep(tmp_path / "a", 200, A)
    b = fake_sweep(tmp_path / "b", 400, A, status={("xavier", 2): "failed"})
    table = compare([a, b], metrics=["final_loss"])
    row = _row(table, "final_loss", "init=xavier", "steps=400")
    assert (row["n_runs"], row["n_ok"], row["n"], row["n_pairs"]) == (3, 2, 2, 2)
    assert math.isclose(row["mean"], (A["xavier"][1] + A["xavier"][3]) / 2)
    same = _row(table, "final_loss", "init=orthogonal", "steps=400")
    assert same["diff"] == 0 and same["p"] == 1.0  # identical on every seed


def test_three_folders_each_against_the_first(tmp_path):
    dirs = [
        fake_sweep(tmp_path / "a", 100, A),
        fake_sweep(tmp_path / "b", 200, B),
        fake_sweep(tmp_path / "c", 300, A),
    ]
    table = compare(dirs, metrics=["final_loss"])
    assert table.attrs["difference"] == {"steps": ["100", "200", "300"]}
    later = table[table["test"].notna()]
    assert set(later["folder"]) == {"steps=200", "steps=300"}
    assert set(later["reference"]) == {"steps=100"}
    assert table.attrs["only_in"] == {"init=random": ["steps=200"]}


def test_same_settings_are_told_apart_by_folder_name(tmp_path):
    a = fake_sweep(tmp_path / "before", 200, A)
    b = fake_sweep(tmp_path / "after", 200, B)
    table = compare([a, b])
    assert table.attrs["difference"] == {}
    assert [f["label"] for f in table.attrs["folders"]] == ["before", "after"]


def test_package_level_compare_and_bad_input(two_sweeps, tmp_path, capsys):
    table = rnn_lab.compare(list(two_sweeps), metrics=["final_loss"])
    pd.testing.assert_frame_equal(table, compare(list(two_sweeps), ["final_loss"]))
    assert main_compare([str(two_sweeps[0])]) == 2
    assert "two or more" in capsys.readouterr().err
    assert main_compare([str(two_sweeps[0]), str(tmp_path / "nope")]) == 2
    assert "no such sweep directory" in capsys.readouterr().err


# --------------------------------------------------------------------------- real studies

# Both studies shrunk as tests/test_studies.py shrinks them; they differ only in steps.
SHRINK = ["hidden_size=8", "data.num_sentences=40", "analyze=false", "seed=1,2"]
GRID = ["init=orthogonal,random"]  # x activation=tanh,relu from the study: 4 arms


def _study(sweep: Path, steps: int):
    return run_cli(
        [
            "study",
            "demo",
            f"steps={steps}",
            *SHRINK,
            *GRID,
            "launcher=basic",
            f"hydra.sweep.dir={sweep}",
        ],
        module="rnn_lab.app.cli",
        timeout=600,
    )


def test_compare_two_real_studies_differing_in_steps(tmp_path):
    sweeps = [tmp_path / "steps30", tmp_path / "steps60"]
    with ThreadPoolExecutor(max_workers=2) as pool:  # one study per core
        procs = list(pool.map(_study, sweeps, [30, 60]))
    for proc in procs:
        assert proc.returncode == 0, proc.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"  # the current folder gets nothing
    elsewhere.mkdir()
    proc = run_cli(
        ["compare", *map(str, sweeps), "--metrics", "val_loss,final_loss"],
        module="rnn_lab.app.cli",
        cwd=elsewhere,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not any(elsewhere.iterdir())
    out = tmp_path / "compare-steps30-vs-steps60" / "compare.md"  # beside the first sweep
    assert f"compare report: {out}" in proc.stdout
    arms = [f"init={i}, activation={a}" for i in ("orthogonal", "random") for a in ("tanh", "relu")]
    text = out.read_text()
    assert "The folders differ in `steps`: 30 vs 60." in text
    for metric in ("val_loss", "final_loss"):
        section = text.split(f"## {metric} (nats/char)", 1)[1].split("\n## ", 1)[0]
        for arm in arms:
            # every arm: both folders' cells, the difference with its CI and its paired test
            line = next(ln for ln in section.splitlines() if ln.startswith(f"| {arm} |"))
            cells = [c.strip() for c in line.strip("|").split("|")]
            assert cells[1].endswith("(n=2)") and cells[2].endswith("(n=2)"), line
            assert "[" in cells[3] and cells[4] == "paired t, 2 shared seeds", line
            assert cells[5] and cells[6], line
            assert f"{arm}: " in section
        for arm in arms:
            assert f"{metric:<16} {arm}: steps=60 − steps=30 = " in proc.stdout
    table = rnn_lab.compare(sweeps, metrics=["final_loss"])
    tested = table[table["folder"] == "steps=60"]
    assert len(tested) == 4 and (tested["test"] == "paired t").all()
    assert tested["p_holm"].notna().all()
    # twice the steps trains further on every arm and seed pair
    assert (tested["diff"] < 0).all()
    assert "Every arm is in every folder." in text
