"""Parameter initialisation, drawn with ``torch.nn.init`` so a seed gives PyTorch's weights.

W_xh and W_hy are xavier uniform and biases zero (the seed's choice); W_hh is the ablation
axis. The draws happen in the seed's order (W_xh, W_hh, W_hy) after ``torch.manual_seed``,
in float32 as the seed's ``nn.Parameter(torch.empty(...))`` does, then cast to the engine
dtype. Adding an embedding draws after the five arrays, so they stay the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rnn_lab.core.engine import PARAM_NAMES, Params

# torch is imported inside the functions that draw weights: importing it costs ~2 s, and the
# process that launches a sweep (or builds a report) never needs it.


def _orthogonal(w) -> None:
    import torch

    # Every eigenvalue has |lambda| = 1: the Jacobian product neither grows nor shrinks.
    torch.nn.init.orthogonal_(w)


def _xavier(w) -> None:
    import torch

    torch.nn.init.xavier_uniform_(w)  # bound sqrt(6 / (H + H)), not RNN-specific


def _random(w) -> None:
    import torch

    # N(0, 0.01): spectral radius ~ 0.01 sqrt(H), the seed's worst case for gradient flow.
    torch.nn.init.normal_(w, mean=0.0, std=0.01)


def _identity(w) -> None:
    import torch

    # IRNN (Le et al. 2015): h carries over unchanged; meant for relu.
    torch.nn.init.eye_(w)


INITS: dict[str, Callable[[object], None]] = {
    "orthogonal": _orthogonal,
    "xavier": _xavier,
    "random": _random,
    "identity": _identity,
}
# "file" is an init too, handled by load_params_file (it replaces all five arrays).
INIT_NAMES = tuple(INITS) + ("file",)


def init_params(
    input_size: int,
    hidden_size: int,
    output_size: int,
    *,
    init: str = "orthogonal",
    scale: float = 1.0,
    seed: int = 42,
    embed_dim: int = 0,
    dtype=np.float64,
) -> Params:
    """Fresh parameters. input_size is V for one-hot characters (or D for real inputs).

    embed_dim > 0 adds a learned embedding E: (embed_dim, input_size); W_xh is then
    (H, embed_dim). ``scale`` multiplies W_hh after its init (e.g. orthogonal * 1.1).
    """
    if init not in INITS:
        raise ValueError(f"init.name: unknown {init!r}; valid: {', '.join(INIT_NAMES)}")
    import torch

    H = hidden_size
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        in_cols = embed_dim if embed_dim > 0 else input_size
        W_xh = torch.empty(H, in_cols)
        torch.nn.init.xavier_uniform_(W_xh)
        W_hh = torch.empty(H, H)
        INITS[init](W_hh)
        W_hy = torch.empty(output_size, H)
        torch.nn.init.xavier_uniform_(W_hy)
        E = None
        if embed_dim > 0:
            E = torch.empty(embed_dim, input_size)
            torch.nn.init.normal_(E, mean=0.0, std=0.1)  # the seed's randn * 0.1
    finally:
        # Leave the caller's torch RNG as it was: init must not perturb anything else.
        torch.random.set_rng_state(gen_state)
    params = Params(
        W_xh=W_xh.numpy().astype(dtype),
        W_hh=(W_hh.numpy().astype(dtype) * dtype(scale)),
        W_hy=W_hy.numpy().astype(dtype),
        b_h=np.zeros(H, dtype=dtype),
        b_y=np.zeros(output_size, dtype=dtype),
        E=None if E is None else E.numpy().astype(dtype),
    )
    return params


def expected_shapes(
    input_size: int, hidden_size: int, output_size: int, embed_dim: int = 0
) -> dict[str, tuple[int, ...]]:
    H = hidden_size
    shapes = {
        "W_xh": (H, embed_dim if embed_dim > 0 else input_size),
        "W_hh": (H, H),
        "W_hy": (output_size, H),
        "b_h": (H,),
        "b_y": (output_size,),
    }
    if embed_dim > 0:
        shapes["E"] = (embed_dim, input_size)
    return shapes


def check_params_file(
    path: str | Path, input_size: int, hidden_size: int, output_size: int, embed_dim: int = 0
) -> None:
    """Raise ValueError naming the array and both shapes when the file does not fit."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"init.path: file {str(path)!r} does not exist")
    try:
        with np.load(p, allow_pickle=False) as z:
            found = {k: z[k].shape for k in z.files}
    except Exception as e:  # a truncated or non-npz file
        raise ValueError(f"init.path: {str(path)!r} is not a readable .npz file ({e})") from None
    want = expected_shapes(input_size, hidden_size, output_size, embed_dim)
    missing = [k for k in PARAM_NAMES if k not in found]
    if missing:
        raise ValueError(
            f"init.path: {str(path)!r} lacks arrays {missing}; it must hold "
            f"{', '.join(PARAM_NAMES)} (found: {', '.join(sorted(found)) or 'none'})"
        )
    for k, shape in want.items():
        if k == "E" and k not in found:
            continue  # a fresh embedding is drawn when the file has none
        # Biases may be stored as (H, 1) column vectors, as the seed does.
        got = found[k]
        if got != shape and not (len(shape) == 1 and got == (shape[0], 1)):
            raise ValueError(
                f"init.path: array {k} in {str(path)!r} has shape {got}, but this run "
                f"(V={input_size}, H={hidden_size}) needs {shape}"
            )


def load_params_file(
    path: str | Path,
    input_size: int,
    hidden_size: int,
    output_size: int,
    *,
    seed: int = 42,
    embed_dim: int = 0,
    scale: float = 1.0,
    dtype=np.float64,
) -> Params:
    """Start from saved weights (arrays named W_xh, W_hh, W_hy, b_h, b_y; E optional)."""
    check_params_file(path, input_size, hidden_size, output_size, embed_dim)
    with np.load(path, allow_pickle=False) as z:
        # Only the parameter arrays: a checkpoint.npz also holds optimiser state and metadata.
        arrays = {k: np.asarray(z[k], dtype=dtype) for k in (*PARAM_NAMES, "E") if k in z.files}
    E = arrays.get("E") if embed_dim > 0 else None
    if embed_dim > 0 and E is None:
        E = init_params(
            input_size, hidden_size, output_size, seed=seed, embed_dim=embed_dim, dtype=dtype
        ).E
    return Params(
        W_xh=arrays["W_xh"],
        W_hh=arrays["W_hh"] * dtype(scale),
        W_hy=arrays["W_hy"],
        b_h=arrays["b_h"].reshape(-1),
        b_y=arrays["b_y"].reshape(-1),
        E=E,
    )


def xavier_bound(fan_in: int, fan_out: int) -> float:
    return math.sqrt(6.0 / (fan_in + fan_out))
