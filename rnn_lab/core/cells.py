"""One interface over the three cells: the vanilla RNN (engine.py), the GRU and the LSTM (gated.py).

The trainer, the analysis and the sampler ask for a cell by name and call these functions; they
never branch on the cell themselves. The carried state is always a tuple of (B, H) arrays:
``(h,)`` for rnn and gru, ``(h, c)`` for lstm. Every diagnostic keeps one meaning across cells
(see gated.py's docstring): the recurrent weights are split into H x H blocks (``W_hh`` for
rnn, one per gate letter for gru/lstm); the spectral radius of a network is the largest over its
blocks; the eigenvalues recorded over training are those of the block that plays W_hh's role
in the candidate state (W_hh; the GRU's n block; the LSTM's g block).
"""

from __future__ import annotations

import numpy as np

from rnn_lab.core import engine, gated
from rnn_lab.core.inits import CELL_NAMES, check_cell, param_names

__all__ = ["CELL_NAMES", "check_cell", "param_names"]

# The block whose eigenvalues stand for "W_hh" in per-record diagnostics.
CANDIDATE_BLOCK = {"rnn": "W_hh", "gru": "n", "lstm": "g"}
# The gate whose saturation `saturation` reports (the one that decides what the state keeps).
MEMORY_GATE = {"gru": "z", "lstm": "f"}
RECURRENT_WEIGHT = {"rnn": "W_hh", "gru": "weight_hh_l0", "lstm": "weight_hh_l0"}


def cell_of(params) -> str:
    """'rnn' for engine.Params, else the gated parameters' cell."""
    return "rnn" if isinstance(params, engine.Params) else params.cell


def check_activation(cell: str, activation: str) -> None:
    """The vanilla cell takes any activation; gated cells only tanh (torch's fixed choice)."""
    if cell != "rnn":
        gated.check_activation(cell, activation)


def n_state(cell: str) -> int:
    return 2 if cell == "lstm" else 1


def zero_state(cell: str, batch_size: int, hidden_size: int, dtype) -> tuple[np.ndarray, ...]:
    return tuple(np.zeros((batch_size, hidden_size), dtype=dtype) for _ in range(n_state(cell)))


def params_from_arrays(cell: str, arrays):
    """The cell's parameters among named arrays (a checkpoint, a dict), copied."""
    if cell == "rnn":
        return engine.Params.from_arrays(arrays)
    return gated.CELLS[cell].params_cls.from_arrays(arrays)


def pack(params):
    return engine.pack(params)  # every cell's parameter class is an engine.NamedParams


def forward(params, inputs: np.ndarray, state: tuple, act: engine.Activation):
    """One chunk: engine.ForwardCache or gated.GatedCache (both have .hs, .logits)."""
    if cell_of(params) == "rnn":
        return engine.forward(params, inputs, state[0], act)
    return gated.forward(params, inputs, state)


def final_state(cache) -> tuple[np.ndarray, ...]:
    """The state to carry into the next chunk (views of the cache)."""
    return cache.final_state if isinstance(cache, gated.GatedCache) else (cache.hs[-1],)


# why: the engine's backward options, passed through by name.
def backward(
    params,
    cache,
    dlogits: np.ndarray,
    act: engine.Activation,
    *,
    freeze_whh: bool,
    clip: float,
    clip_mode: str,
    profile: bool,
) -> engine.Gradients:
    options = {"freeze_whh": freeze_whh, "clip": clip, "clip_mode": clip_mode, "profile": profile}
    if cell_of(params) == "rnn":
        return engine.backward(params, cache, dlogits, act, **options)
    return gated.backward(params, cache, dlogits, **options)


def recurrent_blocks(params) -> dict[str, np.ndarray]:
    """The H x H recurrent blocks by name: {"W_hh": ...} or one per gate letter."""
    if cell_of(params) == "rnn":
        return {"W_hh": params.W_hh}
    return params.recurrent_blocks()


def recurrent_weight(params) -> np.ndarray:
    """W_hh (H, H) or weight_hh_l0 (G H, H): what freeze_whh freezes and snapshots keep."""
    return getattr(params, RECURRENT_WEIGHT[cell_of(params)])


def spectral_radii(params) -> dict[str, float]:
    """The spectral radius of each H x H recurrent block, by name (W_hh, or gate letter)."""
    return {
        name: float(np.max(np.abs(np.linalg.eigvals(W))))
        for name, W in recurrent_blocks(params).items()
    }


def spectral_radius(params) -> float:
    """The largest spectral radius over the recurrent blocks (W_hh's own for rnn)."""
    if cell_of(params) == "rnn":
        return engine.spectral_radius(params.W_hh)
    return max(spectral_radii(params).values())


def sigma_max(params) -> float:
    """The largest spectral norm over the recurrent blocks."""
    return max(float(np.linalg.norm(W, 2)) for W in recurrent_blocks(params).values())


def candidate_block(params) -> np.ndarray:
    """The block whose eigenvalues stand for W_hh's (see CANDIDATE_BLOCK)."""
    return recurrent_blocks(params)[CANDIDATE_BLOCK[cell_of(params)]]


def jacobian_products(params, cache, act: engine.Activation, lags: int) -> dict[str, np.ndarray]:
    """Norms of ds_T/ds_{T-k} against the lag k (stream 0), the same keys for every cell."""
    if cell_of(params) == "rnn":
        return engine.jacobian_products(params, cache.hs, act, lags)
    return gated.jacobian_products(params, cache, lags)


def saturation(cache, act: engine.Activation) -> float:
    """rnn: units near the bounds of f (dead relu units); gated: the update gate z (GRU) or
    the forget gate f (LSTM) within 0.05 of 0 or 1."""
    if isinstance(cache, gated.GatedCache):
        return gated.saturation(cache)
    h = cache.hs[1:]  # (T, B, H)
    if act.high is None:
        return float(np.mean(np.all(h <= 0.0, axis=(0, 1))))
    return float(np.mean((h - act.low < 0.05) | (act.high - h < 0.05)))


def gate_saturation(cache) -> dict[str, float]:
    """Per gate letter (gated cells); {} for the vanilla cell."""
    return gated.gate_saturation(cache) if isinstance(cache, gated.GatedCache) else {}


def gate_names(cell: str) -> tuple[str, ...]:
    return () if cell == "rnn" else gated.CELLS[cell].gate_names


def block_names(cell: str) -> tuple[str, ...]:
    return ("W_hh",) if cell == "rnn" else gated.CELLS[cell].gate_names


# why: the sampler's inputs, as engine.sample takes them.
def sample(
    params,
    act: engine.Activation,
    prime: list[int],
    length: int,
    temperature: float,
    rng: np.random.Generator,
) -> list[int]:
    """``length`` indices after a primed sequence, as engine.sample (same RNG use per char)."""
    if cell_of(params) == "rnn":
        return engine.sample(params, act, prime, length, temperature, rng)
    prime = [int(i) for i in prime]
    if not prime:
        raise ValueError("sample: the prime must hold at least one character")
    state = zero_state(cell_of(params), 1, params.hidden_size, params.dtype)
    if len(prime) > 1:
        warm = gated.forward(params, np.asarray(prime[:-1]).reshape(-1, 1), state)
        state = tuple(s.copy() for s in warm.final_state)
    idx, out = prime[-1], []
    for _ in range(length):
        cache = gated.forward(params, np.array([[idx]]), state)
        state = tuple(s.copy() for s in cache.final_state)
        logits = cache.logits[0, 0]
        if temperature <= 0:
            idx = int(np.argmax(logits))
        else:
            p = engine.softmax(logits.astype(np.float64) / temperature)
            idx = int(np.searchsorted(np.cumsum(p), rng.random() * p.sum(), side="right"))
            idx = min(idx, p.shape[0] - 1)
        out.append(idx)
    return out


def run_hidden(params, inputs: np.ndarray, state: tuple, act: engine.Activation) -> np.ndarray:
    """Hidden states h_0..h_T only: (T+1, B, H). For analysis over long texts."""
    if cell_of(params) == "rnn":
        return engine.run_hidden(params, inputs, state[0], act)
    return gated.forward(params, inputs, state).hs
