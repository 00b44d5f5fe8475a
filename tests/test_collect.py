"""The collector on fabricated run directories: rows, columns, statuses, damage, files."""

from __future__ import annotations

import ast
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

# tests/ is not a package (conftest.py belongs to the trainer's tests); make fakeruns importable
# however pytest was started.
sys.path.insert(0, str(Path(__file__).parent))
from fakeruns import (  # noqa: E402
    RUN_ID,
    fake_config,
    fake_summary,
    make_fake_run,
    make_fake_sweep,
    write_multirun_yaml,
)

from rnn_lab.run.rundir import (  # noqa: E402
    SWEEP_INTERRUPTED_FILE,
    record_conflict,
    sweep_state_dir,
)
from rnn_lab.study.collect import collect, main_collect, status_counts  # noqa: E402
from rnn_lab.study.curves import load_curves, load_diagnostic_profile  # noqa: E402
from rnn_lab.study.grid import canonical, declared_grid, parse_sweep_override  # noqa: E402
from rnn_lab.study.run_records import find_run_dirs, read_multirun_yaml  # noqa: E402

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
    # every table names the cell; runs whose config has no `cell` (written before gated cells
    # existed) are the vanilla rnn
    assert df.columns[7] == "cell" and set(df["cell"]) == {"rnn"}
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


def test_dirs_with_unreadable_config_are_skipped_with_a_message(tmp_path, caplog):
    two_by_two(tmp_path)
    config = (tmp_path / "5" / ".hydra" / "config.yaml").read_text()
    (tmp_path / "5" / ".hydra" / "config.yaml").write_text(config[:40] + "\n  name: [orth")
    (tmp_path / "6" / ".hydra" / "config.yaml").unlink()
    (tmp_path / "stray" / ".hydra").mkdir(parents=True)  # Hydra started, nothing written
    with caplog.at_level(logging.WARNING, logger="rnn_lab.study.run_records"):
        df = collect(tmp_path)
    assert len(df) == 6  # 8 runs, 2 without a readable config; the stray dir has none either
    assert set(df["path"]) == {"0", "1", "2", "3", "4", "7"}
    reasons = {w["path"]: w["reason"] for w in df.attrs["warnings"]}
    assert set(reasons) == {"5", "6", "stray"}
    assert reasons["5"].startswith("unparseable .hydra/config.yaml")
    assert "init=xavier activation=tanh seed=2" in reasons["5"]  # which cell it was
    assert reasons["6"].startswith("missing .hydra/config.yaml")
    assert "skipping" in caplog.text and str(tmp_path / "5") in caplog.text
    assert (tmp_path / "results.csv").exists()


def cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_damaged_runs_are_rows_with_the_reason_and_never_stop_collect(tmp_path):
    two_by_two(tmp_path)
    cut_in_half(tmp_path / "1" / "checkpoint.npz")
    (tmp_path / "2" / "diagnostics.npz").write_bytes(b"PK\x03\x04 garbage, not a zip" * 20)
    history = (tmp_path / "4" / "history.csv").read_text().splitlines(keepends=True)
    (tmp_path / "4" / "history.csv").write_text("".join(history[:5]))
    (tmp_path / "7" / "summary.json").write_text("")
    df = collect(tmp_path)
    status = dict(zip(df["path"], df["status"]))
    error = dict(zip(df["path"], df["error"]))
    assert status == {
        "0": "ok",
        "1": "damaged",
        "2": "damaged",
        "3": "ok",
        "4": "damaged",
        "5": "ok",
        "6": "ok",
        "7": "damaged",
    }
    assert error["1"].startswith("checkpoint.npz is unreadable")
    assert error["1"].endswith("(its summary says ok)")
    assert error["2"].startswith("diagnostics.npz is unreadable")
    assert error["4"].startswith("history.csv ends at step 40, summary.json says steps_done 200")
    assert error["7"] == "summary.json is empty"
    assert df.attrs["warnings"] == []
    # the damaged runs keep their grid cell, so the report can say which arm lost a seed
    row7 = df[df["path"] == "7"].iloc[0]
    assert (row7["arm"], row7["seed"]) == ("init=xavier, activation=relu", 2)
    # ... and stay out of the means, counted per arm like failed runs
    from rnn_lab.study.stats import aggregate

    table = aggregate(df, ["final_loss"]).set_index("arm")
    relu = table.loc["init=xavier, activation=relu"]
    assert (relu["n_runs"], relu["n_ok"], relu["n_damaged"]) == (2, 1, 1)
    assert relu["mean"] == pytest.approx(1.31)  # seed 1 alone
    back = pd.read_csv(tmp_path / "results.csv")
    assert list(back["status"]) == list(df["status"])


def test_running_run_stays_incomplete_even_when_damaged(tmp_path):
    run = make_fake_run(tmp_path / "0", fake_config(), [], fake_summary(status="running"))
    np.savez(run / "checkpoint.npz", step=np.array(120))
    cut_in_half(run / "checkpoint.npz")
    df = collect(tmp_path, write=False)
    assert df["status"].iloc[0] == "incomplete"
    assert df["error"].iloc[0].startswith("checkpoint.npz is unreadable")  # why it restarts


def test_unknown_status_is_kept_for_the_statistics_to_count_as_failed(tmp_path):
    make_fake_run(tmp_path / "0", fake_config(), [], fake_summary(status="exploded"))
    df = collect(tmp_path, write=False)
    assert df["status"].iloc[0] == "exploded"
    from rnn_lab.study.stats import aggregate

    assert aggregate(df, ["final_loss"]).iloc[0]["n_failed"] == 1


def test_conflicts_are_rows_in_their_owners_cell(tmp_path):
    two_by_two(tmp_path)
    record_conflict(
        tmp_path, tmp_path / "5", "resume: the folder holds another run (lr: 0.01 -> 0.5)"
    )
    record_conflict(tmp_path, tmp_path / "activation=relu,init=random" / "seed=3", "refused")
    df = collect(tmp_path)
    conflicts = df[df["status"] == "conflict"]
    assert len(conflicts) == 2 and len(df) == 10
    owned = conflicts[conflicts["path"] == "5"].iloc[0]
    assert owned["arm"] == "init=xavier, activation=tanh" and owned["seed"] == 2
    assert owned["error"] == "resume: the folder holds another run (lr: 0.01 -> 0.5)"
    assert pd.isna(owned["steps_done"]) and pd.isna(owned["final_loss"])
    # the owner itself is untouched, and the conflict sits next to it in the table
    assert df[df["path"] == "5"]["status"].tolist() == ["ok", "conflict"]
    orphan = conflicts[conflicts["path"] == "activation=relu,init=random/seed=3"].iloc[0]
    assert (orphan["arm"], orphan["seed"]) == ("init=random, activation=relu", "3")
    assert status_counts(df) == {"ok": 8, "conflict": 2}
    back = pd.read_csv(tmp_path / "results.csv")
    assert (back["status"] == "conflict").sum() == 2


def test_sweep_interrupted_record(tmp_path):
    two_by_two(tmp_path)
    assert collect(tmp_path, write=False).attrs["sweep_interrupted"] is None
    state = sweep_state_dir(tmp_path)
    state.mkdir()
    (state / SWEEP_INTERRUPTED_FILE).write_text(json.dumps({"signal": 15, "time": 1.7e9, "pid": 9}))
    assert collect(tmp_path, write=False).attrs["sweep_interrupted"]["signal"] == 15
    (state / SWEEP_INTERRUPTED_FILE).write_text("{")
    assert collect(tmp_path, write=False).attrs["sweep_interrupted"] == {}


def test_shared_settings_name_group_options_not_nulls(tmp_path):
    two_by_two(tmp_path)
    constant = collect(tmp_path, write=False).attrs["constant_config"]
    assert constant["launcher"] == "joblib"  # config.yaml says null; Hydra chose joblib
    assert "experiment" not in constant  # no experiment chosen: nothing to say
    # the only null left is a real config value (no init file), not an unnamed group
    assert [k for k, v in constant.items() if v is None] == ["init.path"]
    study = {"name": "demo", "question": "q"}
    make_fake_sweep(tmp_path / "study", [{"seed": 1}, {"seed": 2}], study=study)
    constant = collect(tmp_path / "study", write=False).attrs["constant_config"]
    assert constant["experiment"] == "demo"


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


def test_analysis_json_fills_missing_metrics_of_its_own_run_only(tmp_path):
    run = make_fake_run(tmp_path / "0", fake_config(), [], fake_summary(vocab_hit_rate=0.8))
    analysis = {
        "run_id": RUN_ID,
        "steps_done": 200,
        "vocab_hit_rate": 0.1,
        "category_separation": 0.7,
        "details": {"curve": [1, 2, 3]},
    }
    (run / "analysis.json").write_text(json.dumps(analysis))
    df = collect(tmp_path, write=False)
    assert df["vocab_hit_rate"].iloc[0] == 0.8  # summary.json wins (analysis already merged)
    assert df["category_separation"].iloc[0] == 0.7
    assert df["run_id"].iloc[0] == RUN_ID and "details" not in df.columns

    # An analysis.json of another run (or of this run at another step) is never merged.
    for stale in ({"run_id": "fedcba9876543210"}, {"steps_done": 150}, {"run_id": None}):
        (run / "analysis.json").write_text(json.dumps({**analysis, **stale}))
        df = collect(tmp_path, write=False)
        assert "category_separation" not in df.columns, stale
        assert df["status"].iloc[0] == "ok"  # stale, not damaged


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
    make_fake_run(tmp_path / "0", fake_config(record=False), [], fake_summary())
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
    (tmp_path / "3" / "summary.json").write_text("")
    assert main_collect([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "collected 8 runs (7 ok, 1 damaged)" in out
    assert "  damaged 3: summary.json is empty" in out
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


# --------------------------------------------------------------------------- package rules

STUDY_DIR = Path(__file__).resolve().parent.parent / "rnn_lab" / "study"
OWN_FILES = [
    *sorted(STUDY_DIR.glob("*.py")),
    STUDY_DIR.parent / "run" / "integrity.py",
    STUDY_DIR.parent / "inspect" / "figure_io.py",
]


def _code_strings(tree: ast.AST):
    """String constants that are code, not docstrings."""
    docstrings = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            if isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in docstrings:
                yield node


def test_study_names_run_files_only_through_rundir():
    from rnn_lab.run import rundir

    names = [v for k, v in vars(rundir).items() if k.isupper() and isinstance(v, str) and "." in v]
    names += list(rundir.HYDRA_FILES)
    assert "summary.json" in names and ".hydra" in names and "interrupted.json" in names
    found = []
    for path in sorted(STUDY_DIR.glob("*.py")):
        for node in _code_strings(ast.parse(path.read_text())):
            found += [f"{path.name}:{node.lineno} {n}" for n in names if n in node.value]
    assert found == []


def test_study_imports_neither_engine_nor_training_loop_nor_pyplot():
    code = (
        "import sys\n"
        "import rnn_lab.study.report, rnn_lab.study.collect, rnn_lab.study.stats\n"
        "import rnn_lab.study.run_records, rnn_lab.study.grid, rnn_lab.study.curves\n"
        "import rnn_lab.study.figures, rnn_lab.run.integrity\n"
        "banned = ('rnn_lab.core', 'rnn_lab.run.trainer', 'rnn_lab.run.lifecycle',"
        " 'rnn_lab.run.step', 'rnn_lab.run.state', 'rnn_lab.inspect.load',"
        " 'matplotlib.pyplot', 'torch')\n"
        "print(sorted(m for m in sys.modules if m.startswith(banned)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_functions_are_short_with_few_parameters():
    too_big = []
    for path in OWN_FILES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                a = node.args
                n_params = len(a.posonlyargs + a.args + a.kwonlyargs)
                n_params += bool(a.vararg) + bool(a.kwarg)
                n_lines = node.end_lineno - node.lineno + 1
                if n_lines > 100 or n_params > 8:
                    too_big.append(f"{path.name}:{node.name} {n_lines} lines {n_params} params")
    assert too_big == []
