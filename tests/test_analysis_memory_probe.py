"""memory_probe is bit for bit the straightforward probe it replaced (one-hot targets, their
mean, np.add.at for the input-only table): results computed before came from that one."""

from __future__ import annotations

import numpy as np
import pytest

from rnn_lab.core.data import Vocab, generate_elman_corpus, split_ids
from rnn_lab.inspect.analysis import initial_params
from rnn_lab.inspect.load import load_run
from rnn_lab.inspect.memory_probe import MEMORY_MARGIN, RIDGE_LAMBDA, memory_probe
from rnn_lab.inspect.network_states import hidden_states, majority_rate
from rnn_lab.run.settings import TrainSettings
from rnn_lab.run.trainer import train


def reference_memory_probe(states, ids, split, max_lag, vocab_size, margin=MEMORY_MARGIN):
    """The probe as first written: a (n, V) one-hot per lag, centred by its column mean."""
    ids = np.asarray(ids)
    states = np.asarray(states, dtype=np.float64)
    N, H = states.shape
    train_rows = np.arange(max_lag, split)
    val_rows = np.arange(max(split, max_lag), N)
    X = states[train_rows]
    mean = X.mean(axis=0)
    Xc = X - mean
    gram = Xc.T @ Xc
    lam = RIDGE_LAMBDA * max(float(np.trace(gram)) / H, 1e-12)
    chol = np.linalg.cholesky(gram + lam * np.eye(H))
    X_val = states[val_rows] - mean
    chance = majority_rate(ids[split:])
    accuracy, input_only = [], []
    for k in range(max_lag + 1):
        y_train = ids[train_rows - k]
        y_val = ids[val_rows - k]
        one_hot = np.zeros((len(train_rows), vocab_size))
        one_hot[np.arange(len(train_rows)), y_train] = 1.0
        y_mean = one_hot.mean(axis=0)
        rhs = Xc.T @ (one_hot - y_mean)
        W = np.linalg.solve(chol.T, np.linalg.solve(chol, rhs))
        predicted = (X_val @ W + y_mean).argmax(axis=1)
        accuracy.append(float((predicted == y_val).mean()))
        table = np.zeros((vocab_size, vocab_size))
        np.add.at(table, (ids[train_rows], y_train), 1.0)
        input_only.append(float((table.argmax(axis=1)[ids[val_rows]] == y_val).mean()))
    span = 0
    for acc in accuracy[1:]:
        if acc <= chance + margin:
            break
        span += 1
    return {
        "lags": list(range(1, max_lag + 1)),
        "accuracy": accuracy[1:],
        "lag0_accuracy": accuracy[0],
        "input_only_accuracy": input_only[1:],
        "chance": chance,
        "chance_kind": "majority-class rate of the validation characters",
        "margin": margin,
        "span": span,
        "ridge_lambda": lam,
    }


def assert_same_probe(states, ids, split, max_lag, vocab_size):
    new = memory_probe(states, ids, split, max_lag, vocab_size)
    old = reference_memory_probe(states, ids, split, max_lag, vocab_size)
    assert new.keys() == old.keys()
    for key in old:
        assert new[key] == old[key], key  # exact: every accuracy, the span, ridge_lambda
    assert new == old
    return new


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_memory_probe_is_exact_on_a_trained_and_an_untrained_network(tmp_path, dtype):
    """The analysis's own inputs: the Elman corpus (uint8 ids), its split and max_lag."""
    settings = dict(
        steps=150,
        hidden_size=24,
        seq_len=12,
        optim={"name": "adam"},
        lr=0.01,
        dtype=dtype,
        val_interval=0,
        checkpoint_interval=0,
        log_interval=0,
        analyze=False,
        record=False,
    )
    train(TrainSettings(**settings), tmp_path)
    run = load_run(tmp_path)
    vocab = Vocab(run.vocab)
    ids = vocab.encode(generate_elman_corpus())
    assert ids.dtype == np.uint8
    split = len(split_ids(ids, 0.1)[0])
    max_lag = max(1, min(2 * settings["seq_len"], split // 4))
    init = initial_params(run.settings, vocab.size)
    for params in (run.params(), init):
        states = hidden_states(params, "tanh", ids)
        assert states.dtype == np.dtype(dtype)
        r = assert_same_probe(states, ids, split, max_lag, vocab.size)
        assert r["accuracy"][0] > r["chance"]  # a real probe, not a degenerate one
        assert len(set(r["accuracy"])) > 1 and len(set(r["input_only_accuracy"])) > 1


@pytest.mark.parametrize(
    "N, H, V, max_lag, split, dtype, ids_dtype",
    [
        (3000, 16, 8, 10, 2700, np.float64, np.uint8),
        (3000, 16, 8, 10, 2700, np.float32, np.uint8),
        (5000, 64, 24, 50, 4500, np.float64, np.uint8),
        (4000, 33, 300, 7, 3000, np.float32, np.uint16),  # many classes, some never seen
        (2000, 5, 3, 1, 1000, np.float64, np.int64),
        (1500, 40, 12, 60, 200, np.float64, np.int32),  # few training rows, H near them
        (2500, 20, 30, 25, 2499, np.float32, np.uint8),  # one validation row
    ],
)
def test_memory_probe_is_exact_on_random_tanh_states(N, H, V, max_lag, split, dtype, ids_dtype):
    """A random tanh network's states on random text, whose class frequencies are skewed (so
    the class means differ) and, with V=300, leave classes out of the training rows."""
    rng = np.random.default_rng(N + H + V)
    p = rng.random(V) ** 3
    ids = rng.choice(V, size=N, p=p / p.sum()).astype(ids_dtype)
    W_xh = rng.normal(0, 1.0, (V, H))
    W_hh = rng.normal(0, 1.2 / np.sqrt(H), (H, H))
    states = np.empty((N, H))
    h = np.zeros(H)
    for t in range(N):
        h = np.tanh(W_xh[ids[t]] + h @ W_hh)
        states[t] = h
    assert_same_probe(states.astype(dtype), ids, split, max_lag, V)


def test_memory_probe_is_exact_on_exact_one_hot_states():
    """States that are one-hots of the last characters: many exact ties and exact zeros."""
    rng = np.random.default_rng(0)
    V, N = 5, 4000
    ids = rng.integers(0, V, N)
    eye = np.eye(V)
    states = np.concatenate([eye[ids], eye[np.roll(ids, 1)], eye[np.roll(ids, 2)]], axis=1)
    r = assert_same_probe(states, ids, 3000, 6, V)
    assert r["span"] == 2
