"""The report end to end on a fabricated sweep with every kind of trouble planted in it."""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).parent))
from fakeruns import (  # noqa: E402
    bare_history,
    fake_config,
    fake_summary,
    make_fake_run,
    make_fake_sweep,
)

from rnn_lab.app.callbacks import ReportCallback  # noqa: E402
from rnn_lab.run.rundir import (  # noqa: E402
    SWEEP_INTERRUPTED_FILE,
    atomic_write_json,
    record_conflict,
    sweep_state_dir,
)
from rnn_lab.study.report import build_report, main_report, sweep_dir_override  # noqa: E402

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
    a corrupted directory, a job refused for a folder conflict and a cell that never ran;
    the report is built once."""
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
    record_conflict(root, paths[0], "this folder holds another run (steps: 200 -> 300)")
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


def test_every_way_of_not_finishing_is_counted_per_arm(sweep):
    root, report = sweep
    table = pd.read_csv(root / "summary_table.csv")
    loss = table[table["metric"] == "final_loss"].set_index("arm")
    assert loss.loc["init=xavier, activation=tanh", "n_failed"] == 1
    assert loss.loc["init=xavier, activation=tanh", "n_ok"] == 2
    assert loss.loc["init=random, activation=relu", "n_diverged"] == 1
    assert loss.loc["init=random, activation=relu", "n_runs"] == 2
    assert loss.loc["init=orthogonal, activation=relu", "n_incomplete"] == 1
    ortho_tanh = loss.loc["init=orthogonal, activation=tanh"]
    assert (ortho_tanh["n_runs"], ortho_tanh["n_ok"]) == (4, 2)
    assert (ortho_tanh["n_damaged"], ortho_tanh["n_conflict"]) == (1, 1)
    not_ok = ["n_failed", "n_diverged", "n_incomplete", "n_damaged", "n_conflict"]
    assert loss[not_ok].to_numpy().sum() == 5
    results = pd.read_csv(root / "results.csv")
    ok = results[(results["arm"] == "init=xavier, activation=relu") & (results["status"] == "ok")]
    assert loss.loc["init=xavier, activation=relu", "mean"] == pytest.approx(
        ok["final_loss"].mean()
    )

    text = report.read_text()
    counts = "13 ok, 1 diverged, 1 failed, 1 incomplete, 1 damaged, 1 conflict"
    assert f"18 runs ({counts})" in text.split("## Grid")[0]
    results = text.split("## Results")[1].split("## Comparisons")[0]
    assert "| arm | ok / runs | failed | diverged | incomplete | damaged | conflict |" in results
    assert "| init=orthogonal, activation=tanh | 2 / 4 | 0 | 0 | 0 | 1 | 1 |" in results
    problems = text.split("## Runs that did not finish ok")[1].split("## Grid ledger")[0]
    assert "5 of 18 runs (1 diverged, 1 failed, 1 incomplete, 1 damaged, 1 conflict)" in problems
    assert "TrainError: seq_len=0 must be positive" in problems
    assert "loss is nan at step 57" in problems
    assert "| `7` | init=xavier, activation=tanh | 2 | failed |" in problems
    # the corrupted directory is a damaged run of its cell, with the file and the reason
    assert "| `1` | init=orthogonal, activation=tanh | 2 | damaged | ? |" in problems
    assert "summary.json is unparseable" in problems
    assert (
        "| `0` | init=orthogonal, activation=tanh | 1 | conflict | ? | "
        "this folder holds another run (steps: 200 -> 300) |"
    ) in problems


def test_grid_ledger_lists_missing_and_unreadable_cells(sweep):
    text = sweep[1].read_text()
    ledger = text.split("## Grid ledger")[1].split("## Reproduce")[0]
    assert "2 of 18 declared cells" in ledger
    assert "| init=random, activation=relu | 3 |" in ledger
    assert "| init=orthogonal, activation=tanh | 2 |" in ledger  # its run is damaged


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


def test_reproduce_command_reruns_into_the_same_folder(sweep):
    root, report = sweep
    reproduce = report.read_text().split("## Reproduce")[1]
    assert f"rnn-lab study init_by_activation hydra.sweep.dir={root}\n" in reproduce
    assert (
        "python -m rnn_lab.train -m study=init_by_activation "
        "init=orthogonal,xavier,random activation=tanh,relu seed=1,2,3 "
        f"hydra.sweep.dir={root}\n"
    ) in reproduce
    assert f"rnn-lab report {root}\n" in reproduce


@pytest.mark.parametrize(
    "folder", ["multirun/demo", "multirun/seq_len-steps=2000", "multirun/clip-clip=1,steps=5 x"]
)
def test_sweep_dir_override_reads_back_as_the_folder(folder):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    word = sweep_dir_override(folder)
    (shell_word,) = shlex.split(word)  # one word for the shell
    override = OverridesParser.create().parse_override(shell_word)
    assert override.key_or_group == "hydra.sweep.dir" and override.value() == folder


def test_missing_data_skips_plots_and_says_why(tmp_path):
    # record=false runs (no diagnostics.npz) with nothing to plot in history.csv; one axis only
    for seed in (1, 2):
        for i, init in enumerate(("orthogonal", "xavier")):
            make_fake_run(
                tmp_path / f"{init}_{seed}",
                fake_config(init=init, seed=seed, record=False),
                [f"init={init}", f"seed={seed}"],
                fake_summary(final_loss=1.0 + i + 0.1 * seed),
                history=bare_history(200),
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
        fake_config(seed=1, record=False),
        ["seed=1"],
        fake_summary(),
        history=bare_history(200),
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


# --------------------------------------------------------------------------- partial sweeps


def small_sweep(root: Path, cells: list[dict]) -> list[Path]:
    """A quick sweep to build reports on: record=false, a bare history (nothing to plot)."""
    paths = []
    for num, cell in enumerate(cells):
        config = fake_config(record=False, **{k: cell[k] for k in ("init", "seed")})
        summary = None if cell["status"] == "no_summary" else fake_summary(**cell_summary(cell))
        done = summary["steps_done"] if summary else 0
        paths.append(
            make_fake_run(
                root / str(num),
                config,
                [f"init={cell['init']}", f"seed={cell['seed']}"],
                summary,
                history=bare_history(done) if done else False,
                sweeper_params={"init": "orthogonal,xavier", "seed": "1,2,3"},
                num=num,
                sweep_dir=str(root),
            )
        )
    return paths


def cell_summary(cell: dict) -> dict:
    fields = {k: v for k, v in cell.items() if k not in ("init", "seed")}
    if fields["status"] != "ok":
        fields.setdefault("final_loss", None)
    return fields


def test_interrupted_sweep_gets_a_partial_report_saying_how_to_finish(tmp_path):
    small_sweep(
        tmp_path,
        [
            {"init": "orthogonal", "seed": 1, "status": "ok", "final_loss": 1.0},
            {"init": "orthogonal", "seed": 2, "status": "ok", "final_loss": 1.1},
            {"init": "xavier", "seed": 1, "status": "ok", "final_loss": 1.3},
            {"init": "xavier", "seed": 2, "status": "interrupted", "error": "stopped by SIGINT"},
            {"init": "xavier", "seed": 3, "status": "running"},
        ],
    )
    sweep_state_dir(tmp_path).mkdir()
    atomic_write_json(
        sweep_state_dir(tmp_path) / SWEEP_INTERRUPTED_FILE,
        {"signal": 2, "time": 1700000000.0, "pid": 4242},
    )
    text = build_report(tmp_path).read_text()
    top = text.split("## Grid")[0]
    banner = top.split("\n> **Partial report.**")[1]
    assert top.index("Partial report") < top.index("Sweep directory")  # said first
    assert "interrupted by signal 2 (SIGINT)" in banner
    assert "3 of 5 runs ended ok or diverged (3 ok, 1 interrupted, 1 incomplete)" in banner
    assert "1 of the 6 declared cells (arm × seed) have no usable run yet" in banner
    assert "Re-run the same command to finish it" in banner
    assert (
        f"`python -m rnn_lab.train -m init=orthogonal,xavier seed=1,2,3 hydra.sweep.dir={tmp_path}`"
        in banner
    )

    (sweep_state_dir(tmp_path) / SWEEP_INTERRUPTED_FILE).unlink()
    assert "Partial report" not in build_report(tmp_path).read_text()


def report_statuses(text: str) -> dict[str, str]:
    """{path: status} from the rows of the report's table of runs that did not finish ok."""
    section = text.split("## Runs that did not finish ok")[1].split("\n## ")[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    return {cells[1].strip(" `"): cells[4].strip() for cells in (r.split("|") for r in rows)}


def test_sweep_failures_are_read_from_results_csv_not_from_words_of_the_report(tmp_path):
    cells = [
        {"init": "orthogonal", "seed": 1, "status": "ok", "final_loss": 1.0},
        {"init": "orthogonal", "seed": 2, "status": "failed", "error": "ValueError: seq_len=0"},
        {"init": "xavier", "seed": 1, "status": "diverged", "error": "loss became nan"},
        {"init": "xavier", "seed": 2, "status": "ok", "final_loss": 1.2},
        {"init": "xavier", "seed": 3, "status": "no_summary"},
    ]
    small_sweep(tmp_path, cells)
    text = build_report(tmp_path).read_text()
    results = pd.read_csv(tmp_path / "results.csv", dtype={"path": str})
    # every job's status, as written to results.csv
    assert dict(zip(results["path"], results["status"])) == {
        "0": "ok",
        "1": "failed",
        "2": "diverged",
        "3": "ok",
        "4": "incomplete",
    }
    # the report lists exactly the jobs results.csv says did not finish ok, with their status
    not_ok = results[results["status"] != "ok"]
    assert report_statuses(text) == dict(zip(not_ok["path"], not_ok["status"]))

    # Why a test must read statuses and not grep words: a sweep where every job is ok still
    # has "failed" and "diverged" in its report (the results table's columns).
    ok_only = tmp_path / "ok_only"
    small_sweep(ok_only, [{"init": "orthogonal", "seed": 1, "status": "ok", "final_loss": 1.0}])
    text = build_report(ok_only).read_text()
    assert "failed" in text and "diverged" in text
    assert set(pd.read_csv(ok_only / "results.csv")["status"]) == {"ok"}
    assert "None: every collected run finished with status ok." in text


# --------------------------------------------------------------------------- figures at a glance


def _captured_figure(monkeypatch):
    """Make the figures module hand back the Figure it would save (the axes can be read)."""
    import rnn_lab.study.figures as figures

    captured = {}

    def keep(fig, out):
        captured["fig"] = fig
        return Path(out)

    monkeypatch.setattr(figures, "save_figure", keep)
    return captured


def test_one_early_spike_does_not_flatten_the_loss_axis():
    from rnn_lab.inspect.figure_io import new_figure
    from rnn_lab.study.figures import _clipped_label, _robust_ylim

    steps = np.arange(10, 1510, 10)
    means = 3.2 * np.exp(-steps / 600) + 1.0  # 4.1 at the start, down to 1.26
    spiked = means.copy()
    spiked[1] = 51.0  # one seed's spike at step 20 pulls its arm's mean up
    ax = new_figure(4, 3).subplots()
    top = _robust_ylim(ax, steps, spiked, firsts=[means[0]], floor=0.0)
    low, high = ax.get_ylim()
    assert top == high and high < 5  # not 51
    assert low <= means.min() and high >= means[0]  # every later mean and the start in view
    assert "clipped at" in _clipped_label("loss (nats/char)", top)
    # without a spike nothing is clipped and the label says nothing more
    ax = new_figure(4, 3).subplots()
    assert _robust_ylim(ax, steps, means, firsts=[means[0]], floor=0.0) is None
    assert _clipped_label("loss (nats/char)", None) == "loss (nats/char)"


def test_spectral_radius_of_few_seeds_draws_each_seed_not_a_band(sweep, monkeypatch):
    from rnn_lab.study.collect import collect
    from rnn_lab.study.figures import arm_colors, plot_spectral_radius

    root, _ = sweep
    df = collect(root, write=False)
    captured = _captured_figure(monkeypatch)
    plot_spectral_radius(df, root / "x.png", arm_colors(list(pd.unique(df["arm"]))))
    ax = captured["fig"].axes[0]
    ok = df[df["status"] == "ok"]
    thin = [ln for ln in ax.lines if ln.get_linewidth() < 1]
    bold = [ln for ln in ax.lines if ln.get_linewidth() >= 2]
    assert len(thin) == len(ok)  # one line per ok seed
    assert len(bold) == ok["arm"].nunique()  # one mean per arm
    assert not ax.collections  # no bands
    assert "thin lines: each seed" in ax.get_title()


def test_gradient_profiles_of_different_seq_len_are_normalised_and_aligned_by_lag(
    tmp_path, monkeypatch
):
    from rnn_lab.study.collect import collect
    from rnn_lab.study.curves import load_diagnostic_profile
    from rnn_lab.study.figures import arm_colors, grad_profile_by_lag, plot_grad_profile

    cells = [
        {"seq_len": seq_len, "activation": act, "seed": seed, "final_loss": 1.2}
        for seq_len, act in ((10, "tanh"), (30, "relu"))
        for seed in (1, 2)
    ]
    make_fake_sweep(
        tmp_path,
        cells,
        sweeper_params={"seq_len": "10,30", "seed": "1,2"},
        override_keys=("seq_len", "seed"),
    )
    df = collect(tmp_path, write=False)
    by_lag = grad_profile_by_lag(load_diagnostic_profile(df))
    # fakeruns: the profile is decay ** (T - t) x 3 at the last record (0.8 tanh, 0.95 relu)
    arms = list(pd.unique(df["arm"]))
    assert arms == ["seq_len=10, activation=tanh", "seq_len=30, activation=relu"]
    for arm, decay, T in zip(arms, (0.8, 0.95), (10, 30)):
        runs = by_lag[by_lag["arm"] == arm]
        assert sorted(set(runs["lag"])) == list(range(T))  # lag 0 = the chunk's last step
        np.testing.assert_allclose(runs["ratio"], decay ** runs["lag"].to_numpy(float))
    captured = _captured_figure(monkeypatch)
    plot_grad_profile(df, tmp_path / "g.png", arm_colors(arms))
    ax = captured["fig"].axes[0]
    assert ax.get_xlabel().startswith("lag k")
    labels = [ln.get_label() for ln in ax.lines if not ln.get_label().startswith("_")]
    assert labels == [f"{arms[0]} (n=2; ×0.8 per step)", f"{arms[1]} (n=2; ×0.95 per step)"]
    mean_lines = [ln for ln in ax.lines if not ln.get_label().startswith("_")]
    for line in mean_lines:
        assert line.get_ydata()[0] == pytest.approx(1.0)  # normalised at the last position
