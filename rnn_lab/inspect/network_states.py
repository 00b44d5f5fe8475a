"""The hidden states of a network reading a text, and the pieces every text metric of the
analysis (rnn_lab.inspect.analysis) reads: the words of a text, a 2-D PCA, the majority-class
rate, the path of the hidden state.

``states[t]`` is the hidden state right after the network has read character ``t`` of the
text, the whole text run as one stream from h = 0 (as the trainer walks it).
"""

from __future__ import annotations

import numpy as np

from rnn_lab.core import cells, engine

TRAJECTORY_LENGTH = 100  # first characters of the validation text drawn as a PCA path
# Time steps per forward call when a gated cell's states are computed (its forward keeps every
# gate value: bounded chunks keep the memory bounded; the state carries across, so exact).
STATE_CHUNK = 4096


def hidden_states(params, activation: str, ids: np.ndarray) -> np.ndarray:
    """(N, H): the hidden state h after reading each character of ids, one stream from the
    zero state (any cell: for the LSTM, h_t; its cell state c_t carries along unseen)."""
    return run_states(params, activation, ids)[0]


def run_states(params, activation: str, ids: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """(states (N, H) as hidden_states, gate saturation over those N steps by gate letter).

    The gate saturation (cells.gate_saturation: the fraction of gate values within 0.05 of the
    ends of their range) is {} for the vanilla cell, which has no gates."""
    act = engine.get_activation(activation)
    cell = cells.cell_of(params)
    inputs = np.asarray(ids)[:, None]
    state = cells.zero_state(cell, 1, params.hidden_size, params.dtype)
    if cell == "rnn":  # no gates: the states alone, in one call (as before gated cells)
        return cells.run_hidden(params, inputs, state, act)[1:, 0], {}
    states = np.empty((len(inputs), params.hidden_size), dtype=params.dtype)
    near: dict[str, float] = {}
    for start in range(0, len(inputs), STATE_CHUNK):
        cache = cells.forward(params, inputs[start : start + STATE_CHUNK], state, act)
        n = cache.hs.shape[0] - 1
        states[start : start + n] = cache.hs[1:, 0]
        for gate, fraction in cells.gate_saturation(cache).items():
            near[gate] = near.get(gate, 0.0) + fraction * n
        state = tuple(np.array(x) for x in cells.final_state(cache))
    return states, {g: v / max(1, len(inputs)) for g, v in near.items()}


def output_logits(params, states: np.ndarray) -> np.ndarray:
    """(N, V): the next-character logits of each state."""
    return states @ params.W_hy.T + params.b_y


def word_spans(text: str) -> list[tuple[str, int, int]]:
    """(word, first index, last index) of every whitespace-separated word of text."""
    spans, start = [], None
    for i, c in enumerate(text):
        if c.isspace():
            if start is not None:
                spans.append((text[start:i], start, i - 1))
                start = None
        elif start is None:
            start = i
    if start is not None:
        spans.append((text[start:], start, len(text) - 1))
    return spans


def pca_2d(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Project rows of X onto their first two principal axes (SVD of the centred rows).

    Returns (coords (N, 2), axes (2, H), explained variance ratio of the two axes)."""
    Xc = X - X.mean(axis=0)
    _, s, Vt = np.linalg.svd(Xc, full_matrices=False)
    total = float((s**2).sum())
    k = min(2, Vt.shape[0])
    axes = np.zeros((2, X.shape[1]))
    axes[:k] = Vt[:k]
    explained = [float(s[i] ** 2 / total) if total > 0 and i < k else 0.0 for i in range(2)]
    return Xc @ axes.T, axes, explained


def majority_rate(labels) -> float:
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    return float(counts.max() / counts.sum())


def hidden_trajectory(
    states: np.ndarray, text: str, split: int, length: int = TRAJECTORY_LENGTH
) -> dict:
    """About the first `length` characters of the validation text, from its first whole
    word, as a path in the 2-D PCA of all the validation states (the axes come from the
    whole validation text, not the excerpt)."""
    val_states = states[split:]
    _, axes, explained = pca_2d(val_states)
    first_space = next((i for i, c in enumerate(text[split:]) if c.isspace()), -1)
    start = split + first_space + 1 if 0 <= first_space < len(text) - split - 1 else split
    excerpt = states[start : start + length]
    coords = (excerpt - val_states.mean(axis=0)) @ axes.T
    return {
        "start": start,
        "text": text[start : start + len(excerpt)],
        "pca": coords.tolist(),
        "pca_explained_variance": explained,
    }
