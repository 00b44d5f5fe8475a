"""The report end to end on a fabricated sweep with every kind of trouble planted in it."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).parent))
from fakeruns import fake_config, fake_summary, make_fake_run, make_fake_sweep  # noqa: E402

from rnn_lab.app.callbacks import ReportCallback  # noqa: E402
from rnn_lab.study.report import build_report, main_report  # noqa: E402

PLOTS = [
    "loss_curves.png",
    "final_metrics.png",
    "heatmap.png",
    "grad_norm_profile.png",
    "spectral_radius.png",
]
STUDY = {
    "name": "init_by_activation",
    "question": "Does the W_hh initialisation matter under each activation?",
    "expect": "orthogonal trains fastest; random (N(0, 0.01)) lags",
    "baseline": {"init": "orthogonal"},
    "metrics": ["final_loss", "val_loss", "spectral_radius", "vocab_hit_rate"],
    "axes": ["init", "activation"],
}
SWEEPER_PARAMS = {"init": "orthogonal,xavier,random", "activation": "tanh,relu", "seed": "1,2,3"}
MEANS = {"orthogonal": 1.10, "xavier": 1.30, "random": 1.60}
RADIUS = {"orthogonal": 1.10, "xavier": 1.40, "random": 0.60}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """3 inits x 2 activations x 3 seeds, with a failure, a divergence, a cut-off job,
    a corrupted directory and a cell that never ran; the report is built once."""
    root = tmp_path_factory.mktemp("sweep")
    rng = np.random.default_rng(0)
    cells = []
    for init in MEANS:
        for act in ("tanh", "relu"):
            for seed in (1, 2, 3):
                if (init, act, seed) == ("random", "relu", 3):
                    continue  # never ran: must appear in the ledger
                cell = {
                    "init": init,
                    "activation": act,
                    "seed": seed,
                    "final_loss": MEANS[init] + float(rng.normal(0, 0.02)),
                    "spectral_radius": RADIUS[init] + 0.01 * seed,
                }
                if (init, act, seed) == ("xavier", "tanh", 2):
                    cell.update(
                        status="failed",
                        final_loss=None,
                        val_loss=None,
                        spectral_radius=None,
                        error="TrainError: seq_len=0 must be positive",
                    )
                if (init, act, seed) == ("random", "relu", 1):
                    cell.update(
                        status="diverged",
                        final_loss=None,
                        val_loss=None,
                        spectral_radius=None,
                        error="loss is nan at step 57",
                    )
                if (init, act, seed) == ("orthogonal", "relu", 3):
                    cell.update(status="running")
                cells.append(cell)
    paths = make_fake_sweep(
        root, cells, sweeper_params=SWEEPER_PARAMS, task_overrides=[], study=STUDY
    )
    corrupted = paths[1]  # orthogonal, tanh, seed 2
    (corrupted / "summary.json").write_text('{"status": "ok", "final_loss": 1.1')
    report = build_report(root)
    return root, report


def test_report_and_every_plot_are_written(sweep):
    root, report = sweep
    assert report == root / "report.md" and report.exists()
    for name in ["results.csv", "results.parquet", "summary_table.csv", "comparisons.csv"]:
        assert (root / name).exists(), name
    for name in PLOTS:
        data = (root / "plots" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name
    text = report.read_text()
    for name in PLOTS:
        assert f"](plots/{name})" in text
    assert "not drawn" not in text
    assert not list(root.rglob(".*.tmp")), "temporary files left behind"


def test_report_states_the_study(sweep):
    text = sweep[1].read_text()
    assert text.startswith("# Study report: init_by_activation")
    assert STUDY["question"] in text and STUDY["expect"] in text
    assert "| init | orthogonal, xavier, random | orthogonal, xavier, random |" in text
    assert "vocab_hit_rate" in text.split("## Results")[1].split("\n\n")[1]  # said missing


def test_failed_diverged_incomplete_counted_per_arm(sweep):
    root, report = sweep
    table = pd.read_csv(root / "summary_table.csv")
    loss = table[table["metric"] == "final_loss"].set_index("arm")
    assert loss.loc["init=xavier, activation=tanh", "n_failed"] == 1
    assert loss.loc["init=xavier, activation=tanh", "n_ok"] == 2
    assert loss.loc["init=random, activation=relu", "n_diverged"] == 1
    assert loss.loc["init=random, activation=relu", "n_runs"] == 2
    assert loss.loc["init=orthogonal, activation=relu", "n_incomplete"] == 1
    assert loss.loc["init=orthogonal, activation=tanh", "n_runs"] == 2  # one corrupted, skipped
    assert loss[["n_failed", "n_diverged", "n_incomplete"]].to_numpy().sum() == 3
    results = pd.read_csv(root / "results.csv")
    ok = results[(results["arm"] == "init=xavier, activation=relu") & (results["status"] == "ok")]
    assert loss.loc["init=xavier, activation=relu", "mean"] == pytest.approx(
        ok["final_loss"].mean()
    )

    text = report.read_text()
    problems = text.split("## Failed, diverged and incomplete runs")[1].split("## Grid ledger")[0]
    assert "TrainError: seq_len=0 must be positive" in problems
    assert "loss is nan at step 57" in problems
    assert "| `7` | init=xavier, activation=tanh | 2 | failed |" in problems
    assert "diverged" in problems and "incomplete" in problems
    # the corrupted directory is listed with its reason and the cell it belonged to
    assert "| `1` | unparseable summary.json" in problems
    assert "init=orthogonal activation=tanh seed=2" in problems


def test_grid_ledger_lists_missing_and_unreadable_cells(sweep):
    text = sweep[1].read_text()
    ledger = text.split("## Grid ledger")[1].split("## Reproduce")[0]
    assert "2 of 18 declared cells" in ledger
    assert "| init=random, activation=relu | 3 |" in ledger
    assert "| init=orthogonal, activation=tanh | 2 |" in ledger  # its dir is corrupted


def test_comparisons_in_words(sweep):
    root, report = sweep
    text = report.read_text()
    comparisons = text.split("## Comparisons")[1].split("## Plots")[0]
    assert "compared with the baseline init=orthogonal at the same activation" in comparisons
    assert (
        "init=random, activation=tanh is worse than init=orthogonal, activation=tanh on "
        "final_loss by 0."
    ) in comparisons
    # seed 2 of orthogonal/tanh is corrupted, so 2 seeds pair up
    assert "Holm-adjusted, 2 paired seeds" in comparisons
    assert "is lower than init=orthogonal, activation=tanh on spectral_radius" in comparisons
    table = pd.read_csv(root / "comparisons.csv")
    # random/relu has a single ok run (seed 2): nothing to test against
    row = table[
        (table["metric"] == "final_loss") & (table["arm"] == "init=random, activation=relu")
    ].iloc[0]
    assert row["test"] == "none" and "not compared" in comparisons


def test_reproduce_command(sweep):
    text = sweep[1].read_text()
    reproduce = text.split("## Reproduce")[1]
    assert "rnn-lab study init_by_activation" in reproduce
    assert (
        "python -m rnn_lab.train -m init=orthogonal,xavier,random activation=tanh,relu seed=1,2,3"
    ) in reproduce


def test_missing_data_skips_plots_and_says_why(tmp_path):
    # record=false runs: no diagnostics.npz and no history.csv; one axis only
    for seed in (1, 2):
        for i, init in enumerate(("orthogonal", "xavier")):
            make_fake_run(
                tmp_path / f"{init}_{seed}",
                fake_config(init=init, seed=seed),
                [f"init={init}", f"seed={seed}"],
                fake_summary(final_loss=1.0 + i + 0.1 * seed),
                history=False,
                diagnostics=False,
            )
    text = build_report(tmp_path).read_text()
    assert "# Study report: " + tmp_path.name in text
    assert "`loss_curves.png` not drawn: no ok run has a history.csv" in text
    assert "`heatmap.png` not drawn: the grid has 1 axes" in text
    assert "`grad_norm_profile.png` not drawn: no ok run has diagnostics.npz" in text
    assert "`spectral_radius.png` not drawn" in text
    assert (tmp_path / "plots" / "final_metrics.png").exists()
    assert not (tmp_path / "plots" / "loss_curves.png").exists()
    assert "no baseline declared; using the first arm (init=orthogonal)" in text
    # no multirun.yaml: the command is rebuilt from the cells that ran
    assert "python -m rnn_lab.train -m init=orthogonal,xavier seed=1,2" in text


def test_main_report_exit_codes(tmp_path, capsys):
    assert main_report([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such directory" in err
    assert main_report([str(tmp_path)]) == 0  # an empty sweep still gets a report
    assert f"report: {tmp_path / 'report.md'}" in capsys.readouterr().out
    assert "0 runs" in (tmp_path / "report.md").read_text()


def test_callback_builds_report_and_never_raises(tmp_path, caplog):
    # one run without curves or diagnostics: only one plot to draw, so the test stays fast
    make_fake_run(
        tmp_path / "0",
        fake_config(seed=1),
        ["seed=1"],
        fake_summary(),
        history=False,
        diagnostics=False,
    )
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    ReportCallback().on_multirun_end(config=config)
    assert (tmp_path / "report.md").exists()

    with caplog.at_level(logging.ERROR, logger="rnn_lab.app.callbacks"):
        ReportCallback().on_multirun_end(
            config=OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "nope")}}})
        )
        ReportCallback().on_multirun_end(config=OmegaConf.create({}))  # no sweep dir at all
    assert caplog.text.count("could not build the sweep report") == 2
