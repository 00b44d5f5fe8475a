"""Many arms, one engine (issue 11): `rnn_lab.run.stacked.train_group` and `launcher=stacked`.

- Same answers: a stacked group of mixed inits, activations, seeds, lrs, lr decay, clips (0,
  norm, value), freeze_whh and optimiser settings, one of them diverging, ends exactly as the
  separate `trainer.train` runs of the same settings (status, parameters, history,
  diagnostics, summary keys), on text and sequence tasks.
- The checkpoint format is the single run's: a stacked run resumes through the single-run
  trainer and the other way round, and arms resuming from different steps share a group.
- Conflicts and locks are refused per arm before any work.
- A real `python -m rnn_lab.train -m ... launcher=stacked`, found through the installed
  package (another working directory, no PYTHONPATH): every job's folder holds what a joblib
  job's holds (.hydra/, train.log with its own lines, the run files), failures and
  divergence are recorded, and the collected results equal the joblib sweep's.
- Ctrl-C / SIGTERM to a stacked sweep (slow): every arm checkpoints (`interrupted`), the
  report says partial, exit 130 / 143, no process left; the same sweep re-run with
  `launcher=stacked` or `launcher=joblib` resumes every job to the uninterrupted result.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from cli_helpers import TINY, sweep_logs

from rnn_lab import PROJECT_ROOT
from rnn_lab.core.losses import LOSSES
from rnn_lab.core.optim import OPTIMIZERS
from rnn_lab.core.tasks import TASKS
from rnn_lab.run import lifecycle, rundir, stacked
from rnn_lab.run.rundir import LockHeld, RunConflict
from rnn_lab.run.schedule import is_record_step
from rnn_lab.run.settings import TrainSettings
from rnn_lab.run.stacked import group_key, train_group
from rnn_lab.run.trainer import train

PARAMS = ("W_xh", "W_hh", "W_hy", "b_h", "b_y", "E")
RTOL = 1e-8  # the tolerance; the engine is in fact bit-identical (asserted too)

BASE = dict(
    hidden_size=12,
    seq_len=8,
    val_interval=250,
    checkpoint_interval=500,
    record_interval=100,
    record_dense_until=50,
    jacobian_interval=500,
    jacobian_lags=4,
    sample_interval=1000,
    sample_length=40,
    log_interval=0,
    analyze=False,
    data={"name": "elman", "seed": 42, "num_sentences": 60},
)


def _init(name: str, scale: float = 1.0) -> dict:
    return {"name": name, "scale": scale, "path": None}


# A mixed group: inits, activations, seeds, lrs (with decay), clips 0 / norm / value,
# freeze_whh, SGD settings (momentum, nesterov), and a diverging arm (lr=1e3, no clipping).
MIXED_ARMS = [
    dict(),
    dict(init=_init("xavier"), activation="relu", seed=3, lr=0.02),
    dict(lr=1e3, clip=0.0, seed=2),  # diverges
    dict(init=_init("random"), clip_mode="value", clip=0.5, freeze_whh=True, seed=5),
    dict(activation="sigmoid", lr=0.05, clip=0.0, seed=7),
    dict(init=_init("identity"), activation="relu", lr=0.02, lr_decay_rate=0.5, lr_decay_every=500),
    dict(optim={"name": "sgd", "momentum": 0.5, "dampening": 0.0, "nesterov": True}, seed=9),
    dict(activation="linear", init=_init("orthogonal", 0.5), lr=0.001, seed=11, temperature=0.5),
]


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _files(run_dir: Path) -> set[str]:
    return {p.name for p in run_dir.iterdir() if p.is_file()}


def _assert_same_run(stacked_dir: Path, single_dir: Path) -> None:
    """The stacked arm's directory is the single run's: same files, same summary keys and
    status, parameters and history within RTOL (and in fact bit for bit)."""
    assert _files(stacked_dir) == _files(single_dir)
    a = json.loads((stacked_dir / rundir.SUMMARY_FILE).read_text())
    b = json.loads((single_dir / rundir.SUMMARY_FILE).read_text())
    assert a.keys() == b.keys()
    assert a["status"] == b["status"] and a["steps_done"] == b["steps_done"]
    assert a["error"] == b["error"] and a["sample"] == b["sample"]
    x, y = (
        _arrays(stacked_dir / rundir.CHECKPOINT_FILE),
        _arrays(single_dir / rundir.CHECKPOINT_FILE),
    )
    assert x.keys() == y.keys()
    for key in x:
        if key == "wall_time_s":
            continue
        if key in PARAMS or key.startswith("optim.") or key == "h":
            np.testing.assert_allclose(x[key], y[key], rtol=RTOL, atol=0, err_msg=key)
        np.testing.assert_array_equal(x[key], y[key], err_msg=key)
    ha = pd.read_csv(stacked_dir / rundir.HISTORY_FILE)
    hb = pd.read_csv(single_dir / rundir.HISTORY_FILE)
    assert list(ha.columns) == list(hb.columns) and len(ha) == len(hb)
    np.testing.assert_allclose(ha.to_numpy(float), hb.to_numpy(float), rtol=RTOL, equal_nan=True)
    assert (stacked_dir / rundir.HISTORY_FILE).read_bytes() == (
        single_dir / rundir.HISTORY_FILE
    ).read_bytes()
    if (single_dir / rundir.DIAGNOSTICS_FILE).exists():
        da = _arrays(stacked_dir / rundir.DIAGNOSTICS_FILE)
        db = _arrays(single_dir / rundir.DIAGNOSTICS_FILE)
        assert da.keys() == db.keys()
        for key in da:
            np.testing.assert_array_equal(da[key], db[key], err_msg=key)


def _group_against_singles(tmp_path: Path, base: dict, arms: list[dict]) -> list[dict]:
    jobs = [
        (TrainSettings(**{**base, **a}), tmp_path / "stacked" / str(i)) for i, a in enumerate(arms)
    ]
    results = train_group(jobs)
    for i, (s, run_dir) in enumerate(jobs):
        single = tmp_path / "single" / str(i)
        assert isinstance(results[i], dict), results[i]
        assert results[i] == json.loads((run_dir / rundir.SUMMARY_FILE).read_text())
        train(s, single)
        _assert_same_run(run_dir, single)
    return results


# ---- same answers ----------------------------------------------------------------------------


def test_a_mixed_stacked_group_gives_the_separate_runs_answers(tmp_path):
    results = _group_against_singles(tmp_path, {**BASE, "steps": 2000}, MIXED_ARMS)
    statuses = [r["status"] for r in results]
    assert statuses[2] == rundir.DIVERGED and "at step" in results[2]["error"]
    assert statuses.count(rundir.OK) == len(MIXED_ARMS) - 1, statuses
    assert results[2]["steps_done"] < 2000  # it left the stack when it diverged


# A diverging arm (linear, lr=3, no clipping: its loss is NaN at step 4) leaves the stack at a
# step where every schedule is due and the step before is not (validation, checkpoint,
# progress line and sample every 4 steps), placed first, in the middle and last: the
# survivors must still do step 4's work as their separate runs do.
DIVERGING_AT_STEP_4 = dict(activation="linear", lr=3.0, clip=0.0, seed=2)
DUE_EVERY_4 = dict(
    steps=40, val_interval=4, checkpoint_interval=4, log_interval=4, sample_interval=4
)


@pytest.mark.filterwarnings("error::RuntimeWarning")  # diverging quietly, both trainers
@pytest.mark.parametrize("position", [0, 1, 2], ids=["first", "middle", "last"])
def test_an_arm_diverging_at_a_due_step_leaves_the_others_runs_unchanged(tmp_path, position):
    arms = [dict(seed=3), dict(init=_init("xavier"), activation="relu", lr=0.02, seed=4)]
    arms.insert(position, DIVERGING_AT_STEP_4)
    results = _group_against_singles(tmp_path, {**BASE, **DUE_EVERY_4}, arms)
    assert results[position]["status"] == rundir.DIVERGED
    assert "at step 4" in results[position]["error"]
    for i, r in enumerate(results):
        if i != position:
            assert r["status"] == rundir.OK
            history = pd.read_csv(tmp_path / "stacked" / str(i) / rundir.HISTORY_FILE)
            assert history.set_index("step").loc[4, "val_loss"] > 0  # validated at step 4


# The first arm of the stack diverges (at step 4) where ONE schedule is due and nothing else:
# validation (val_interval=4) or the checkpoint (checkpoint_interval=4), the survivors in
# several orders. Every checkpoint each arm writes (its arrays and the history beside it)
# must be its separate run's, bit for bit: a stack deciding its schedule from the
# diverged arm's step (3) skipped the survivors' step-4 work.
ONLY_ONE_DUE_AT_STEP_4 = {
    "validation": dict(val_interval=4, checkpoint_interval=5),
    "checkpoint": dict(val_interval=5, checkpoint_interval=4),
}
SURVIVORS = [
    dict(seed=3),
    dict(init=_init("xavier"), activation="relu", lr=0.02, seed=4),
    dict(activation="sigmoid", lr=0.05, clip=0.0, seed=7),
]


def _checkpoints_written(monkeypatch) -> dict[Path, list]:
    """Every checkpoint write, by run directory: (step, arrays, history.csv's bytes then)."""
    written: dict[Path, list] = {}
    original = rundir.write_checkpoint

    def spy(run_dir, arrays):
        history = (Path(run_dir) / rundir.HISTORY_FILE).read_bytes()
        kept = {k: np.array(v) for k, v in arrays.items() if k != "wall_time_s"}
        written.setdefault(Path(run_dir), []).append((int(arrays["step"]), kept, history))
        original(run_dir, arrays)

    monkeypatch.setattr(rundir, "write_checkpoint", spy)
    return written


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 0, 1), (1, 2, 0)], ids=str)
@pytest.mark.filterwarnings("error::RuntimeWarning")  # diverging quietly, both trainers
@pytest.mark.parametrize("due_work", list(ONLY_ONE_DUE_AT_STEP_4))
def test_the_first_arm_diverging_at_a_due_step_leaves_every_checkpoint_unchanged(
    tmp_path, monkeypatch, due_work, order
):
    base = {**BASE, "steps": 12, "log_interval": 0, "sample_interval": 0}
    base.update(ONLY_ONE_DUE_AT_STEP_4[due_work])
    arms = [DIVERGING_AT_STEP_4, *(SURVIVORS[i] for i in order)]
    written = _checkpoints_written(monkeypatch)
    results = _group_against_singles(tmp_path, base, arms)
    assert results[0]["status"] == rundir.DIVERGED and "at step 4" in results[0]["error"]
    assert [r["status"] for r in results[1:]] == [rundir.OK] * 3
    for i in range(len(arms)):
        stacked_writes = written[tmp_path / "stacked" / str(i)]
        single_writes = written[tmp_path / "single" / str(i)]
        steps = [step for step, _, _ in single_writes]
        if i == 0:
            assert steps == [3]  # its checkpoint at the step before it diverged
        else:
            assert steps == ([4, 8, 12] if due_work == "checkpoint" else [5, 10, 12])
        assert [step for step, _, _ in stacked_writes] == steps, f"arm {i}"
        for (step, x, history_x), (_, y, history_y) in zip(stacked_writes, single_writes):
            assert history_x == history_y, f"arm {i}, step {step}"
            assert x.keys() == y.keys()
            for key in x:
                np.testing.assert_array_equal(x[key], y[key], err_msg=f"arm {i} {step} {key}")
        if i and due_work == "validation":
            history = pd.read_csv(tmp_path / "stacked" / str(i) / rundir.HISTORY_FILE)
            assert history.set_index("step").loc[4, "val_loss"] > 0  # validated at step 4


def test_record_steps_take_every_arms_spectrum_in_one_batched_call(tmp_path, monkeypatch):
    """The record steps' eigenvalues and sigma_max come from one np.linalg call over the
    stack's trained arms (a frozen W_hh's spectrum is taken once and kept), and every arm's
    diagnostics still equal its separate run's bit for bit (checked by _assert_same_run)."""
    shapes = {"eigvals": [], "svd": []}
    for name in shapes:
        original = getattr(np.linalg, name)

        def counting(a, *args, _name=name, _original=original, **kwargs):
            shapes[_name].append(np.shape(a))
            return _original(a, *args, **kwargs)

        monkeypatch.setattr(np.linalg, name, counting)
    arms = [
        dict(seed=1),
        dict(seed=2, freeze_whh=True),
        dict(seed=3),
        dict(seed=4, freeze_whh=True),
    ]
    base = {**BASE, "steps": 300, "val_interval": 0, "jacobian_interval": 0}
    jobs = [
        (TrainSettings(**{**base, **a}), tmp_path / "stacked" / str(i)) for i, a in enumerate(arms)
    ]
    train_group(jobs)
    H = BASE["hidden_size"]
    record_steps = [t for t in range(1, 301) if is_record_step(t, jobs[0][0])]
    # The first record step: all four arms; after it only the two trained ones. (The 2-D
    # eigvals calls are the Jacobian products' and the start and end files', per arm.)
    expected = [(4, H, H)] + [(2, H, H)] * (len(record_steps) - 1)
    assert [shape for shape in shapes["eigvals"] if len(shape) == 3] == expected
    assert shapes["svd"] == expected
    monkeypatch.undo()
    for i, (s, run_dir) in enumerate(jobs):
        train(s, tmp_path / "single" / str(i))
        _assert_same_run(run_dir, tmp_path / "single" / str(i))


@pytest.mark.parametrize(
    "case",
    [
        dict(
            seq_len=10,
            batch_size=4,
            data={
                "name": "copy",
                "seed": 42,
                "length": 3,
                "symbols": 4,
                "delay": 5,
                "val_sequences": 50,
            },
        ),  # fmt: skip
        dict(
            seq_len=5,
            batch_size=4,
            data={"name": "adding", "seed": 42, "length": 10, "val_sequences": 50},
        ),  # fmt: skip
        dict(
            use_embedding=True,
            embed_dim=5,
            dtype="float32",
            batch_size=3,
            optim={"name": "adam", "beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
        ),  # fmt: skip
        dict(optim={"name": "adagrad", "eps": 1e-10, "initial_accumulator_value": 0.1}, lr=0.1),
    ],
    ids=["copy", "adding", "embedding-float32-adam", "adagrad"],
)
def test_stacked_tasks_optimisers_and_dtypes_give_the_separate_runs_answers(tmp_path, case):
    arms = [
        dict(),
        dict(activation="relu", seed=3, lr=0.02),
        dict(freeze_whh=True, clip=0.0, seed=4),
        dict(activation="sigmoid", clip_mode="value", clip=0.1),
    ]
    base = {**BASE, "steps": 300, "val_interval": 100, "sample_interval": 150, **case}
    _group_against_singles(tmp_path, base, arms)


# ---- which runs share an engine ------------------------------------------------------------


def test_group_key_shares_what_the_engine_shares():
    base = TrainSettings(**{**BASE, "steps": 100})

    def key(**changes):
        return group_key(TrainSettings(**{**base.to_dict(), **changes}))

    same = [
        dict(lr=0.5, lr_decay_rate=0.5, clip=0.0, clip_mode="value", seed=3),
        dict(activation="relu", init=_init("xavier"), freeze_whh=True, temperature=0.0),
        dict(optim={"name": "sgd", "momentum": 0.0, "dampening": 0.0, "nesterov": False}),
        dict(diverge_factor=0.0, resume=True, analyze=True, plots=False),
    ]
    for changes in same:
        assert key(**changes) == key(), changes
    other = [
        dict(seq_len=9),
        dict(hidden_size=13),
        dict(steps=101),
        dict(batch_size=2),
        dict(dtype="float32"),
        dict(optim={"name": "adam", "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}),
        dict(val_interval=50),
        dict(record_interval=50),
        dict(checkpoint_interval=50),
        dict(use_embedding=True),
        dict(data={"name": "elman", "seed": 43, "num_sentences": 60}),
    ]
    for changes in other:
        assert key(**changes) != key(), changes
    # the steps a character budget buys are the steps: equal budgets, equal keys
    assert key(steps=5, budget_chars=800) == key(steps=100)
    # gated cells never stack
    assert key(cell={"name": "gru"}) is None and key(cell={"name": "lstm"}) is None
    with pytest.raises(ValueError, match="do not share an engine"):
        train_group([(base, "a"), (TrainSettings(**{**base.to_dict(), "seq_len": 9}), "b")])


def test_every_optimiser_and_loss_has_a_stacked_form():
    """The registry: what the single run can use, the stack can (else group_key keeps the
    run alone). A new optimiser or loss must come with its stacked form."""
    assert stacked.without_stacked_form() == {"optim": [], "loss": []}
    for name in OPTIMIZERS:
        s = TrainSettings(**{**BASE, "optim": {"name": name}})
        assert group_key(s) is not None, name
    for data in ({"name": "elman"}, *({"name": n} for n in TASKS)):
        assert group_key(TrainSettings(**{**BASE, "data": data})) is not None, data


def test_a_run_whose_optimiser_or_loss_lacks_a_stacked_form_trains_alone(monkeypatch):
    """A new optimiser (or loss) added to the single run's dict only: the registry names it
    and group_key refuses to stack a run that uses it (the run goes the single way)."""
    monkeypatch.setitem(OPTIMIZERS, "rmsprop", OPTIMIZERS["adagrad"])
    monkeypatch.setitem(LOSSES, "huber", LOSSES["squared_error"])
    monkeypatch.setattr(TASKS["adding"], "loss_name", "huber")
    assert stacked.without_stacked_form() == {"optim": ["rmsprop"], "loss": ["huber"]}
    assert group_key(TrainSettings(**{**BASE, "optim": {"name": "rmsprop"}})) is None
    assert group_key(TrainSettings(**{**BASE, "data": {"name": "adding"}})) is None
    assert group_key(TrainSettings(**{**BASE, "optim": {"name": "adagrad"}})) is not None
    assert group_key(TrainSettings(**{**BASE, "data": {"name": "copy"}})) is not None


# ---- one checkpoint format -----------------------------------------------------------------


@contextlib.contextmanager
def _sigint_after_step(monkeypatch, step: int):
    """A real SIGINT to this process right after `step` (the trainer's handler, single or
    stacked, then checkpoints and ends the run as interrupted)."""
    original = lifecycle.after_step

    def after_step(s, run_dir, state, *args, **kwargs):
        original(s, run_dir, state, *args, **kwargs)
        if state.step == step:
            signal.raise_signal(signal.SIGINT)

    with monkeypatch.context() as m:
        m.setattr(lifecycle, "after_step", after_step)
        yield


def _check_resumed(resumed: Path, straight: Path, what) -> None:
    assert json.loads((resumed / rundir.SUMMARY_FILE).read_text())["status"] == rundir.OK
    history = (resumed / rundir.HISTORY_FILE).read_bytes()
    assert history == (straight / rundir.HISTORY_FILE).read_bytes(), what
    x = _arrays(resumed / rundir.CHECKPOINT_FILE)
    y = _arrays(straight / rundir.CHECKPOINT_FILE)
    for key in (*PARAMS[:5], "h", "step", "recent_losses", "optim.flat.momentum_buffer"):
        np.testing.assert_array_equal(x[key], y[key], err_msg=f"{what} {key}")


def test_stacked_and_single_runs_resume_each_other(tmp_path, monkeypatch):
    """Runs interrupted by the single trainer (at different steps) resume in one stack (a
    stack per start step), runs interrupted in a stack resume through the single trainer,
    and all end as runs never interrupted."""
    arms = [dict(), dict(activation="relu", seed=3), dict(clip_mode="value", clip=0.5, seed=4)]
    full = {**BASE, "steps": 900, "checkpoint_interval": 100, "resume": True}
    settings = [TrainSettings(**{**full, **a}) for a in arms]
    for i, s in enumerate(settings):
        train(s, tmp_path / "straight" / str(i))
    # arm 0 cut at step 300 and arm 1 at 500 by the single trainer, arm 2 never started
    for i, step in ((0, 300), (1, 500)):
        with _sigint_after_step(monkeypatch, step):
            cut = train(settings[i], tmp_path / "mixed" / str(i))
        assert cut["status"] == rundir.INTERRUPTED and cut["steps_done"] == step
    results = train_group([(s, tmp_path / "mixed" / str(i)) for i, s in enumerate(settings)])
    assert [r["status"] for r in results] == [rundir.OK] * 3
    # a stack cut at step 400, finished by the single trainer
    with _sigint_after_step(monkeypatch, 400):
        cut = train_group([(s, tmp_path / "back" / str(i)) for i, s in enumerate(settings)])
    assert [(r["status"], r["steps_done"]) for r in cut] == [(rundir.INTERRUPTED, 400)] * 3
    for i, s in enumerate(settings):
        train(s, tmp_path / "back" / str(i))
    for i in range(len(arms)):
        for variant in ("mixed", "back"):
            _check_resumed(tmp_path / variant / str(i), tmp_path / "straight" / str(i), variant)


def test_conflicts_and_held_locks_are_refused_per_arm_before_any_work(tmp_path):
    base = {**BASE, "steps": 60, "val_interval": 30, "checkpoint_interval": 30}
    owner = TrainSettings(**{**base, "lr": 0.5})
    train(owner, tmp_path / "taken")
    before = {p.name: p.read_bytes() for p in (tmp_path / "taken").iterdir() if p.is_file()}
    s = TrainSettings(**base)
    held = tmp_path / "held"
    with rundir.file_lock(held / rundir.LOCK_FILE, "run directory"):
        results = train_group([(s, tmp_path / "taken"), (s, tmp_path / "free"), (s, held)])
    assert isinstance(results[0], RunConflict) and "lr: 0.5 -> 0.01" in str(results[0])
    assert isinstance(results[2], LockHeld)
    assert results[1]["status"] == rundir.OK
    after = {p.name: p.read_bytes() for p in (tmp_path / "taken").iterdir() if p.is_file()}
    assert after.keys() == before.keys()
    assert all(after[k] == before[k] for k in before if k != rundir.LOCK_FILE)
    assert not (held / rundir.SUMMARY_FILE).exists()


def test_reference_loop_engine_gives_the_same_files(tmp_path, monkeypatch):
    """The stacked engine against the reference (each arm's own train_step in turn)."""
    arms = MIXED_ARMS[:4]
    base = {**BASE, "steps": 300}
    train_group(
        [(TrainSettings(**{**base, **a}), tmp_path / "s" / str(i)) for i, a in enumerate(arms)]
    )
    monkeypatch.setattr(stacked, "ENGINE", "loop")
    train_group(
        [(TrainSettings(**{**base, **a}), tmp_path / "l" / str(i)) for i, a in enumerate(arms)]
    )
    for i in range(len(arms)):
        _assert_same_run(tmp_path / "s" / str(i), tmp_path / "l" / str(i))


# ---- the launcher --------------------------------------------------------------------------


def test_plan_units_groups_and_spreads_over_workers():
    from hydra_plugins.rnn_lab_launcher._core import plan_units

    keys = ["a"] * 6 + [None] + ["b"] + ["c"] * 3
    units = plan_units(keys, workers=2)
    assert sorted(i for u in units for i in u) == list(range(len(keys)))
    assert [6] in units and [7] in units  # no group, a group of one: alone
    assert all(len({keys[i] for i in u}) == 1 for u in units)  # a stack holds one group
    assert plan_units(["a"] * 4, workers=1) == [[0, 1, 2, 3]]  # one worker: one stack
    assert sorted(map(len, plan_units(["a"] * 5, workers=1, max_arms=2))) == [1, 2, 2]
    assert sorted(map(len, plan_units(["a"] * 60, workers=2))) == [30, 30]  # init_activation


def _plan_span(units, work, workers=2):
    from hydra_plugins.rnn_lab_launcher._core import makespan, stack_cost

    return makespan([stack_cost(max(work[i] for i in u), len(u)) for u in units], workers)


def test_plan_units_ends_every_worker_together():
    """Three equal groups on two workers (optim_lr: sgd, adagrad, adam x 15 arms) used to be
    three stacks: two rounds, one worker idle in the second. Now one group is cut and both
    workers end together; a group of 20x heavier arms (freeze_whh's hidden_size=128 beside
    16 and 64) is cut so that its pieces balance the rest."""
    from hydra_plugins.rnn_lab_launcher._core import plan_units, stack_cost

    keys = ["sgd"] * 15 + ["adagrad"] * 15 + ["adam"] * 15
    units = plan_units(keys, workers=2)
    assert sorted(map(len, units)) == [7, 8, 15, 15]
    ideal = 2 * stack_cost(1.0, 15) + 2 * stack_cost(1.0, 8)
    assert _plan_span(units, [1.0] * 45) <= 0.51 * ideal
    assert _plan_span(units, [1.0] * 45) < 0.8 * 2 * stack_cost(1.0, 15)  # the old 2 rounds

    H = [16] * 10 + [64] * 10 + [128] * 10
    work = [h * (h + 64) for h in H]
    units = plan_units([str(h) for h in H], workers=2, work=work)
    assert sorted(len(u) for u in units if H[u[0]] == 128) != [10]  # the heavy group is cut
    whole = [stack_cost(work[i], 10) for i in (0, 10, 20)]  # one stack per hidden size
    assert _plan_span(units, work) < 0.8 * max(whole)  # the old plan: H=128's one stack


def test_plan_units_starts_the_longest_work_first():
    """A sweep of seq_len 5 and 50 (5 seeds each): the seq_len=50 stack, 10x the work per
    arm, goes to a worker first, whatever its place in the grid; lone gated jobs likewise."""
    from hydra_plugins.rnn_lab_launcher._core import plan_units
    from rnn_lab.run.settings import TrainSettings
    from rnn_lab.run.stacked import group_key, work_estimate

    grid = [TrainSettings(seq_len=n, seed=k) for n in (5, 50) for k in range(5)]
    grid.append(TrainSettings(cell={"name": "lstm"}, seq_len=5))
    keys = [group_key(s) for s in grid]
    work = [work_estimate(s) for s in grid]
    assert work[5] == 10 * work[0] and work[-1] == 4 * work[0]
    units = plan_units(keys, workers=2, work=work)
    assert units[0][0] == 5 and all(keys[i] == keys[5] for i in units[0])  # seq_len=50 first
    spans = [max(work[i] for i in u) * len(u) for u in units]
    assert spans[0] == max(spans)
    assert plan_units(keys, workers=2)[0] == [0, 1, 2, 3, 4]  # without work: the biggest first


_COUNT_COMPOSES = """
import json, runpy, sys
from hydra._internal.config_loader_impl import ConfigLoaderImpl
composed = []
load = ConfigLoaderImpl.load_sweep_config
def counting(self, master_config, sweep_overrides):
    composed.append(list(sweep_overrides))
    return load(self, master_config, sweep_overrides)
ConfigLoaderImpl.load_sweep_config = counting
out, sys.argv = sys.argv[1], ["rnn_lab.train", *sys.argv[2:]]
try:
    runpy.run_module("rnn_lab.train", run_name="__main__")
finally:
    open(out, "w").write(json.dumps(composed))
"""


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_the_launcher_takes_the_configs_the_sweeper_composed(tmp_path, n_jobs):
    """Hydra's sweeper composes every job's config to validate the batch, then drops it; the
    launcher takes those (each job's config composed once, not twice: ~0.2 s a job, one after
    another before any work starts), and the jobs are what they would be otherwise."""
    counts = tmp_path / "composed.json"
    sweep = tmp_path / "sweep"
    args = ["-m", "activation=tanh,relu", "seed=1,2", *TINY, "launcher=stacked"]
    args += [f"hydra.launcher.n_jobs={n_jobs}", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.run(
        [sys.executable, "-c", _COUNT_COMPOSES, str(counts), *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    composed = json.loads(counts.read_text())
    assert len(composed) == 4, composed  # the sweeper's 4; the launcher's would make it 8
    summaries = _statuses(sweep)
    assert len(summaries) == 4 and all(s["status"] == rundir.OK for s in summaries.values())
    jobs = sorted(
        tuple(
            o
            for o in yaml.safe_load((sweep / name / ".hydra" / "overrides.yaml").read_text())
            if o.startswith(("activation=", "seed="))
        )
        for name in summaries
    )
    assert jobs == [
        (a, f"seed={k}") for a in ("activation=relu", "activation=tanh") for k in (1, 2)
    ]


def test_remembered_configs_are_taken_once_and_never_sent_to_workers():
    from hydra_plugins.rnn_lab_launcher import _core

    class Loader:
        calls = 0

        def load_sweep_config(self, master_config, sweep_overrides):
            Loader.calls += 1
            return {"overrides": list(sweep_overrides), "call": Loader.calls}

    loader, master = Loader(), object()
    _core.remember_sweep_configs(loader)
    _core.remember_sweep_configs(loader)  # twice is once
    validated = loader.load_sweep_config(master, ["seed=1"])  # the sweeper's validation
    _core.forget_sweep_configs(loader)
    assert "load_sweep_config" not in vars(loader)  # what is pickled to workers: the plain loader
    assert _core._sweep_config(loader, master, ["seed=1"]) is validated
    assert _core._sweep_config(loader, master, ["seed=1"])["call"] == 2  # taken once only
    assert _core._sweep_config(loader, object(), ["seed=2"])["call"] == 3  # nothing kept
    _core._SWEEP_CONFIGS.clear()


def _env_without_project() -> dict:
    """The installed package only: no PYTHONPATH, so the plugin must be found through the
    editable install (pip install -e . as the Makefile does)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HYDRA_FULL_ERROR")}
    return env


SWEEP = [
    "activation=tanh,relu",
    "lr=0.01,1e6,-1",  # ok, diverged (absurd loss), failed (config error)
    "clip=0",
    "seed=1",
    *[o for o in TINY],
]


def _multirun(sweep: Path, launcher: str, cwd: Path, extra=()) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "rnn_lab.train",
        "-m",
        *SWEEP,
        f"launcher={launcher}",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={sweep}",
        *extra,
    ]
    return subprocess.run(
        cmd, cwd=cwd, env=_env_without_project(), capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def stacked_and_joblib(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("launchers")
    elsewhere = tmp / "cwd"
    elsewhere.mkdir()
    out = {}
    for launcher in ("stacked", "joblib"):
        sweep = tmp / launcher
        out[launcher] = (sweep, _multirun(sweep, launcher, elsewhere))
    return out


def _job_dirs(sweep: Path) -> dict[str, Path]:
    """Every job folder of a sweep (the ones Hydra gave a .hydra/), by its relative path."""
    hydra_dirs = sweep.rglob(rundir.HYDRA_DIR)
    return {str(h.parent.relative_to(sweep)): h.parent for h in hydra_dirs if h.is_dir()}


def test_stacked_multirun_writes_every_jobs_folder_as_joblib_does(stacked_and_joblib):
    (sweep, proc), (jsweep, jproc) = stacked_and_joblib["stacked"], stacked_and_joblib["joblib"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert jproc.returncode == 0, jproc.stderr[-3000:]
    # 4 stackable jobs in 2 stacks of 2 on the 2 workers, the 2 failing configs alone
    assert "Stacked launcher: 6 jobs in 4 units (2, 2, 1, 1)" in sweep_logs(sweep)
    jobs, jjobs = _job_dirs(sweep), _job_dirs(jsweep)
    assert len(jobs) == 6 and jobs.keys() == jjobs.keys()
    statuses = {}
    for name, job in jobs.items():
        twin = jjobs[name]
        hydra = job / rundir.HYDRA_DIR
        for f in rundir.HYDRA_FILES:
            assert (hydra / f).exists(), (name, f)
        config = yaml.safe_load((hydra / rundir.HYDRA_CONFIG_FILE).read_text())
        assert config == yaml.safe_load(
            (twin / rundir.HYDRA_DIR / rundir.HYDRA_CONFIG_FILE).read_text()
        )
        assert yaml.safe_load((hydra / rundir.HYDRA_OVERRIDES_FILE).read_text()) == [
            o.replace("launcher=joblib", "launcher=stacked")
            for o in yaml.safe_load(
                (twin / rundir.HYDRA_DIR / rundir.HYDRA_OVERRIDES_FILE).read_text()
            )
        ]
        choices = yaml.safe_load((hydra / rundir.HYDRA_HYDRA_FILE).read_text())["hydra"]["runtime"]
        assert choices["choices"]["hydra/launcher"] == "stacked"
        assert choices["output_dir"] == str(job.absolute())
        assert _files(job) == _files(twin), name
        summary = json.loads((job / rundir.SUMMARY_FILE).read_text())
        jsummary = json.loads((twin / rundir.SUMMARY_FILE).read_text())
        assert summary.keys() == jsummary.keys() and summary["status"] == jsummary["status"]
        statuses[name] = summary["status"]
        if summary["status"] != rundir.FAILED:
            assert (job / rundir.HISTORY_FILE).read_bytes() == (
                twin / rundir.HISTORY_FILE
            ).read_bytes(), name
        # its train.log holds its own lines, not its stack-mates'
        log = (job / rundir.LOG_FILE).read_text()
        for other in jobs.values():
            if other != job:
                assert str(other) not in log, (name, other)
        if summary["status"] != rundir.FAILED:
            assert f"-> {job.absolute()}" in log and "done: status=" in log
    assert sorted(statuses.values()) == sorted(
        [rundir.OK] * 2 + [rundir.DIVERGED] * 2 + [rundir.FAILED] * 2
    )


def test_stacked_sweep_collects_and_reports_as_a_joblib_sweep(stacked_and_joblib):
    (sweep, proc), (jsweep, _) = stacked_and_joblib["stacked"], stacked_and_joblib["joblib"]
    a, b = pd.read_csv(sweep / rundir.RESULTS_CSV), pd.read_csv(jsweep / rundir.RESULTS_CSV)
    assert list(a.columns) == list(b.columns)
    a, b = (
        a.sort_values("path").reset_index(drop=True),
        b.sort_values("path").reset_index(drop=True),
    )
    assert set(a["launcher"]) == {"stacked"} and set(b["launcher"]) == {"joblib"}
    varying = {"launcher", "wall_time_s", "steps_per_s"}
    for column in a.columns:
        if column not in varying:
            pd.testing.assert_series_equal(a[column], b[column], check_names=False, obj=column)
    assert (sweep / rundir.REPORT_FILE).exists()
    assert f"sweep report: {sweep}/{rundir.REPORT_FILE}" in proc.stdout
    # the progress lines: one per job, the last one "all done"
    lines = [ln for ln in proc.stdout.splitlines() if re.match(r"\[\d+/\d+\] ", ln)]
    assert len(lines) == 6 and lines[-1].startswith("[6/6]") and "all done" in lines[-1]


# ---- stopping a stacked sweep (real processes and signals) ---------------------------------

STOP_STEPS = 6000


def _study(sweep: Path, launcher: str, extra=()) -> list[str]:
    return [
        sys.executable,
        "-m",
        "rnn_lab.app.cli",
        "study",
        "demo",
        f"steps={STOP_STEPS}",
        "hidden_size=8",
        "seq_len=8",
        "data.num_sentences=60",
        "analyze=false",
        "checkpoint_interval=100",
        "activation=tanh",
        "seed=1,2",
        f"launcher={launcher}",
        f"hydra.sweep.dir={sweep}",
        *extra,
    ]


def _statuses(sweep: Path) -> dict[str, dict]:
    return {
        str(p.parent.relative_to(sweep)): json.loads(p.read_text())
        for p in sweep.rglob(rundir.SUMMARY_FILE)
    }


def _alive_in_session(sid: int) -> list[str]:
    alive = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
        except (OSError, ValueError):
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            alive.append(proc.name)
    return alive


@pytest.fixture(scope="module")
def straight_study(tmp_path_factory):
    """The study run without interruption, for the resumed ones to equal."""
    sweep = tmp_path_factory.mktemp("straight") / "sweep"
    proc = subprocess.run(
        _study(sweep, "stacked"), cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep


@pytest.mark.slow
@pytest.mark.parametrize(
    "signum,resume_with,extra",
    [
        (signal.SIGINT, "stacked", ()),
        (signal.SIGTERM, "joblib", ()),
        (signal.SIGINT, "stacked", ("hydra.launcher.n_jobs=1",)),  # the stack in the launcher
    ],
    ids=["ctrl-c-resume-stacked", "sigterm-resume-joblib", "in-process-ctrl-c"],
)
def test_stopped_stacked_sweep_checkpoints_every_arm_and_resumes(
    tmp_path, straight_study, signum, resume_with, extra
):
    sweep = tmp_path / "sweep"
    err = (tmp_path / "err").open("w")
    proc = subprocess.Popen(
        _study(sweep, "stacked", extra),
        cwd=PROJECT_ROOT,
        start_new_session=True,
        stdout=(tmp_path / "out").open("w"),
        stderr=err,
    )
    deadline = time.monotonic() + 180
    while not any(sweep.rglob(rundir.CHECKPOINT_FILE)):
        assert time.monotonic() < deadline, "no checkpoint"
        time.sleep(0.05)
    if signum == signal.SIGINT:
        os.killpg(proc.pid, signal.SIGINT)  # the terminal's Ctrl-C: the whole group
    else:
        proc.send_signal(signal.SIGTERM)  # `timeout`: the launching process alone
    assert proc.wait(timeout=180) == 128 + signum, (tmp_path / "err").read_text()[-3000:]
    summaries = _statuses(sweep)
    assert len(summaries) == 6, summaries.keys()  # demo: 3 inits x tanh x 2 seeds
    for name, s in summaries.items():
        assert s["status"] == rundir.INTERRUPTED, (name, s["status"])
        assert s["signal"] == signum and 0 < s["steps_done"] < STOP_STEPS
        assert int(_arrays(sweep / name / rundir.CHECKPOINT_FILE)["step"]) == s["steps_done"]
    assert "partial" in (tmp_path / "out").read_text().lower()
    deadline = time.monotonic() + 15
    while _alive_in_session(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive_in_session(proc.pid)

    done = subprocess.run(
        _study(sweep, resume_with), cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming from the checkpoint" in sweep_logs(sweep)
    straight = _statuses(straight_study)
    for name, s in _statuses(sweep).items():
        assert s["status"] == rundir.OK, name
        assert (sweep / name / rundir.HISTORY_FILE).read_bytes() == (
            straight_study / name / rundir.HISTORY_FILE
        ).read_bytes(), name
        assert s["final_loss"] == straight[name]["final_loss"]
