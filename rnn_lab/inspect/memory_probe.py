"""The memory probe: how many characters back a linear readout can decode from the hidden
state (see :func:`memory_probe`)."""

from __future__ import annotations

import numpy as np

from rnn_lab.inspect.network_states import majority_rate

MEMORY_MARGIN = 0.05  # a lag counts as remembered when accuracy > chance + this
RIDGE_LAMBDA = 1e-2  # ridge penalty, times the mean eigenvalue of the states' covariance
# The memory probe's states: its cost is rows x H x V per lag (2 x seq_len lags, two networks),
# 40 s at H=256, V=86, seq_len=50 on 90k rows. Above the Elman corpus's ~11k training states
# and ~1.2k validation states, so its runs are probed on every state.
PROBE_FIT_ROWS = 16_384
PROBE_SCORE_ROWS = 4_096


def memory_probe(
    states: np.ndarray,
    ids: np.ndarray,
    split: int,
    max_lag: int,
    vocab_size: int,
    margin: float = MEMORY_MARGIN,
) -> dict:
    """Decode the character k steps back from the state, k = 0 .. max_lag.

    One ridge readout per lag (closed form, one-vs-rest on one-hot targets, bias by
    centring): fit on the states of the training text, scored (argmax accuracy) on the
    validation text (the last PROBE_FIT_ROWS states before split and the first
    PROBE_SCORE_ROWS from it). Lag 0 is the character just read (a sanity check, not memory);
    lag k is the character read k steps before it. memory_span: the number of lags, counting
    from 1, whose accuracy stays above chance + margin, where chance is the majority-class
    rate of the validation characters scored. input_only_accuracy: the same decoding from the
    current character alone (a table fit on the training text), i.e. what the text's
    statistics give without any memory.
    """
    ids = np.asarray(ids)
    states = np.asarray(states, dtype=np.float64)  # float32 runs: solve in double precision
    N, H = states.shape
    # the same rows for every lag: one Gram matrix
    train_rows = np.arange(max(max_lag, split - PROBE_FIT_ROWS), split)
    val_rows = np.arange(max(split, max_lag), N)[:PROBE_SCORE_ROWS]
    X = states[train_rows]
    mean = X.mean(axis=0)
    Xc = X - mean
    gram = Xc.T @ Xc
    lam = RIDGE_LAMBDA * max(float(np.trace(gram)) / H, 1e-12)
    chol = np.linalg.cholesky(gram + lam * np.eye(H))
    X_val = states[val_rows] - mean
    chance = majority_rate(ids[split : split + PROBE_SCORE_ROWS])
    # Per lag, the centred one-hot targets one_hot(y) - y_mean, built bit for bit without the
    # one-hot: y_mean is the class counts / n (what one_hot.mean(axis=0) computes: an exact
    # integer sum, then the division), and row i is row y_i of a (V, V) table whose entries
    # are 0.0 - y_mean and, on the diagonal, 1.0 - y_mean. One (n, V) buffer serves every lag.
    n = len(train_rows)
    classes = np.arange(vocab_size)
    centred_rows = np.empty((vocab_size, vocab_size))
    centred = np.empty((n, vocab_size))
    inputs_train, inputs_val = ids[train_rows], ids[val_rows]
    # The input-only table's flat index, less the target (intp: ids may be uint8).
    pairs = inputs_train.astype(np.intp) * vocab_size
    accuracy, input_only = [], []
    for k in range(max_lag + 1):
        y_train = ids[train_rows - k]
        y_val = ids[val_rows - k]
        y_mean = np.bincount(y_train, minlength=vocab_size) / n
        centred_rows[:] = 0.0 - y_mean
        centred_rows[classes, classes] = 1.0 - y_mean
        # mode="clip" (unbuffered): no id is out of range here, bincount has seen them all (a
        # negative id is an error there, one >= V makes y_mean too long for the table).
        np.take(centred_rows, y_train, axis=0, out=centred, mode="clip")
        rhs = Xc.T @ centred
        W = np.linalg.solve(chol.T, np.linalg.solve(chol, rhs))  # (H, V)
        predicted = (X_val @ W + y_mean).argmax(axis=1)
        accuracy.append(float((predicted == y_val).mean()))
        # The input-only table: counts of (current character, character k back), exact ints.
        table = np.bincount(pairs + y_train, minlength=vocab_size * vocab_size)
        table = table.reshape(vocab_size, vocab_size)
        input_only.append(float((table.argmax(axis=1)[inputs_val] == y_val).mean()))
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
