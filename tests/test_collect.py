"""The collector on fabricated run directories: rows, columns, statuses, damage, files."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

# tests/ is not a package (conftest.py belongs to the trainer's tests); make fakeruns importable
# however pytest was started.
sys.path.insert(0, str(Path(__file__).parent))
from fakeruns import (  # noqa: E402
    fake_config,
    fake_summary,
    make_fake_run,
    make_fake_sweep,
    write_multirun_yaml,
)

from rnn_lab.study.collect import (  # noqa: E402
    canonical,
    collect,
    declared_grid,
    find_run_dirs,
    load_curves,
    load_diagnostic_profile,
    main_collect,
    parse_sweep_override,
    read_multirun_yaml,
)

GRID = {"init": "orthogonal,xavier", "activation": "tanh,relu", "seed": "range(1,3)"}


def two_by_two(sweep: Path) -> list[Path]:
    cells = []
    for init, base in (("orthogonal", 1.0), ("xavier", 1.2)):
        for act, shift in (("tanh", 0.0), ("relu", 0.1)):
            for seed in (1, 2):
                cells.append(
                    {
                        "init": init,
                        "activation": act,
                        "seed": seed,
                        "final_loss": base + shift + 0.01 * seed,
                    }
                )
    return make_fake_sweep(sweep, cells, sweeper_params=GRID, task_overrides=[])


def test_collect_one_row_per_run_with_varying_keys_and_arm(tmp_path):
    two_by_two(tmp_path)
    df = collect(tmp_path)
    assert len(df) == 8
    assert list(df.columns[:7]) == [
        "path",
        "arm",
        "init",
        "activation",
        "seed",
        "status",
        "steps_done",
    ]
    assert df.attrs["arm_keys"] == ["init", "activation"]
    # init.name/init.scale vary, but only because the init group does: columns, not in the label
    assert {"init.name", "activation.name"} <= set(df.columns)
    assert list(pd.unique(df["arm"])) == [
        "init=orthogonal, activation=tanh",
        "init=orthogonal, activation=relu",
        "init=xavier, activation=tanh",
        "init=xavier, activation=relu",
    ]
    row = df[(df["arm"] == "init=xavier, activation=relu") & (df["seed"] == 2)].iloc[0]
    assert row["final_loss"] == pytest.approx(1.32)
    assert row["status"] == "ok" and row["steps_done"] == 200
    assert row["path"] == "7" and row["sample"] == "the boy sees the cat"
    # constant settings are not columns but are kept for the report
    assert "hidden_size" not in df.columns and df.attrs["constant_config"]["hidden_size"] == 16
    assert df.attrs["grid"] == {
        "init": ["orthogonal", "xavier"],
        "activation": ["tanh", "relu"],
        "seed": ["1", "2"],
    }


def test_config_key_axis_and_varying_nested_key(tmp_path):
    for i, (seq_len, momentum) in enumerate([(10, 0.9), (50, 0.9), (10, 0.5)]):
        cfg = fake_config(seq_len=seq_len, seed=1)
        cfg["optim"]["momentum"] = momentum
        make_fake_run(
            tmp_path / str(i),
            cfg,
            [f"seq_len={seq_len}", f"optim.momentum={momentum}"],
            fake_summary(),
        )
    df = collect(tmp_path, write=False)
    assert df.attrs["arm_keys"] == ["seq_len", "optim.momentum"]
    assert list(df["arm"]) == [
        "seq_len=10, optim.momentum=0.5",
        "seq_len=10, optim.momentum=0.9",
        "seq_len=50, optim.momentum=0.9",
    ]


def test_incomplete_runs(tmp_path):
    make_fake_run(tmp_path / "0", fake_config(seed=1), ["seed=1"], fake_summary())
    make_fake_run(tmp_path / "1", fake_config(seed=2), ["seed=2"], None)  # no summary.json
    make_fake_run(tmp_path / "2", fake_config(seed=3), ["seed=3"], fake_summary(status="running"))
    make_fake_run(
        tmp_path / "3", fake_config(seed=4), ["seed=4"], fake_summary(status="interrupted")
    )
    df = collect(tmp_path, write=False)
    assert list(df["status"]) == ["ok", "incomplete", "incomplete", "interrupted"]
    assert list(df["arm"].unique()) == ["all runs"]
    assert df.attrs["warnings"] == []


def test_damaged_dirs_are_skipped_with_a_message(tmp_path, caplog):
    two_by_two(tmp_path)
    (tmp_path / "3" / "summary.json").write_text('{"status": "ok", "final_lo')  # half-written
    config = (tmp_path / "5" / ".hydra" / "config.yaml").read_text()
    (tmp_path / "5" / ".hydra" / "config.yaml").write_text(config[:40] + "\n  name: [orth")
    (tmp_path / "6" / ".hydra" / "config.yaml").unlink()
    (tmp_path / "stray" / ".hydra").mkdir(parents=True)  # Hydra started, nothing written
    with caplog.at_level(logging.WARNING, logger="rnn_lab.study.collect"):
        df = collect(tmp_path)
    assert len(df) == 5  # 8 runs, 3 damaged; the stray dir has no config either
    assert set(df["path"]) == {"0", "1", "2", "4", "7"}
    reasons = {w["path"]: w["reason"] for w in df.attrs["warnings"]}
    assert set(reasons) == {"3", "5", "6", "stray"}
    assert reasons["3"].startswith("unparseable summary.json")
    assert "init=orthogonal activation=relu seed=2" in reasons["3"]  # which cell it was
    assert reasons["5"].startswith("unparseable .hydra/config.yaml")
    assert reasons["6"].startswith("missing .hydra/config.yaml")
    assert "skipping" in caplog.text and str(tmp_path / "3") in caplog.text
    assert (tmp_path / "results.csv").exists()


def test_results_files_written_atomically_and_round_trip(tmp_path):
    two_by_two(tmp_path)
    df = collect(tmp_path)
    back = pd.read_csv(tmp_path / "results.csv")
    assert list(back.columns) == list(df.columns)
    np.testing.assert_allclose(back["final_loss"], df["final_loss"])
    parquet = pd.read_parquet(tmp_path / "results.parquet")
    assert list(parquet["arm"]) == list(df["arm"])
    assert not list(tmp_path.glob(".*.tmp")), "temporary files left behind"


def test_empty_and_single_run_dirs(tmp_path):
    df = collect(tmp_path)
    assert df.empty and df.attrs["warnings"] == []
    run = make_fake_run(tmp_path / "single", fake_config(), [], fake_summary(final_loss=1.5))
    df = collect(run, write=False)  # a run dir given directly is its own sweep
    assert len(df) == 1 and df["path"].iloc[0] == "." and df["final_loss"].iloc[0] == 1.5


def test_analysis_json_fills_missing_metrics(tmp_path):
    run = make_fake_run(tmp_path / "0", fake_config(), [], fake_summary(vocab_hit_rate=0.8))
    (run / "analysis.json").write_text('{"vocab_hit_rate": 0.1, "category_separation": 0.7}')
    df = collect(tmp_path, write=False)
    assert df["vocab_hit_rate"].iloc[0] == 0.8  # summary.json wins (analysis already merged)
    assert df["category_separation"].iloc[0] == 0.7


def test_find_run_dirs_natural_order(tmp_path):
    for name in ("10", "2", "1"):
        make_fake_run(tmp_path / name, fake_config(), [], fake_summary())
    (tmp_path / "plots").mkdir()
    assert [p.name for p in find_run_dirs(tmp_path)] == ["1", "2", "10"]


def test_load_curves_and_diagnostic_profile(tmp_path):
    two_by_two(tmp_path)
    df = collect(tmp_path, write=False)
    loss = load_curves(df, "loss")
    assert set(loss.columns) == {"arm", "seed", "path", "step", "loss"}
    assert len(loss) == 8 * 20 and np.isfinite(loss["loss"]).all()
    val = load_curves(df, "val_loss")  # sparse: rows 5, 10, 15, 20 of 20
    assert len(val) == 8 * 4 and sorted(val["step"].unique()) == [50, 100, 150, 200]
    last = loss[loss["path"] == "7"].sort_values("step").iloc[-1]
    assert last["step"] == 200 and last["loss"] == pytest.approx(
        1.32 + (np.log(27) - 1.32) * np.exp(-5)
    )
    assert load_curves(df, "no_such_column").empty

    profile = load_diagnostic_profile(df, "last_loss_grad_norm")
    run7 = profile[profile["path"] == "7"].sort_values("position")
    T = 25
    expected = 3 * 0.95 ** (T - np.arange(1, T + 1))  # relu decay, last of 3 records (x3)
    np.testing.assert_allclose(run7["last_loss_grad_norm"], expected)
    assert run7["record_step"].iloc[0] == 200


def test_load_diagnostic_profile_skips_runs_without_npz(tmp_path):
    make_fake_run(tmp_path / "0", fake_config(), [], fake_summary(), diagnostics=False)
    df = collect(tmp_path, write=False)
    profile = load_diagnostic_profile(df)
    assert profile.empty and "no diagnostics.npz" in profile.attrs["skipped"][0]["reason"]


def test_parse_sweep_override():
    assert parse_sweep_override("seed=range(1,4)") == ("seed", ["1", "2", "3"])
    assert parse_sweep_override("init=orthogonal,xavier") == ("init", ["orthogonal", "xavier"])
    assert parse_sweep_override("lr=choice(0.1,0.01)") == ("lr", ["0.1", "0.01"])
    assert parse_sweep_override("+extra=1,2") == ("extra", ["1", "2"])
    assert parse_sweep_override("steps=100") == ("steps", ["100"])
    assert parse_sweep_override("~bar") is None
    assert parse_sweep_override("hydra.sweep.dir=x") is None


def test_declared_grid_command_line_wins_over_sweeper_params(tmp_path):
    two_by_two(tmp_path)
    write_multirun_yaml(
        tmp_path, ["activation=tanh,relu,sigmoid", "steps=200"], sweeper_params=GRID
    )
    grid = declared_grid(read_multirun_yaml(tmp_path))
    assert grid["activation"] == ["tanh", "relu", "sigmoid"]
    assert grid["init"] == ["orthogonal", "xavier"] and grid["steps"] == ["200"]
    df = collect(tmp_path, write=False)
    assert df.attrs["grid"]["activation"] == ["tanh", "relu", "sigmoid"]


def test_canonical():
    assert canonical(1) == canonical(1.0) == canonical("1.0") == canonical("1")
    assert canonical(True) == canonical("true") == canonical("True")
    assert canonical(None) == canonical("null")
    assert canonical("xavier") == "xavier"


def test_main_collect(tmp_path, capsys):
    two_by_two(tmp_path)
    assert main_collect([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "collected 8 runs (8 ok)" in out and "results.csv" in out
    assert main_collect([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such directory" in err


def test_nested_run_dirs_like_the_real_sweep_subdir(tmp_path):
    # conf/config.yaml: hydra.sweep.subdir = ${hydra.job.override_dirname}/seed=${seed}
    for init in ("orthogonal", "xavier"):
        for seed in (1, 2):
            make_fake_run(
                tmp_path / f"activation=tanh,init={init}" / f"seed={seed}",
                fake_config(init=init, seed=seed),
                [f"init={init}", f"seed={seed}"],
                fake_summary(),
            )
    df = collect(tmp_path, write=False)
    assert list(df["path"]) == [
        "activation=tanh,init=orthogonal/seed=1",
        "activation=tanh,init=orthogonal/seed=2",
        "activation=tanh,init=xavier/seed=1",
        "activation=tanh,init=xavier/seed=2",
    ]
    assert list(df["arm"].unique()) == ["init=orthogonal", "init=xavier"]
    assert df.attrs["grid"] == {"init": ["orthogonal", "xavier"], "seed": ["1", "2"]}
