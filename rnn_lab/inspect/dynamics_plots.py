"""The run's training-dynamics plots: loss, spectral radius and eigenvalues, the gradient's
fall over a chunk, Jacobian products, saturation. They read history.csv and diagnostics.npz
(absent with record=false: those plots are skipped)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
from matplotlib.colors import LogNorm

from rnn_lab.core import cells, engine
from rnn_lab.inspect.figure_io import ONE_AXES, Margins, PlotSkipped, new_figure, save_figure
from rnn_lab.inspect.load import Run
from rnn_lab.inspect.plot_parts import finish_figure, history_column


def _step_colors(n: int):
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(0.9 * i / max(1, n - 1)) for i in range(n)]


def plot_loss(run: Run, out: Path) -> Path:
    """Training and validation loss per character, on a linear and a log step axis."""
    steps, loss = history_column(run, "loss")
    if len(steps) == 0:
        raise PlotSkipped("history.csv has no loss rows")
    val_steps, val_loss = history_column(run, "val_loss")
    fig = new_figure(12, 4.8, Margins(0.75, 0.2, 0.55, 0.85, wspace=0.25, cols=2))
    axes = fig.subplots(1, 2, sharey=True)
    V = len(run.vocab)
    for ax, log_steps in zip(axes, (False, True)):
        ax.plot(steps, loss, color="C0", lw=1.2, label="training loss (mean since previous row)")
        if len(val_steps):
            ax.plot(
                val_steps,
                val_loss,
                "o-",
                color="C3",
                ms=3.5,
                lw=1.2,
                label="validation loss (whole validation split)",
            )
        if V > 1:
            ax.axhline(
                math.log(V),
                color="0.5",
                ls=":",
                lw=1,
                label=f"uniform guess over {V} characters, ln {V} = {math.log(V):.2f}",
            )
        ax.set_xlabel("training step" + (" (log scale)" if log_steps else ""))
        if log_steps:
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("cross-entropy (nats/char)")
    axes[0].set_title("linear step axis", fontsize="medium")
    axes[1].set_title("log step axis (the early phase)", fontsize="medium")
    axes[0].set_ylim(bottom=0)
    axes[0].legend(fontsize="small", loc="upper right")
    finish_figure(fig, run, "Loss per character")
    return save_figure(fig, out)


def plot_spectral(run: Run, out: Path) -> Path:
    """Spectral radius and largest singular value of W_hh over training; its eigenvalues
    at the first record and at the checkpoint in the complex plane.

    Gated cells: the recurrent weights are one H x H block per gate; the left panel draws the
    largest spectral radius and largest singular value over the blocks and each gate's own
    spectral radius (history.csv's spectral_radius_<gate>), the right one the eigenvalues of
    the candidate block (GRU n, LSTM g: the block in W_hh's place, cells.CANDIDATE_BLOCK)."""
    steps, radius = history_column(run, "spectral_radius")
    if len(steps) == 0:
        raise PlotSkipped("history.csv has no spectral_radius")
    sig_steps, sigma = history_column(run, "sigma_max")
    names = _weight_names(run)
    fig = new_figure(12, 5.2, Margins(0.75, 0.2, 0.55, 0.85, wspace=0.9, cols=2))
    ax, ax_eig = fig.subplots(1, 2, width_ratios=[1.5, 1])
    ax.plot(steps, radius, color="C0", lw=1.5, label=f"spectral radius {names['radius']}")
    if len(sig_steps):
        ax.plot(
            sig_steps, sigma, color="C1", lw=1.5, label=f"largest singular value {names['sigma']}"
        )
    for i, gate in enumerate(cells.gate_names(run.cell)):
        gate_steps, gate_radius = history_column(run, f"spectral_radius_{gate}")
        if len(gate_steps):
            candidate = " (candidate)" if gate == cells.CANDIDATE_BLOCK[run.cell] else ""
            label = f"ρ(W_h{gate}), gate {gate}{candidate}"
            ax.plot(gate_steps, gate_radius, color=f"C{i + 2}", lw=1, ls="--", label=label)
    ax.axhline(
        1.0, color="0.4", ls="--", lw=1, label="1: a linear map that neither grows nor shrinks"
    )
    ax.set_xlabel("training step")
    ax.set_ylabel("magnitude (dimensionless)")
    ax.set_title(f"{names['weights']} over training", fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper right")
    _draw_eigenvalues(run, ax_eig, names["candidate"])
    finish_figure(fig, run, f"{names['title']}: spectral radius and singular value")
    return save_figure(fig, out)


def _weight_names(run: Run) -> dict[str, str]:
    """How figures name the recurrent weights: W_hh for the vanilla cell; the recurrent
    blocks (one H x H block per gate) for gated cells."""
    if not run.gated:
        return {
            "title": "Recurrent weights W_hh",
            "weights": "W_hh",
            "radius": "max|λ(W_hh)|",
            "sigma": "σ_max(W_hh)",
            "candidate": "W_hh",
        }
    gate = cells.CANDIDATE_BLOCK[run.cell]
    return {
        "title": f"Recurrent blocks of the {run.cell.upper()} (one H x H block per gate)",
        "weights": "recurrent blocks",
        "radius": "(largest recurrent block)",
        "sigma": "(largest over the recurrent blocks)",
        "candidate": f"the candidate block W_h{gate}",
    }


def _draw_eigenvalues(run: Run, ax, name: str) -> None:
    """Eigenvalues of W_hh (or the candidate block) at the first record and the checkpoint."""
    theta = np.linspace(0, 2 * np.pi, 400)
    ax.plot(np.cos(theta), np.sin(theta), color="0.4", ls="--", lw=1, label="unit circle")
    eig = run.diagnostics.get("eigenvalues")
    if eig is not None and len(eig):
        first_step = int(run.diagnostics["record_step"][0])
        ax.scatter(
            eig[0].real,
            eig[0].imag,
            s=14,
            facecolors="none",
            edgecolors="0.55",
            label=f"step {first_step}",
        )
    if run.has_checkpoint:
        final = np.linalg.eigvals(cells.candidate_block(run.params()))
        ax.scatter(
            final.real,
            final.imag,
            s=14,
            color="C3",
            label=f"checkpoint (step {run.checkpoint_step()})",
        )
    ax.set_aspect("equal", adjustable="datalim")
    ax.axhline(0, color="0.85", lw=0.8, zorder=0)
    ax.axvline(0, color="0.85", lw=0.8, zorder=0)
    ax.set_xlabel("Re λ")
    ax.set_ylabel("Im λ")
    ax.set_title(f"eigenvalues of {name}", fontsize="medium")
    ax.legend(fontsize="small", loc="upper left")


def _step_edges(steps: np.ndarray) -> np.ndarray:
    """Cell edges between record steps, geometric midpoints (for a log step axis)."""
    s = steps.astype(float)
    if len(s) == 1:
        return np.array([s[0] / 2, s[0] * 2])
    mids = np.sqrt(s[:-1] * s[1:])
    return np.concatenate([[s[0] ** 2 / mids[0]], mids, [s[-1] ** 2 / mids[-1]]])


def _heatmap(
    fig,
    ax,
    steps: np.ndarray,
    values: np.ndarray,
    title: str,
    colorbar_label: str,
    floor_ratio: float,
) -> None:
    """(record step x chunk position) values as a log-coloured heatmap, log step axis.

    floor_ratio: the colour scale spans [max / floor_ratio, max] (or down to the smallest
    value); cells at or below zero are left blank (a dead relu chain)."""
    T = values.shape[1]
    positive = values[np.isfinite(values) & (values > 0)]
    if positive.size == 0:
        ax.text(0.5, 0.5, "all values are zero", transform=ax.transAxes, ha="center")
        return
    hi = float(positive.max())
    lo = max(float(positive.min()), hi / floor_ratio)
    shown = np.where(values > 0, values, np.nan)
    mesh = ax.pcolormesh(
        np.arange(T + 1) + 0.5,
        _step_edges(steps),
        shown,
        norm=LogNorm(vmin=lo, vmax=hi),
        cmap="magma",
        shading="flat",
    )
    ax.set_yscale("log")
    ax.set_xlabel(f"position t in the chunk (t = {T}: the chunk's last step)")
    ax.set_ylabel("training step (log scale)")
    ax.set_title(title, fontsize="medium")
    fig.colorbar(mesh, ax=ax, label=colorbar_label)


def plot_gradient_profile(run: Run, out: Path) -> Path:
    """The vanishing-gradient profile over training.

    Left: ||dL_T/dh_t|| / ||dL_T/dh_T||, the gradient of the chunk's last loss reaching
    position t, relative to where it starts (each record divided by its own t = T value, so
    the chunk-to-chunk size of that one loss does not hide the decay). Middle: its median
    over five phases of training. Right: ||dL/dh_t|| of the whole chunk loss, absolute.
    Gated cells: the gradient with respect to the state s_t (h_t for the GRU, (h_t, c_t) for
    the LSTM), as the trainer records it; labels say s for the LSTM.
    """
    h = _state_symbol(run)
    last = run.profile_frame("last_loss_grad_norm")
    if last.empty:
        raise PlotSkipped("no diagnostics.npz (record=false)")
    steps = last.index.to_numpy()
    values = last.to_numpy(dtype=float)
    start = values[:, -1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(start > 0, values / start, np.nan)
    T = values.shape[1]
    fig = new_figure(17, 5.4, Margins(0.8, 1.0, 0.55, 0.85, wspace=1.75, cols=3))
    ax_rel, ax_lines, ax_all = fig.subplots(1, 3, width_ratios=[1.1, 0.9, 1.1])
    _heatmap(
        fig,
        ax_rel,
        steps,
        relative,
        f"last step's loss: ||dL_T/d{h}_t|| / ||dL_T/d{h}_T||",
        "gradient relative to t = T (log scale)",
        floor_ratio=1e8,
    )

    # Median relative profile per phase: the same information, readable as curves.
    phases = np.array_split(np.arange(len(steps)), min(5, len(steps)))
    colors = _step_colors(len(phases))
    positions = np.arange(1, T + 1)
    for rows, color in zip(phases, colors):
        # A position with no value in a phase (a sequence task's chunk shorter than the
        # longest, NaN-padded) has no median: NaN, not drawn, and no warning on the console.
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            median = np.nanmedian(relative[rows], axis=0)
        median = np.where(median > 0, median, np.nan)
        label = f"steps {steps[rows[0]]}-{steps[rows[-1]]} ({len(rows)} records)"
        ax_lines.plot(positions, median, "o-", ms=2.5, color=color, label=label)
    ax_lines.axhline(1.0, color="0.4", ls="--", lw=1)
    ax_lines.set_yscale("log")
    ax_lines.set_xlabel(f"position t in the chunk (t = {T}: the chunk's last step)")
    ax_lines.set_ylabel(f"||dL_T/d{h}_t|| / ||dL_T/d{h}_T|| (median)")
    ax_lines.set_title("median profile per phase of training", fontsize="medium")
    ax_lines.grid(alpha=0.3, which="both")
    ax_lines.legend(
        fontsize="x-small", loc="lower right", title="training steps", title_fontsize="x-small"
    )

    per_step = run.profile_frame("per_step_grad_norm")
    _heatmap(
        fig,
        ax_all,
        per_step.index.to_numpy(),
        per_step.to_numpy(dtype=float),
        f"whole chunk loss: ||dL/d{h}_t|| (absolute)",
        f"||dL/d{h}_t|| (log scale)",
        floor_ratio=1e6,
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        fall = values[:, -1] / values[:, 0]
    fall = fall[np.isfinite(fall) & (fall > 0)]
    measured = (
        f": the last step's gradient falls {np.median(fall):.3g}-fold over the chunk "
        f"(median over {len(fall)} records; first {fall[0]:.3g}, last {fall[-1]:.3g})"
        if len(fall)
        else ""
    )
    state = " (s_t = (h_t, c_t))" if h == "s" else ""
    finish_figure(
        fig, run, f"Gradient flow back through the chunk{state} (small = vanished){measured}"
    )
    return save_figure(fig, out)


def _state_symbol(run: Run) -> str:
    """The recurrent state's letter in labels: h (rnn, GRU) or s = (h, c) (LSTM)."""
    return "s" if cells.n_state(run.cell) > 1 else "h"


def plot_jacobian(run: Run, out: Path) -> Path:
    """Norm and spectral radius of the Jacobian product dh_T/dh_{T-k} against the lag k,
    at several recorded steps."""
    frame = run.jacobian_frame()
    if frame.empty:
        raise PlotSkipped(
            "no Jacobian products recorded (record=false or jacobian_interval=0"
            " or fewer steps than jacobian_interval)"
        )
    steps = np.unique(frame["step"].to_numpy())
    if len(steps) > 6:
        steps = steps[np.unique(np.linspace(0, len(steps) - 1, 6).round().astype(int))]
    colors = _step_colors(len(steps))
    fig = new_figure(12, 4.8, Margins(0.95, 0.2, 0.55, 0.85, wspace=1.15, cols=2))
    ax_norm, ax_rad = fig.subplots(1, 2, sharex=True)
    bounds = _pascanu_bounds(run)  # step -> gamma sigma_max (W_hh) at that capture
    for step, color in zip(steps, colors):
        rows = frame[frame["step"] == step]
        label = f"step {step}"
        if step in bounds:  # the bound ||P_k|| <= (gamma sigma_max)^k, dashed, same colour
            lags = rows["lag"].to_numpy(dtype=float)
            ax_norm.plot(lags, bounds[step] ** lags, ls=":", lw=1.2, color=color)
        zero = rows["lag"][rows["product_norm"] <= 0].to_numpy()
        if len(zero):  # a chain of dead relu units: exactly zero, nothing to draw on a log axis
            label += f" (exactly 0 from lag {zero[0]})"
        for ax, col in ((ax_norm, "product_norm"), (ax_rad, "product_radius")):
            y = rows[col].to_numpy(dtype=float)
            y = np.where(y > 0, y, np.nan)
            ax.plot(rows["lag"], y, "o-", ms=3, color=color, label=label)
    for ax in (ax_norm, ax_rad):
        ax.axhline(1.0, color="0.4", ls="--", lw=1)
        ax.set_yscale("log")
        ax.set_xlabel("lag k (steps back from the chunk's last step)")
        ax.grid(alpha=0.3, which="both")
    ax_norm.set_ylabel("spectral norm ||J_T ⋯ J_{T-k+1}||₂")
    ax_rad.set_ylabel("spectral radius of J_T ⋯ J_{T-k+1}")
    h = _state_symbol(run)
    # The bound is the vanilla cell's theorem: gated runs have none (_pascanu_bounds: {}).
    bound = " (dotted: the bound (γ σ_max)^k, Pascanu et al. 2013)" if bounds else ""
    ax_norm.set_title(f"norm of d{h}_T/d{h}_{{T-k}}{bound}", fontsize="medium")
    ax_rad.set_title("spectral radius of the same product", fontsize="medium")
    ax_norm.legend(fontsize="small", title="training step", title_fontsize="small")
    finish_figure(
        fig, run, f"Jacobian products {_jacobian_text(run)} over the last steps of a chunk"
    )
    return save_figure(fig, out)


def _jacobian_text(run: Run) -> str:
    if run.cell == "lstm":
        return "J_t = ds_t/ds_{t-1}, s = (h, c) (2H x 2H)"
    if run.cell == "gru":
        return "J_t = dh_t/dh_{t-1} of the GRU (H x H)"
    return "J_t = diag(f'(a_t)) W_hh"


def _pascanu_bounds(run: Run) -> dict[int, float]:
    """gamma sigma_max(W_hh) at each Jacobian capture ({} for runs recorded without sigma, and
    for gated cells: the bound is a theorem about the vanilla cell's Jacobian only)."""
    if run.gated:
        return {}
    sigma = run.diagnostics.get("jacobian_sigma_max")
    steps = run.diagnostics.get("jacobian_step")
    if sigma is None or steps is None or len(sigma) != len(steps):
        return {}
    gamma = engine.get_activation(run.activation).deriv_max
    return {int(t): float(gamma * s) for t, s in zip(steps, sigma)}


# The gate cells.saturation (history's `saturation`) measures: the GRU's update gate, the
# LSTM's forget gate (the gates that decide how much of the state is kept).


def plot_saturation(run: Run, out: Path) -> Path:
    """tanh/sigmoid: fraction of unit-steps within 0.05 of a bound; relu: dead units.
    Gated cells: every gate's saturation (plot_gate_saturation)."""
    steps, sat = history_column(run, "saturation")
    if len(steps) == 0:
        raise PlotSkipped("history.csv has no saturation column (record=false)")
    if run.gated:
        return plot_gate_saturation(run, out)
    relu = run.activation == "relu"
    fig = new_figure(8.5, 4.6, ONE_AXES)
    ax = fig.subplots()
    if relu:
        label = "dead units (h = 0 at every step of the chunk)"
        ylabel = "fraction of hidden units"
        title = "Dead relu units over training"
    else:
        bounds = "±1" if run.activation == "tanh" else "0 or 1"
        label = f"unit-steps with h within 0.05 of {bounds}"
        ylabel = "fraction of unit-steps in a chunk"
        title = f"Saturation of the {run.activation} units over training"
    ax.plot(steps, sat, color="C2", lw=1.3, label=label)
    ax.set_ylim(0, max(0.05, min(1.0, float(np.nanmax(sat)) * 1.15 + 0.01)))
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper right")
    finish_figure(fig, run, title)
    return save_figure(fig, out)


def plot_gate_saturation(run: Run, out: Path) -> Path:
    """Gated cells: per gate, the fraction of gate values in a chunk within 0.05 of the ends
    of its range (0 or 1 for the sigmoid gates, ±1 for the tanh candidate), over training
    (history.csv's gate_saturation_<gate>); the memory gate (GRU z, LSTM f) drawn bold."""
    fig = new_figure(8.5, 4.6, ONE_AXES)
    ax = fig.subplots()
    top = 0.0
    candidate = cells.CANDIDATE_BLOCK[run.cell]
    for i, gate in enumerate(cells.gate_names(run.cell)):
        steps, sat = history_column(run, f"gate_saturation_{gate}")
        if not len(steps):
            continue
        memory = gate == cells.MEMORY_GATE.get(run.cell)
        ends = "±1" if gate == candidate else "0 or 1"
        role = " (candidate)" if gate == candidate else " (memory gate)" if memory else ""
        label = f"gate {gate}{role}: within 0.05 of {ends}"
        ax.plot(steps, sat, color=f"C{i}", lw=2.2 if memory else 1.1, label=label)
        top = max(top, float(np.nanmax(sat)) if np.isfinite(sat).any() else 0.0)
    ax.set_ylim(0, max(0.05, min(1.0, top * 1.15 + 0.01)))
    ax.set_xlabel("training step")
    ax.set_ylabel("fraction of gate values in a chunk")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper right")
    finish_figure(fig, run, f"Gate saturation of the {run.cell.upper()} over training")
    return save_figure(fig, out)
