"""The run-level scalars that describe a run's training dynamics, for the study tables.

`DYNAMICS_SCALARS` names, in the order a report lists them, every scalar of the collected
table (rnn_lab.study.collect) that describes how a run trained rather than what it learned:
the spectral radius, the gradient's fall and per-step decay over a chunk, the Jacobian bound,
gradient norms, clipping and saturation. Most come from summary.json (the trainer's fields and
the analysis' scalars); `history_scalars` reduces the per-row columns of history.csv that
summary.json lacks (clipping, gradient norm, saturation) to one number per run, which the
collector adds to each row. This module reads no file itself and imports neither the engine
nor the collector, so both the collector and the report can use it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DynamicsScalar:
    """What a table column measures, its unit for axis labels ("" = a pure number), and for
    a measure of the gradient's flow, which way it moves when the gradient vanishes faster
    ("lower" or "higher"; None for the others)."""

    meaning: str
    unit: str = ""
    vanishing: str | None = None


GRADIENT_DECAY = (
    "per-step factor of the last step's loss gradient over the chunk, "
    "(||dL_T/dh_1|| / ||dL_T/dh_T||)^(1/(T-1)); < 1: it vanishes"
)
GRADIENT_FALL = "||dL_T/dh_T|| / ||dL_T/dh_1||, how far that gradient falls over the chunk"
PROFILE_TIMES = {
    "first": "at step 1 (the init)",
    "median": "median over the record steps",
    "last": "at the last record step",
}
# The gradient profile the walkthrough's argument is about: how fast the gradient vanishes over a
# chunk for the network as initialised, and over training.
PROFILE_SCALARS = ("gradient_decay_first", "gradient_decay_median")

# Column -> what it is; the report relates a study's metric to each one the table has.
DYNAMICS_SCALARS: dict[str, DynamicsScalar] = {
    "spectral_radius": DynamicsScalar("spectral radius of W_hh at the end of training"),
    **{
        f"gradient_decay_{at}": DynamicsScalar(f"{GRADIENT_DECAY}; {when}", "per step", "lower")
        for at, when in PROFILE_TIMES.items()
    },
    **{
        f"gradient_fall_{at}": DynamicsScalar(f"{GRADIENT_FALL}; {when}", "", "higher")
        for at, when in PROFILE_TIMES.items()
    },
    "jacobian_bound_factor_first": DynamicsScalar(
        "gamma sigma_max(W_hh) at the first Jacobian capture (< 1: the Pascanu bound forces "
        "the gradient to vanish)",
        vanishing="lower",
    ),
    "jacobian_bound_ratio_max": DynamicsScalar(
        "largest ||J_T ... J_(T-k+1)|| / (gamma sigma_max)^k over the captures (<= 1)"
    ),
    "final_grad_norm": DynamicsScalar("total gradient norm at the last step, before clipping"),
    "grad_norm_median": DynamicsScalar(
        "median total gradient norm over the history rows, before clipping"
    ),
    "clip_fraction_run": DynamicsScalar(
        "share of the run's steps whose gradient was clipped", "share of steps"
    ),
    "saturation_first": DynamicsScalar(
        "hidden-unit saturation at step 1 (tanh/sigmoid: within 0.05 of a bound; relu: dead)",
        "share of units",
    ),
    "saturation_median": DynamicsScalar(
        "hidden-unit saturation, median over the record steps", "share of units"
    ),
}

# Gated cells' per-gate columns (letters r z n / i f g o), from analysis.json.
GATE_SCALARS = {
    re.compile(r"spectral_radius_([a-z])"): "spectral radius of the {gate} gate's recurrent block",
    re.compile(r"gate_saturation_([a-z])"): "saturation of the {gate} gate over the analysed text",
}


def dynamics_columns(columns) -> list[str]:
    """The dynamics scalars among `columns`: DYNAMICS_SCALARS' order, then gate columns."""
    present = set(columns)
    named = [c for c in DYNAMICS_SCALARS if c in present]
    gates = [c for c in columns if any(p.fullmatch(str(c)) for p in GATE_SCALARS)]
    return named + sorted(gates)


def scalar_meaning(column: str) -> DynamicsScalar:
    """What a dynamics column measures (a gate column's meaning names its gate)."""
    if column in DYNAMICS_SCALARS:
        return DYNAMICS_SCALARS[column]
    for pattern, text in GATE_SCALARS.items():
        match = pattern.fullmatch(column)
        if match:
            return DynamicsScalar(text.format(gate=match.group(1)))
    return DynamicsScalar(column)


def history_scalars(rows: list[dict]) -> dict:
    """One number per run from history.csv's rows (rundir.read_history_rows), for the table.

    clip_fraction_run: the share of all steps whose gradient was clipped (each row's
    clip_fraction covers the steps since the previous row, so rows are weighted by them);
    grad_norm_median: the median total gradient norm over the rows; saturation_first /
    saturation_median: the saturation at the first record row (step 1: the network as
    initialised) and its median over the record rows. A column absent from the rows (an older
    run, record=false) gives no key.
    """
    out: dict = {}
    steps = np.array([r["step"] for r in rows], dtype=float)
    if len(steps):
        covered = np.diff(steps, prepend=0.0)
        clip = np.array([r.get("clip_fraction", math.nan) for r in rows], dtype=float)
        ok = np.isfinite(clip) & (covered > 0)
        if ok.any():
            out["clip_fraction_run"] = float(np.sum(clip[ok] * covered[ok]) / covered[ok].sum())
    for column, reductions in (
        ("grad_norm", {"grad_norm_median": np.median}),
        ("saturation", {"saturation_first": lambda v: v[0], "saturation_median": np.median}),
    ):
        values = np.array([r[column] for r in rows if column in r], dtype=float)
        values = values[np.isfinite(values)]
        if len(values):
            out.update({name: float(reduce(values)) for name, reduce in reductions.items()})
    return out
