"""Parameter initialisation, drawn with ``torch.nn.init`` so a seed gives PyTorch's weights.

W_xh and W_hy are xavier uniform and biases zero (the walkthrough's choice); W_hh is the ablation
axis. The draws happen in the walkthrough's order (W_xh, W_hh, W_hy) after ``torch.manual_seed``,
in float32 as the walkthrough's ``nn.Parameter(torch.empty(...))`` does, then cast to the engine
dtype. Adding an embedding draws after the five arrays, so they stay the same.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from rnn_lab.core import gated
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

    # N(0, 0.01): spectral radius ~ 0.01 sqrt(H), the walkthrough's worst case for gradient flow.
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
# "torch": every array as torch's own modules draw them (nn.RNN / nn.GRU / nn.LSTM(D, H), then
# nn.Linear(H, O)); "file" replaces the arrays with saved ones (params_from_arrays).
INIT_NAMES = tuple(INITS) + ("torch", "file")
CELL_NAMES = ("rnn", "gru", "lstm")


def check_cell(cell: str) -> None:
    if cell not in CELL_NAMES:
        raise ValueError(f"cell.name: unknown {cell!r}; valid: {', '.join(CELL_NAMES)}")


# why: the three sizes plus keyword-only init options (the cell and the LSTM forget bias
# among them); a settings object would hide what the seeding depends on.
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
    cell: str = "rnn",
    forget_bias: float | None = None,
    draws=None,
):
    """Fresh parameters of a cell (engine.Params for "rnn", gated.GRUParams/LSTMParams).

    input_size is V for one-hot characters (or D for real inputs). embed_dim > 0 adds a learned
    embedding E: (embed_dim, input_size), drawn last (N(0, 0.1)), so the other arrays stay the
    same. ``init`` acts on the recurrent weights: on W_hh, or on each gate's H x H block of
    weight_hh_l0 (orthogonal per block, identity, ...); ``scale`` then multiplies them. The
    input weights are xavier uniform (per gate block), W_hy xavier, biases zero; drawn in the
    order input, recurrent, output after ``torch.manual_seed(seed)``, in float32 as torch
    does, then cast to dtype. init="torch": torch's own modules' draws (uniform +-1/sqrt(H)).
    forget_bias (LSTM only): the forget gate's total bias b_if + b_hf (b_if = it, b_hf = 0).
    The caller's torch RNG state is left as it was. draws: a store of earlier draws,
    ``draws(args, draw) -> arrays`` (rnn_lab.run.init_cache keeps them on disk: drawn before,
    they are read back bit for bit without importing torch); None draws every time.
    """
    check_cell(cell)
    if init not in INITS and init != "torch":
        raise ValueError(f"init.name: unknown {init!r}; valid: {', '.join(INIT_NAMES)}")
    if forget_bias is not None and cell != "lstm":
        raise ValueError(f"forget_bias: only the LSTM has a forget gate (cell={cell})")
    # Drawn before on this machine (same torch, code, sizes, init, cell, seed): no torch import.
    args = dict(cell=cell, init=init, input_size=input_size, hidden_size=hidden_size,
                output_size=output_size, embed_dim=embed_dim, seed=int(seed))  # fmt: skip
    drawn = draws(args, lambda: draw_arrays(**args)) if draws is not None else draw_arrays(**args)
    out = {n: a.astype(dtype) for n, a in drawn.items()}
    recurrent = "W_hh" if cell == "rnn" else "weight_hh_l0"
    out[recurrent] = out[recurrent] * dtype(scale)
    if forget_bias is not None:
        H = hidden_size
        out["bias_ih_l0"][H : 2 * H] = forget_bias
        out["bias_hh_l0"][H : 2 * H] = 0.0
    if cell == "rnn":
        return Params(**out)
    return gated.CELLS[cell].params_cls(**out)


def draw_arrays(
    *,
    cell: str,
    init: str,
    input_size: int,
    hidden_size: int,
    output_size: int,
    embed_dim: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """The arrays torch draws for init_params (float32, before dtype, scale and forget_bias):
    what a draws store keeps. The caller's torch RNG state is left as it was."""
    import torch

    in_cols = embed_dim if embed_dim > 0 else input_size
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        if init == "torch":
            arrays = _torch_module_draws(cell, in_cols, hidden_size, output_size)
        else:
            arrays = _block_draws(cell, init, in_cols, hidden_size, output_size)
        if embed_dim > 0:
            E = torch.empty(embed_dim, input_size)
            torch.nn.init.normal_(E, mean=0.0, std=0.1)  # the walkthrough's randn * 0.1
            arrays["E"] = E
    finally:
        # Leave the caller's torch RNG as it was: init must not perturb anything else.
        torch.random.set_rng_state(gen_state)
    return {n: a.numpy() for n, a in arrays.items()}


def _block_draws(cell: str, init: str, in_cols: int, H: int, O: int) -> dict:
    """The rnn_lab init: xavier input (per gate block), ``init`` recurrent (per gate block),
    xavier output, zero biases; in that order (the walkthrough's W_xh, W_hh, W_hy)."""
    import torch

    G = 1 if cell == "rnn" else gated.CELLS[cell].n_gates
    W_in = torch.empty(G * H, in_cols)
    for k in range(G):
        torch.nn.init.xavier_uniform_(W_in[k * H : (k + 1) * H])
    W_rec = torch.empty(G * H, H)
    for k in range(G):
        INITS[init](W_rec[k * H : (k + 1) * H])
    W_hy = torch.empty(O, H)
    torch.nn.init.xavier_uniform_(W_hy)
    if cell == "rnn":
        return {"W_xh": W_in, "W_hh": W_rec, "W_hy": W_hy, "b_h": torch.zeros(H)} | {
            "b_y": torch.zeros(O)
        }
    return {
        "weight_ih_l0": W_in,
        "weight_hh_l0": W_rec,
        "bias_ih_l0": torch.zeros(G * H),
        "bias_hh_l0": torch.zeros(G * H),
        "W_hy": W_hy,
        "b_y": torch.zeros(O),
    }


def _torch_module_draws(cell: str, in_cols: int, H: int, O: int) -> dict:
    """Every array as ``torch.nn.RNN/GRU/LSTM(in_cols, H)`` then ``nn.Linear(H, O)`` draw it.
    The vanilla cell's two biases (torch keeps b_ih and b_hh) are summed into b_h."""
    import torch

    module = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[cell](in_cols, H)
    head = torch.nn.Linear(H, O)
    names = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
    arrays = {n: getattr(module, n).detach().clone() for n in names}
    arrays["W_hy"], arrays["b_y"] = head.weight.detach().clone(), head.bias.detach().clone()
    if cell != "rnn":
        return arrays
    return {
        "W_xh": arrays["weight_ih_l0"],
        "W_hh": arrays["weight_hh_l0"],
        "W_hy": arrays["W_hy"],
        "b_h": arrays["bias_ih_l0"].double() + arrays["bias_hh_l0"].double(),
        "b_y": arrays["b_y"],
    }


def param_names(cell: str) -> tuple[str, ...]:
    """The arrays a cell's parameters (and its checkpoint, and an init=file) hold, E aside."""
    return PARAM_NAMES if cell == "rnn" else gated.PARAM_NAMES


def expected_shapes(
    input_size: int, hidden_size: int, output_size: int, embed_dim: int = 0, cell: str = "rnn"
) -> dict[str, tuple[int, ...]]:
    H = hidden_size
    in_cols = embed_dim if embed_dim > 0 else input_size
    if cell == "rnn":
        shapes = {"W_xh": (H, in_cols), "W_hh": (H, H), "W_hy": (output_size, H)}
        shapes |= {"b_h": (H,), "b_y": (output_size,)}
    else:
        G = gated.CELLS[cell].n_gates
        shapes = {
            "weight_ih_l0": (G * H, in_cols),
            "weight_hh_l0": (G * H, H),
            "bias_ih_l0": (G * H,),
            "bias_hh_l0": (G * H,),
            "W_hy": (output_size, H),
            "b_y": (output_size,),
        }
    if embed_dim > 0:
        shapes["E"] = (embed_dim, input_size)
    return shapes


def check_params_arrays(
    arrays: dict, path, sizes: tuple[int, int, int], embed_dim: int, cell: str = "rnn"
) -> None:
    """Raise ValueError naming the array when one is missing, misshapen or not finite."""
    names = param_names(cell)
    missing = [k for k in names if k not in arrays]
    if missing:
        found = ", ".join(str(f) for f in arrays.get("_files", [])) or "none"
        raise ValueError(
            f"init.path: {str(path)!r} lacks arrays {missing}; cell={cell} needs "
            f"{', '.join(names)} (found: {found})"
        )
    for k, shape in expected_shapes(*sizes, embed_dim, cell).items():
        if k == "E" and k not in arrays:
            continue  # a fresh embedding is drawn when the file has none
        got = arrays[k].shape
        # Biases may be stored as (H, 1) column vectors, as the walkthrough does.
        if got != shape and not (len(shape) == 1 and got == (shape[0], 1)):
            raise ValueError(
                f"init.path: array {k} in {str(path)!r} has shape {got}, but this run "
                f"(cell={cell}, V={sizes[0]}, H={sizes[1]}) needs {shape}"
            )
        if not np.issubdtype(arrays[k].dtype, np.number):
            raise ValueError(f"init.path: array {k} in {str(path)!r} is not numeric")
        bad = int(np.size(arrays[k]) - np.count_nonzero(np.isfinite(arrays[k])))
        if bad:
            raise ValueError(
                f"init.path: array {k} in {str(path)!r} has {bad} non-finite values (NaN or "
                "inf; a diverged run's checkpoint?); use weights with finite values"
            )


# why: the sizes plus keyword-only options, as init_params takes them.
def params_from_arrays(
    raw: dict,
    path,
    sizes: tuple[int, int, int],
    *,
    seed: int = 42,
    embed_dim: int = 0,
    scale: float = 1.0,
    dtype=np.float64,
    cell: str = "rnn",
):
    """Start from saved weights ``raw`` (the cell's arrays: W_xh, W_hh, W_hy, b_h, b_y for
    "rnn", torch's names for gru/lstm; E optional; read from ``path`` by
    rnn_lab.run.input_files), after checking their shapes and that every value is finite.
    sizes = (V or D, H, O). ``scale`` multiplies the recurrent weights."""
    check_params_arrays(raw, path, sizes, embed_dim, cell)
    arrays = {k: np.asarray(v, dtype=dtype) for k, v in raw.items() if k != "_files"}
    arrays = {k: v.reshape(-1) if k.startswith("b") else v for k, v in arrays.items()}
    if embed_dim > 0 and "E" not in arrays:
        arrays["E"] = init_params(*sizes, seed=seed, embed_dim=embed_dim, dtype=dtype, cell=cell).E
    elif embed_dim <= 0:
        arrays.pop("E", None)
    recurrent = "W_hh" if cell == "rnn" else "weight_hh_l0"
    arrays[recurrent] = arrays[recurrent] * dtype(scale)
    return Params(**arrays) if cell == "rnn" else gated.CELLS[cell].params_cls(**arrays)
