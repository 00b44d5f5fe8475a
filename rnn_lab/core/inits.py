"""Parameter initialisation, drawn with ``torch.nn.init`` so a seed gives PyTorch's weights.

W_xh and W_hy are xavier uniform and biases zero (the seed's choice); W_hh is the ablation
axis. The draws happen in the seed's order (W_xh, W_hh, W_hy) after ``torch.manual_seed``,
in float32 as the seed's ``nn.Parameter(torch.empty(...))`` does, then cast to the engine
dtype. Adding an embedding draws after the five arrays, so they stay the same.
"""

from __future__ import annotations

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


def _read_params_file(path: str | Path) -> dict[str, np.ndarray]:
    """The parameter arrays of a .npz (a checkpoint.npz also holds optimiser state: ignored)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"init.path: file {str(path)!r} does not exist")
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in (*PARAM_NAMES, "E") if k in z.files} | {
                "_files": np.array(sorted(z.files))
            }
    except Exception as e:  # a truncated or non-npz file, a pickled payload
        raise ValueError(f"init.path: {str(path)!r} is not a readable .npz file ({e})") from None


def check_params_arrays(arrays: dict, path, sizes: tuple[int, int, int], embed_dim: int) -> None:
    """Raise ValueError naming the array when one is missing, misshapen or not finite."""
    missing = [k for k in PARAM_NAMES if k not in arrays]
    if missing:
        found = ", ".join(str(f) for f in arrays.get("_files", [])) or "none"
        raise ValueError(
            f"init.path: {str(path)!r} lacks arrays {missing}; it must hold "
            f"{', '.join(PARAM_NAMES)} (found: {found})"
        )
    for k, shape in expected_shapes(*sizes, embed_dim).items():
        if k == "E" and k not in arrays:
            continue  # a fresh embedding is drawn when the file has none
        got = arrays[k].shape
        # Biases may be stored as (H, 1) column vectors, as the seed does.
        if got != shape and not (len(shape) == 1 and got == (shape[0], 1)):
            raise ValueError(
                f"init.path: array {k} in {str(path)!r} has shape {got}, but this run "
                f"(V={sizes[0]}, H={sizes[1]}) needs {shape}"
            )
        if not np.issubdtype(arrays[k].dtype, np.number):
            raise ValueError(f"init.path: array {k} in {str(path)!r} is not numeric")
        bad = int(np.size(arrays[k]) - np.count_nonzero(np.isfinite(arrays[k])))
        if bad:
            raise ValueError(
                f"init.path: array {k} in {str(path)!r} has {bad} non-finite values (NaN or "
                "inf; a diverged run's checkpoint?); use weights with finite values"
            )


def load_params_file(
    path: str | Path,
    sizes: tuple[int, int, int],
    *,
    seed: int = 42,
    embed_dim: int = 0,
    scale: float = 1.0,
    dtype=np.float64,
) -> Params:
    """Start from saved weights (arrays named W_xh, W_hh, W_hy, b_h, b_y; E optional), after
    checking their shapes and that every value is finite. sizes = (V or D, H, O)."""
    raw = _read_params_file(path)
    check_params_arrays(raw, path, sizes, embed_dim)
    arrays = {k: np.asarray(v, dtype=dtype) for k, v in raw.items() if k != "_files"}
    E = arrays.get("E") if embed_dim > 0 else None
    if embed_dim > 0 and E is None:
        E = init_params(*sizes, seed=seed, embed_dim=embed_dim, dtype=dtype).E
    return Params(
        W_xh=arrays["W_xh"],
        W_hh=arrays["W_hh"] * dtype(scale),
        W_hy=arrays["W_hy"],
        b_h=arrays["b_h"].reshape(-1),
        b_y=arrays["b_y"].reshape(-1),
        E=E,
    )


def build_params(init: dict, sizes: tuple[int, int, int], *, seed, embed_dim, dtype) -> Params:
    """The parameters a run starts from, by its init settings ({name, scale, path})."""
    name = init.get("name", "orthogonal")
    scale = float(init.get("scale", 1.0) or 1.0)
    if name == "file":
        path = init.get("path") or ""
        return load_params_file(
            path, sizes, seed=seed, embed_dim=embed_dim, scale=scale, dtype=dtype
        )
    return init_params(*sizes, init=name, scale=scale, seed=seed, embed_dim=embed_dim, dtype=dtype)
