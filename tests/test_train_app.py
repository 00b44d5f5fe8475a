"""The Hydra train app: every config composes, bad input is refused cleanly, runs write their
files, runs are deterministic, and an interrupted run resumes bit-identically."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_helpers import TINY, run_cli

from rnn_lab import CONF_DIR, EXPERIMENTS_DIR, PROJECT_ROOT
from rnn_lab.app.schema import ConfigError, check_inputs, settings_from_config
from rnn_lab.run.trainer import train

GROUP_OPTIONS = {
    group: sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
    for group in ("init", "activation", "optim", "data", "launcher")
}
REQUIRED_EXTRAS = {
    ("init", "file"): ["init.path=PLACEHOLDER"],
    ("data", "text"): ["data.path=PLACEHOLDER"],
}


@pytest.mark.parametrize(
    "group,option", [(g, o) for g, opts in GROUP_OPTIONS.items() for o in opts]
)
def test_every_group_option_composes_and_validates(compose, group, option, tmp_path):
    extra = []
    if (group, option) == ("init", "file"):
        # A real weights file of the default run's shapes (V from the Elman corpus, H=64).
        from rnn_lab.core.data import Vocab, generate_elman_corpus
        from rnn_lab.core.inits import init_params

        V = Vocab.from_text(generate_elman_corpus(600, 42)).size
        p = init_params(V, 64, V, seed=0)
        np.savez(tmp_path / "w.npz", **p.arrays())
        extra = [f"init.path={tmp_path / 'w.npz'}"]
    if (group, option) == ("data", "text"):
        (tmp_path / "t.txt").write_text("the quick brown fox jumps over the lazy dog " * 20)
        extra = [f"data.path={tmp_path / 't.txt'}"]
    cfg = compose([f"{group}={option}", *extra])
    settings = settings_from_config(cfg)
    if group in ("init", "optim", "data"):
        assert getattr(settings, group)["name"] == option
    if group == "activation":
        assert settings.activation == option
    check_inputs(settings)  # data and weights load


# Grid studies; a tuning study (Optuna: a search space, no baseline, no seeds) is composed by
# tests/test_tuning.py.
GRID_STUDIES = sorted(
    p.stem for p in EXPERIMENTS_DIR.glob("*.yaml") if "sweeper: optuna" not in p.read_text()
)


@pytest.mark.parametrize("study", GRID_STUDIES)
def test_every_study_composes(compose, study):
    cfg = compose([f"study={study}"], return_hydra_config=True)
    settings_from_config(cfg)
    assert cfg.study.name == study
    assert cfg.study.question and cfg.study.expect and cfg.study.baseline
    assert cfg.hydra.sweeper.params, "a study declares its grid"
    assert (
        "seed" in cfg.hydra.sweeper.params
        and len(str(cfg.hydra.sweeper.params.seed).split(",")) >= 3
    )
    assert cfg.resume is True  # re-running a study continues it
    # Studies ship with launcher=stacked (conf/study_preset/default.yaml); launcher=joblib
    # on the command line still runs one job per core.
    assert cfg.hydra.launcher._target_.endswith("StackedLauncher")


def test_readme_override_line_composes(compose, tmp_path):
    """The issue's example command line, exactly as typed."""
    text = tmp_path / "my.txt"
    text.write_text("hello world, this is some text for a character model. " * 40)
    cfg = compose(
        "init=xavier activation=relu seq_len=50 clip=1.0 freeze_whh=true hidden_size=128 "
        f"steps=5000 lr=0.05 seed=3 optim=adagrad data=text data.path={text}".split()
    )
    s = settings_from_config(cfg)
    assert (s.init["name"], s.activation, s.seq_len, s.clip, s.freeze_whh) == (
        "xavier",
        "relu",
        50,
        1.0,
        True,
    )
    assert (s.hidden_size, s.steps, s.lr, s.seed, s.optim["name"]) == (
        128,
        5000,
        0.05,
        3,
        "adagrad",
    )
    check_inputs(s)


BAD_VALUES = [
    ("seq_len=0", "seq_len", "0"),
    ("hidden_size=0", "hidden_size", "0"),
    ("steps=0", "steps", "0"),
    ("lr=0", "lr", "0"),
    ("lr=-0.5", "lr", "-0.5"),
    ("clip=-1", "clip", "-1"),
    ("val_fraction=0", "val_fraction", "0"),
    ("val_fraction=1.0", "val_fraction", "1.0"),
    ("clip_mode=sometimes", "clip_mode", "sometimes"),
    ("dtype=float16", "dtype", "float16"),
    ("optim.momentum=1.5", "optim.momentum", "1.5"),
    ("lr_decay_rate=nan", "lr_decay_rate", "nan"),
    ("clip=inf", "clip", "inf"),
    ("batch_size=0", "batch_size", "0"),
]


@pytest.mark.parametrize("override,key,value", BAD_VALUES)
def test_bad_value_is_refused_naming_key_and_value(compose, override, key, value):
    with pytest.raises(ConfigError) as err:
        settings_from_config(compose([override]))
    message = str(err.value)
    assert key in message and value in message
    assert any(w in message for w in ("must", "choose", "expected"))  # says what is allowed


def _every_range_checked_key():
    """(option overrides, key, bad value) for every key of TrainSettings and of the group
    options that has a range check: each check lists values it must refuse."""
    from rnn_lab.app.schema import OPTION_CHECKS
    from rnn_lab.run.settings import TrainSettings

    for key, info in TrainSettings.field_info().items():
        if info["check"] is not None:
            for bad in info["check"].bad_examples():
                yield [], key, bad
    option_of = {"beta1": "adam", "beta2": "adam", "eps": "adam", "initial_accumulator_value":
                 "adagrad", "momentum": "sgd", "dampening": "sgd"}  # fmt: skip
    for dotted, check in OPTION_CHECKS.items():
        group, key = dotted.split(".")
        choose = [f"optim={option_of[key]}"] if group == "optim" else []
        for bad in check.bad_examples():
            yield choose, dotted, bad


@pytest.mark.parametrize("choose,key,bad", list(_every_range_checked_key()))
def test_every_range_checked_key_refuses_its_bad_values(compose, choose, key, bad):
    from omegaconf import OmegaConf

    config = OmegaConf.to_container(compose(choose))
    node, leaf = (config, key) if "." not in key else (config[key.split(".")[0]], key.split(".")[1])
    node[leaf] = bad
    with pytest.raises(ConfigError) as err:
        settings_from_config(config)
    message = str(err.value)
    assert message.startswith(f"{key}={bad!r} is not valid"), message
    assert any(w in message for w in ("must", "choose")), message


def _bad_data_cases(tmp_path: Path) -> list[tuple[list[str], str]]:
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 ".encode("latin-1") * 100)
    short = tmp_path / "short.txt"
    short.write_text("tiny text")
    weights = tmp_path / "w.npz"
    np.savez(
        weights,
        W_xh=np.zeros((3, 3)),
        W_hh=np.zeros((3, 3)),
        W_hy=np.zeros((3, 3)),
        b_h=np.zeros(3),
        b_y=np.zeros(3),
    )
    return [
        (["data=text", f"data.path={tmp_path / 'missing.txt'}"], "does not exist"),
        (["data=text", f"data.path={latin1}"], "not UTF-8"),
        (["data=text", f"data.path={short}"], "too short"),
        (["data=text"], "data.path"),
        (["init=file", f"init.path={weights}"], "needs (64"),
        (["init=file", f"init.path={tmp_path / 'nope.npz'}"], "does not exist"),
    ]


def test_bad_data_and_weights_are_refused_before_training(compose, tmp_path):
    for overrides, expected in _bad_data_cases(tmp_path):
        with pytest.raises(ConfigError) as err:
            check_inputs(settings_from_config(compose(overrides)))
        assert expected in str(err.value), (overrides, str(err.value))


@pytest.mark.parametrize(
    "overrides,expected",
    [
        (["seq_len=0"], "seq_len=0 is not valid"),
        (["seq_len=abc"], "seq_len"),  # Hydra's own type check (schema)
        (["init=foo"], "Available options in 'init'"),  # Hydra's own group check
        (["data=text", "data.path=/nonexistent/corpus.txt"], "does not exist"),
    ],
)
def test_cli_bad_input_message_exit_code_no_traceback_no_run_dir(tmp_path, overrides, expected):
    run_dir = tmp_path / "run"
    proc = run_cli([*overrides, f"hydra.run.dir={run_dir}"])
    assert proc.returncode != 0
    assert expected in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not run_dir.exists(), "a refused run leaves no run directory behind"


def test_cli_run_writes_every_file(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli([*TINY, f"hydra.run.dir={run_dir}"])
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    for key in (
        "status",
        "steps_done",
        "final_loss",
        "val_loss",
        "best_val_loss",
        "bits_per_char",
        "spectral_radius",
        "wall_time_s",
        "steps_per_s",
        "sample",
        "error",
    ):
        assert key in summary
    assert summary["status"] == "ok" and summary["steps_done"] == 40
    assert summary["bits_per_char"] == pytest.approx(summary["final_loss"] / np.log(2))
    history = pd.read_csv(run_dir / "history.csv")
    for col in ("step", "loss", "val_loss", "lr", "grad_norm", "clipped", "spectral_radius"):
        assert col in history.columns
    assert history["step"].iloc[-1] == 40 and history["val_loss"].notna().sum() >= 2
    chars = json.loads((run_dir / "vocab.json").read_text())["chars"]
    assert chars == sorted(chars) and " " in chars
    with np.load(run_dir / "checkpoint.npz") as z:
        for name in (
            "W_xh",
            "W_hh",
            "W_hy",
            "b_h",
            "b_y",
            "h",
            "step",
            "task_state",
            "rng_state",
            "optim.flat.momentum_buffer",
        ):
            assert name in z.files, name
        assert z["W_hh"].shape == (8, 8) and z["W_xh"].shape == (8, len(chars))
        assert int(z["step"]) == 40
    assert (run_dir / "train.log").read_text().count("done: status=ok") == 1
    assert not list(run_dir.glob("*.tmp")) and not list(run_dir.glob(".*.tmp"))


def test_checkpoint_works_as_init_file(tmp_path, compose):
    first = tmp_path / "first"
    train(settings_from_config(compose(TINY)), first)
    s = settings_from_config(
        compose([*TINY, "init=file", f"init.path={first / 'checkpoint.npz'}", "steps=1"])
    )
    from rnn_lab.run.lifecycle import build_params

    params = build_params(s, check_inputs(s))
    with np.load(first / "checkpoint.npz") as z:
        np.testing.assert_array_equal(params.W_hh, z["W_hh"])


def test_same_seed_same_history_and_weights(tmp_path, tiny_settings):
    s = tiny_settings(seed=7)
    train(s, tmp_path / "a")
    train(s, tmp_path / "b")
    assert (tmp_path / "a/history.csv").read_bytes() == (tmp_path / "b/history.csv").read_bytes()
    with np.load(tmp_path / "a/checkpoint.npz") as a, np.load(tmp_path / "b/checkpoint.npz") as b:
        for k in ("W_xh", "W_hh", "W_hy", "b_h", "b_y", "h"):
            np.testing.assert_array_equal(a[k], b[k])
    other = tiny_settings(seed=8)
    train(other, tmp_path / "c")
    assert (tmp_path / "a/history.csv").read_bytes() != (tmp_path / "c/history.csv").read_bytes()


def test_diverging_run_is_recorded_with_exit_code_zero(tmp_path):
    run_dir = tmp_path / "run"
    # relu + identity * 2 + no clipping + a large lr: the classic explosion.
    proc = run_cli(
        [
            *TINY,
            "lr=10",
            "clip=0",
            "activation=relu",
            "init=identity",
            "init.scale=2",
            "seq_len=40",
            f"hydra.run.dir={run_dir}",
        ]
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "diverged"
    assert "loss became" in summary["error"]
    assert summary["steps_done"] < 40
    assert "RuntimeWarning" not in proc.stderr  # the run's own line says it, not NumPy's


def _checkpoint_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {k: z[k] for k in z.files if k not in ("wall_time_s", "settings")}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupt_then_resume_is_bit_identical(tmp_path, sig):
    common = [
        "steps=6000",
        "hidden_size=32",
        "seq_len=20",
        "checkpoint_interval=250",
        "val_interval=200",
        "sample_interval=1000",
        "jacobian_interval=500",
        "log_interval=0",
        "analyze=false",
        "~hydra.callbacks.report",
    ]
    straight = tmp_path / "straight"
    proc = run_cli([*common, f"hydra.run.dir={straight}"])
    assert proc.returncode == 0, proc.stderr

    cut = tmp_path / "cut"
    env_cmd = [sys.executable, "-m", "rnn_lab.train", *common, f"hydra.run.dir={cut}"]
    child = subprocess.Popen(
        env_cmd, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    while not (cut / "checkpoint.npz").exists() and time.time() < deadline:
        time.sleep(0.05)
    child.send_signal(sig)
    out, err = child.communicate(timeout=120)
    assert child.returncode == 128 + sig, err
    summary = json.loads((cut / "summary.json").read_text())
    assert summary["status"] == "interrupted", "the signal must arrive mid-run"
    assert 0 < summary["steps_done"] < 6000
    assert int(np.load(cut / "checkpoint.npz")["step"]) == summary["steps_done"]

    proc = run_cli([*common, "resume=true", f"hydra.run.dir={cut}"])
    assert proc.returncode == 0, proc.stderr
    assert "resuming from the checkpoint" in proc.stderr + proc.stdout
    assert (cut / "history.csv").read_bytes() == (straight / "history.csv").read_bytes()
    a, b = (
        _checkpoint_arrays(cut / "checkpoint.npz"),
        _checkpoint_arrays(straight / "checkpoint.npz"),
    )
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    with np.load(cut / "diagnostics.npz") as x, np.load(straight / "diagnostics.npz") as y:
        assert x.files == y.files
        for k in x.files:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)
    s_cut = json.loads((cut / "summary.json").read_text())
    s_straight = json.loads((straight / "summary.json").read_text())
    for k in ("final_loss", "val_loss", "best_val_loss", "spectral_radius", "sample"):
        assert s_cut[k] == s_straight[k], k


def test_resume_refuses_other_settings(tmp_path, tiny_settings):
    train(tiny_settings(), tmp_path)
    with pytest.raises(ValueError, match="hidden_size"):
        train(tiny_settings(hidden_size=16, resume=True, steps=80), tmp_path)


def test_resume_of_a_finished_run_does_nothing(tmp_path, tiny_settings):
    first = train(tiny_settings(), tmp_path)
    mtime = (tmp_path / "history.csv").stat().st_mtime_ns
    again = train(tiny_settings(resume=True), tmp_path)
    assert again["status"] == "ok" and again["final_loss"] == first["final_loss"]
    assert (tmp_path / "history.csv").stat().st_mtime_ns == mtime


def test_sample_command_continues_the_prime(tmp_path, tiny_settings, capsys):
    from rnn_lab.app.cli import main

    train(tiny_settings(), tmp_path)
    args = [str(tmp_path), "--prime", "the ", "--temperature", "0", "--length", "30"]
    assert main(["sample", *args]) == 0
    first = capsys.readouterr().out
    assert first.startswith("the ") and len(first.rstrip("\n")) == 34
    assert main(["sample", *args]) == 0
    assert capsys.readouterr().out == first  # argmax: deterministic
    assert main(["sample", str(tmp_path), "--prime", "QQ"]) == 2
    assert "not in the vocabulary" in capsys.readouterr().err


def test_sample_says_when_a_capital_prime_meets_a_lowercased_text(tmp_path, tiny_settings, capsys):
    from rnn_lab.app.cli import main

    text = tmp_path / "t.txt"
    text.write_text("To be or not to be, that is the question.\n" * 30)
    data = {"name": "text", "path": str(text)}
    train(tiny_settings(data={**data, "normalize": True}), tmp_path / "lower")
    assert main(["sample", str(tmp_path / "lower"), "--prime", "To be"]) == 2
    assert "the run's text was lowercased, data.normalize=true" in capsys.readouterr().err
    train(tiny_settings(data={**data, "normalize": False}), tmp_path / "kept")
    assert main(["sample", str(tmp_path / "kept"), "--prime", "To be", "--length", "5"]) == 0
    assert capsys.readouterr().out.startswith("To be")


def test_resume_of_a_diverged_run_does_nothing(tmp_path, tiny_settings):
    """A study re-run must not reload a diverged job's non-finite checkpoint and diverge again."""
    s = tiny_settings(
        lr=10.0,
        clip=0.0,
        activation="relu",
        seq_len=40,
        init={"name": "identity", "scale": 2.0, "path": None},
    )
    first = train(s, tmp_path)
    assert first["status"] == "diverged" and first["steps_done"] < s.steps
    recorded = json.loads((tmp_path / "summary.json").read_text())
    mtime = (tmp_path / "checkpoint.npz").stat().st_mtime_ns
    again = train(tiny_settings(**{**s.to_dict(), "resume": True}), tmp_path)
    assert again == recorded  # the recorded summary, returned as it is
    assert (tmp_path / "checkpoint.npz").stat().st_mtime_ns == mtime
