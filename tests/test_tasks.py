"""The sequence tasks (copy, adding, memory capacity): their generators' statistics, their
baselines computed and measured, chunking and budgets, resume bit-identical, their metrics,
and short runs that beat the baselines where they should."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from rnn_lab.core import engine
from rnn_lab.core.inits import init_params
from rnn_lab.core.losses import mean_squared_error, softmax_cross_entropy
from rnn_lab.core.tasks import (
    TASK_DEFAULTS,
    AddingTask,
    CopyTask,
    MemoryCapacityTask,
    budget_steps,
    copy_memoryless_baseline,
    make_sequence_task,
    sequence_length,
    time_steps_seen,
)
from rnn_lab.inspect.task_metrics import (
    adding_baseline,
    adding_metrics,
    copy_metrics,
    memory_capacity_metrics,
)
from rnn_lab.run import rundir
from rnn_lab.run.input_files import make_task
from rnn_lab.run.lifecycle import build_task
from rnn_lab.run.trainer import train

ADAM = {"name": "adam", "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}


def copy_task(seq_len=100, batch_size=1, **keys) -> CopyTask:
    return make_sequence_task({"name": "copy", **keys}, seq_len, batch_size)


# ---- copy ----------------------------------------------------------------------------------


def test_copy_sequences_are_symbols_blanks_delimiter_then_recall():
    L, S, T = 10, 8, 20
    task = copy_task()
    seqs = task.generate(np.random.default_rng(0), 4000)
    x, y = seqs.inputs, seqs.targets
    assert x.shape == y.shape == (T + 2 * L, 4000) == (task.length, 4000)
    assert seqs.mask is None  # the loss counts every step (the papers' measure)
    assert x[:L].min() == 1 and x[:L].max() == S  # symbols 1..S
    assert not x[L : L + T - 1].any()  # T - 1 blanks
    assert (x[L + T - 1] == S + 1).all()  # the delimiter
    assert not x[L + T :].any()  # blanks while recalling
    assert not y[: L + T].any()  # blank targets until the recall window
    np.testing.assert_array_equal(y[L + T :], x[:L])  # then the symbols, in order
    counts = np.bincount(x[:L].ravel(), minlength=S + 1)[1:] / x[:L].size
    np.testing.assert_allclose(counts, 1 / S, atol=0.01)  # uniform over the alphabet
    assert (task.input_size, task.output_size) == (S + 2, S + 1)


def test_copy_memoryless_baseline_is_the_formula_and_what_such_a_predictor_scores():
    assert copy_memoryless_baseline(10, 8, 20) == pytest.approx(0.520, abs=5e-4)
    task = copy_task(length=4, symbols=5, delay=7)
    seqs = task.generate(np.random.default_rng(1), 300)
    # The best predictor without memory: certain blanks before the recall window, a uniform
    # guess over the symbols in it.
    logits = np.full(seqs.targets.shape + (task.output_size,), -1e4)
    recall = task.recall_positions()
    logits[: recall.start, :, 0] = 0.0
    logits[recall, :, 1:] = 0.0
    loss, _, n = softmax_cross_entropy(logits, seqs.targets)
    assert loss / n == pytest.approx(copy_memoryless_baseline(4, 5, 7), rel=1e-12)
    assert task.baselines()["memoryless_baseline"] == copy_memoryless_baseline(4, 5, 7)


# ---- adding --------------------------------------------------------------------------------


@pytest.mark.parametrize("T", [2, 11, 100])
def test_adding_sequences_have_one_marker_per_half_and_the_sum_as_target(T):
    task = make_sequence_task({"name": "adding", "length": T}, T, 1)
    seqs = task.generate(np.random.default_rng(2), 3000)
    values, markers = seqs.inputs[..., 0], seqs.inputs[..., 1]
    assert seqs.inputs.shape == (T, 3000, 2) and seqs.targets.shape == (T, 3000, 1)
    assert values.min() >= 0.0 and values.max() < 1.0
    assert set(np.unique(markers)) <= {0.0, 1.0} and (markers.sum(axis=0) == 2).all()
    assert (markers[: T // 2].sum(axis=0) == 1).all()  # exactly one in the first half
    assert (markers[T // 2 :].sum(axis=0) == 1).all()  # and one in the second
    np.testing.assert_allclose(seqs.targets[-1, :, 0], (values * markers).sum(axis=0), rtol=1e-15)
    assert not seqs.targets[:-1].any()
    assert (seqs.mask[-1] == 1).all() and not seqs.mask[:-1].any()  # the last step only
    if T == 100:
        assert values.mean() == pytest.approx(0.5, abs=0.005)
        positions = np.argmax(markers[:50], axis=0)
        assert abs(positions.mean() - 24.5) < 1.0  # uniform over the first half


def test_adding_baseline_always_answering_one_costs_one_sixth():
    task = make_sequence_task({"name": "adding", "length": 4}, 4, 1)
    seqs = task.generate(np.random.default_rng(3), 200_000)
    target = seqs.targets[-1, :, 0]
    assert target.mean() == pytest.approx(1.0, abs=0.005)
    assert np.mean((1.0 - target) ** 2) == pytest.approx(1 / 6, abs=0.003)
    # through the task's own loss: the constant answer 1 at the last step
    outputs = np.ones_like(seqs.targets)
    loss, _, n = mean_squared_error(outputs[:, :5000], seqs.targets[:, :5000], seqs.mask[:, :5000])
    assert loss / n == pytest.approx(np.mean((1.0 - target[:5000]) ** 2), rel=1e-12)
    assert task.baselines()["baseline_mse"] == 1 / 6
    held_out = make_sequence_task({"name": "adding", "length": 100}, 100, 1)
    assert adding_baseline(held_out) == pytest.approx(1 / 6, abs=0.025)  # 1000 sequences


# ---- memory capacity -----------------------------------------------------------------------


def test_memory_capacity_targets_are_the_past_inputs():
    K = 5
    task = make_sequence_task({"name": "memory_capacity", "length": 40, "max_delay": K}, 40, 1)
    seqs = task.generate(np.random.default_rng(4), 2000)
    u = seqs.inputs[..., 0]
    assert seqs.inputs.shape == (40, 2000, 1) and seqs.targets.shape == (40, 2000, K)
    assert u.min() >= -0.5 and u.max() <= 0.5
    assert u.mean() == pytest.approx(0.0, abs=0.003) and u.var() == pytest.approx(1 / 12, rel=0.01)
    assert abs(np.corrcoef(u[1:].ravel(), u[:-1].ravel())[0, 1]) < 0.01  # i.i.d. in time
    for k in range(1, K + 1):
        np.testing.assert_array_equal(seqs.targets[k:, :, k - 1], u[:-k])
    assert not seqs.mask[:K].any() and (seqs.mask[K:] == 1).all()


def _reservoir(H, W_hh, W_xh=None, K=None):
    K = K or 2 * H
    params = init_params(1, H, K, init="orthogonal", seed=0)
    params.W_hh[:] = W_hh
    if W_xh is not None:
        params.W_xh[:] = W_xh
    return params, make_sequence_task(
        {"name": "memory_capacity", "length": K + 100, "max_delay": K, "val_sequences": 60},
        K + 100,
        1,
    )


def test_memory_capacity_of_known_reservoirs():
    H = 8
    # W_hh = 0: h_t depends on u(t) alone, so no past input is recoverable.
    params, task = _reservoir(H, np.zeros((H, H)))
    assert memory_capacity_metrics(params, "tanh", task)["memory_capacity"] < 0.05
    # A linear delay line (h_t = (u(t), u(t-1), ..., u(t-H+1))) holds exactly H - 1 past inputs.
    e1 = np.zeros((H, 1))
    e1[0] = 1.0
    params, task = _reservoir(H, np.eye(H, k=-1), e1)
    m = memory_capacity_metrics(params, "linear", task)
    assert m["memory_capacity"] == pytest.approx(H - 1, abs=0.02)
    assert np.allclose(m["memory_curve"][: H - 1], 1.0, atol=1e-3)


def test_memory_capacity_never_exceeds_h_and_a_linear_orthogonal_reservoir_nears_it():
    H = 10
    for seed, (init, activation, scale) in enumerate(
        [("orthogonal", "linear", 0.9), ("orthogonal", "tanh", 1.0), ("xavier", "tanh", 1.5),
         ("random", "relu", 1.0), ("orthogonal", "sigmoid", 1.2), ("orthogonal", "linear", 1.05)]
    ):  # fmt: skip
        W = init_params(1, H, 1, init=init, seed=seed).W_hh * scale
        params, task = _reservoir(H, W, K=4 * H)
        mc = memory_capacity_metrics(params, activation, task)["memory_capacity"]
        assert mc <= H + 0.1, (init, activation, scale, mc)
        if activation == "linear" and scale < 1:
            # Jaeger (2002): a linear reservoir with rho < 1 holds ~H (what decays below the
            # readouts' resolution within K = 4H delays is lost to the measure)
            assert mc > 0.85 * H, mc


# ---- chunks, determinism, state --------------------------------------------------------------


def test_a_sequence_longer_than_seq_len_is_cut_into_chunks_with_h_reset_per_sequence():
    task = copy_task(seq_len=15, batch_size=3)  # 40 steps: chunks of 15, 15, 10
    expected = copy_task(batch_size=3).generate(np.random.default_rng([42, 0]), 3)
    chunks = [task.next_batch() for _ in range(3)]
    assert [c.inputs.shape[0] for c in chunks] == [15, 15, 10]
    assert [c.reset_h for c in chunks] == [True, False, False]
    np.testing.assert_array_equal(np.concatenate([c.inputs for c in chunks]), expected.inputs)
    np.testing.assert_array_equal(np.concatenate([c.targets for c in chunks]), expected.targets)
    nxt = task.next_batch()
    assert nxt.reset_h and not np.array_equal(nxt.inputs[:10], expected.inputs[:10])
    assert task.chunk_len == 15 and copy_task(seq_len=100).chunk_len == 40


@pytest.mark.parametrize("name", sorted(TASK_DEFAULTS))
def test_generators_are_seeded_and_deterministic(name):
    def batches(seed, n=4):
        task = make_sequence_task({"name": name, "seed": seed}, 7, 2)
        return [task.next_batch() for _ in range(n)], task

    (a, ta), (b, tb), (c, tc) = batches(1), batches(1), batches(2)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.inputs, y.inputs)
        np.testing.assert_array_equal(x.targets, y.targets)
    assert not all(np.array_equal(x.inputs, z.inputs) for x, z in zip(a, c))
    assert ta.data_sha1 == tb.data_sha1 != tc.data_sha1
    np.testing.assert_array_equal(ta.validation_set().inputs, tb.validation_set().inputs)
    # the held-out set is not the training stream
    first = ta.generate(np.random.default_rng([1, 0]), 2).inputs
    assert not np.array_equal(ta.validation_set().inputs[:, :2], first)


@pytest.mark.parametrize("name", sorted(TASK_DEFAULTS))
@pytest.mark.parametrize("done", [0, 1, 5, 6])  # at a sequence boundary and inside one
def test_state_dict_resumes_the_stream_exactly(name, done):
    def task():
        return make_sequence_task({"name": name, "length": 12, "max_delay": 3}, 5, 2)

    a = task()  # 12 or 13 steps: 3 chunks per sequence
    for _ in range(done):
        a.next_batch()
    state = json.loads(json.dumps(a.state_dict()))  # as the checkpoint stores it
    b = task()
    b.load_state_dict(state)
    for _ in range(7):
        x, y = a.next_batch(), b.next_batch()
        assert x.reset_h == y.reset_h
        np.testing.assert_array_equal(x.inputs, y.inputs)
        np.testing.assert_array_equal(x.targets, y.targets)


# ---- budgets -----------------------------------------------------------------------------------


def test_budget_steps_buy_at_least_the_budget_and_no_more_steps_than_needed():
    text = {"name": "elman"}
    assert budget_steps(text, 25, 4, 10_000) == math.ceil(10_000 / 100)
    assert time_steps_seen(text, 25, 4, 100) == 10_000
    rng = np.random.default_rng(5)
    for data in ({"name": "copy"}, {"name": "adding", "length": 37}, text):
        for _ in range(200):
            seq_len, B, budget = (
                int(rng.integers(1, 60)),
                int(rng.integers(1, 9)),
                int(rng.integers(1, 50_000)),
            )
            steps = budget_steps(data, seq_len, B, budget)
            assert time_steps_seen(data, seq_len, B, steps) >= budget
            assert time_steps_seen(data, seq_len, B, steps - 1) < budget
    # seq_len arms read the same data: whole sequences whatever the chunking
    copy, N = {"name": "copy"}, sequence_length({"name": "copy"})
    seen = {time_steps_seen(copy, L, 2, budget_steps(copy, L, 2, 100 * N)) for L in (5, 13, 40)}
    assert seen == {100 * N}


def test_a_budget_replaces_steps_and_the_summary_says_what_was_read(tmp_path, tiny_settings):
    data = {"name": "adding", "length": 20, "val_sequences": 50}
    runs = {}
    for seq_len, B in ((20, 1), (7, 1), (20, 4)):
        s = tiny_settings(steps=5, budget_chars=2000, seq_len=seq_len, batch_size=B, data=data)
        runs[seq_len, B] = train(s, tmp_path / f"{seq_len}-{B}")
    assert [r["steps"] for r in runs.values()] == [100, 300, 25]
    assert {r["chars_seen"] for r in runs.values()} == {2000}
    assert {r["sequences_seen"] for r in runs.values()} == {100}
    assert all(r["steps_done"] == r["steps"] and r["status"] == "ok" for r in runs.values())
    assert runs[20, 1]["bits_per_char"] is None and runs[20, 1]["sample"] == ""


# ---- the trainer on sequence tasks ---------------------------------------------------------

RESUME_CASES = {
    "copy": ({"name": "copy", "length": 3, "symbols": 4, "delay": 6, "val_sequences": 20}, 5),
    "adding": ({"name": "adding", "length": 10, "val_sequences": 20}, 4),
    "memory_capacity": (
        {"name": "memory_capacity", "length": 12, "max_delay": 3, "val_sequences": 5},
        5,
    ),
}


@pytest.mark.parametrize("name", sorted(RESUME_CASES))
def test_resume_of_a_sequence_task_from_inside_a_sequence_is_bit_identical(
    tmp_path, tiny_settings, name
):
    data, seq_len = RESUME_CASES[name]

    def settings(steps, **kw):
        return tiny_settings(steps=steps, data=data, seq_len=seq_len, batch_size=3, optim=ADAM,
                             jacobian_lags=6, **kw)  # fmt: skip

    train(settings(60), tmp_path / "straight")
    cut = tmp_path / "cut"
    train(settings(40), cut)  # 3 chunks a sequence: step 40 is inside one
    assert json.loads(str(rundir.read_checkpoint(cut)["task_state"]))["chunk"] == 1
    older = (cut / "checkpoint.npz").read_bytes()
    train(settings(50, resume=True), cut)
    (cut / "checkpoint.npz").write_bytes(older)  # as if killed after writing history to 50
    summary = json.loads((cut / "summary.json").read_text())
    rundir.write_summary(cut, {**summary, "status": "running"})
    resumed = train(settings(60, resume=True), cut)
    assert resumed["status"] == "ok" and resumed["steps_done"] == 60
    assert (cut / "history.csv").read_bytes() == (tmp_path / "straight/history.csv").read_bytes()
    a, b = rundir.read_checkpoint(cut), rundir.read_checkpoint(tmp_path / "straight")
    assert set(a) == set(b)
    for k in b:
        if k not in ("wall_time_s", "settings"):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    diag_a, diag_b = (
        rundir.read_npz(d / rundir.DIAGNOSTICS_FILE) for d in (cut, tmp_path / "straight")
    )
    for k in diag_b:
        np.testing.assert_array_equal(diag_a[k], diag_b[k], err_msg=k)


def test_a_sequence_task_run_writes_task_json_not_vocab_json(tmp_path, tiny_settings):
    s = tiny_settings(data=RESUME_CASES["adding"][0], seq_len=4)
    summary = train(s, tmp_path)
    assert not (tmp_path / rundir.VOCAB_FILE).exists()
    info = json.loads((tmp_path / rundir.TASK_FILE).read_text())
    assert info["name"] == "adding" and info["baseline_mse"] == 1 / 6
    assert info["data_sha1"] == build_task(s).data_sha1
    assert info["chunks_per_sequence"] == 3 and info["output_size"] == 1
    assert summary["val_loss"] is not None and summary["bits_per_char"] is None
    diag = rundir.read_npz(tmp_path / rundir.DIAGNOSTICS_FILE)
    assert diag["per_step_grad_norm"].shape[1] == 4  # padded: the last chunk has 2 steps
    # a rerun with another sequence length is another run (its data differs)
    from rnn_lab.run.rundir import RunConflict

    other = tiny_settings(data={**RESUME_CASES["adding"][0], "length": 11}, seq_len=4)
    with pytest.raises(RunConflict, match="length"):
        train(other, tmp_path)


def test_analysis_of_a_sequence_task_run_writes_its_metrics(tmp_path, tiny_settings):
    from rnn_lab.inspect.analysis import analyze_run

    s = tiny_settings(data=RESUME_CASES["copy"][0], seq_len=5)
    train(s, tmp_path)
    summary = analyze_run(tmp_path, plots=False)
    analysis = json.loads((tmp_path / rundir.ANALYSIS_FILE).read_text())
    assert analysis["run_id"] == summary["run_id"] and analysis["steps_done"] == 40
    for key in ("ce_per_step", "recall_accuracy", "recall_ce", "memoryless_baseline",
                "recall_chance", "ce_per_step_init", "recall_accuracy_init"):  # fmt: skip
        assert summary[key] == analysis[key] and math.isfinite(analysis[key]), key
    assert analysis["ce_per_step"] == pytest.approx(summary["val_loss"], rel=1e-12)
    assert "vocab_hit_rate" not in analysis


def test_bad_task_settings_are_refused_naming_the_key(compose):
    from rnn_lab.app.schema import ConfigError, check_inputs, settings_from_config

    for overrides, message in (
        (["data=adding", "data.length=1"], "data.length=1 is not valid: must be an integer >= 2"),
        (["data=memory_capacity", "data.length=50", "data.max_delay=50"], "data.length=50"),
        (["data=copy", "data.symbols=1"], "data.symbols=1 is not valid"),
        (["data=adding", "use_embedding=true"], "use_embedding=true is not valid"),
    ):
        with pytest.raises(ConfigError, match=message):
            check_inputs(settings_from_config(compose(overrides)))


@pytest.mark.parametrize("name", sorted(TASK_DEFAULTS))
def test_each_data_option_composes_with_the_task_defaults(compose, name):
    from rnn_lab.app.schema import check_inputs, settings_from_config

    settings = settings_from_config(compose([f"data={name}", "activation=linear"]))
    assert settings.data == {"name": name, **TASK_DEFAULTS[name]}
    assert settings.activation == "linear"
    task = check_inputs(settings)
    assert isinstance(task, (CopyTask, AddingTask, MemoryCapacityTask))
    assert make_task(settings.data, 25, 1, 0.1).data_sha1 == task.data_sha1


# ---- short runs beat the baselines ---------------------------------------------------------


def _trained(tmp_path, tiny_settings, **kw):
    base = dict(optim=ADAM, lr=0.01, hidden_size=32, batch_size=16, val_interval=0, record=False,
                checkpoint_interval=0)  # fmt: skip
    s = tiny_settings(**{**base, **kw})
    summary = train(s, tmp_path)
    assert summary["status"] == "ok"
    params = engine.Params.from_arrays(rundir.read_checkpoint(tmp_path))
    return summary, params, build_task(s)


def test_copy_at_a_short_delay_learns_to_recall_far_below_the_memoryless_baseline(
    tmp_path, tiny_settings
):
    data = {"name": "copy", "length": 3, "symbols": 4, "delay": 5, "val_sequences": 500}
    summary, params, task = _trained(tmp_path, tiny_settings, data=data, steps=800, seq_len=50)
    m = copy_metrics(params, "tanh", task)
    baseline = copy_memoryless_baseline(3, 4, 5)  # 0.378 nats per step
    assert m["ce_per_step"] < 0.2 * baseline and m["recall_accuracy"] > 0.95
    assert summary["val_loss"] == pytest.approx(m["ce_per_step"], rel=1e-12)


def test_adding_at_t10_beats_the_always_one_baseline(tmp_path, tiny_settings):
    data = {"name": "adding", "length": 10, "val_sequences": 500}
    summary, params, task = _trained(tmp_path, tiny_settings, data=data, steps=800, seq_len=10)
    mse = adding_metrics(params, "tanh", task)["mse"]
    assert mse < 0.25 * adding_baseline(task)
    assert summary["val_loss"] == pytest.approx(mse, rel=1e-12)


def test_adding_cut_into_one_step_chunks_stays_near_the_baseline_on_the_same_budget(
    tmp_path, tiny_settings
):
    """Truncation: with seq_len = 1 the gradient never reaches a marker before the last step
    (h still carries forward). Only a second marker at the last step (1 in 5 sequences) can be
    used, so the MSE cannot fall below ~(1/5)(1/12) + (4/5)(1/6) = 0.15; the same data read
    whole (seq_len = T, see the test above) gets far below."""
    data = {"name": "adding", "length": 10, "val_sequences": 500}
    budget = 800 * 16 * 10  # what the seq_len = 10 run above reads
    summary, params, task = _trained(
        tmp_path, tiny_settings, data=data, steps=1, budget_chars=budget, seq_len=1
    )
    assert summary["steps"] == 8000 and summary["chars_seen"] == budget
    assert adding_metrics(params, "tanh", task)["mse"] > 0.75 * adding_baseline(task)


def test_training_on_memory_capacity_beats_answering_zero(tmp_path, tiny_settings):
    data = {"name": "memory_capacity", "length": 60, "max_delay": 20, "val_sequences": 20}
    summary, params, task = _trained(
        tmp_path, tiny_settings, data=data, steps=400, seq_len=60, hidden_size=8, batch_size=8
    )
    assert summary["val_loss"] < 0.8 * task.baselines()["input_variance"]
    mc = memory_capacity_metrics(params, "tanh", task)["memory_capacity"]
    assert 2.0 < mc <= 8 + 0.1
