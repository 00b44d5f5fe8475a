"""The plots of one run, as PNG files in its run directory.

``plot_run(run_dir)`` draws every plot whose data the run has and returns the paths written.
Training-dynamics plots read history.csv and diagnostics.npz (absent with record=false, so
those plots are skipped); the analysis plots read analysis.json (see rnn_lab.inspect.analysis).
Figures are built with matplotlib's object API (no pyplot, no global backend state), so
drawing is safe inside sweeps, threads and CI; each PNG is written atomically.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

# One PNG writer and one "no data" exception for a run's plots and a study's report figures.
from rnn_lab.core import cells, engine
from rnn_lab.inspect.figure_io import PlotSkipped, save_figure
from rnn_lab.inspect.figure_io import new_figure as _new_figure
from rnn_lab.inspect.load import Run, load_run

log = logging.getLogger("rnn_lab")

# One colour per Elman category, fixed so every run's plots agree.
CATEGORY_COLORS = {
    "NOUN_HUMAN": "#1f77b4",
    "NOUN_ANIMAL": "#17becf",
    "NOUN_FOOD": "#2ca02c",
    "NOUN_OBJECT": "#8c564b",
    "VERB_INTRAN": "#d62728",
    "VERB_TRAN": "#ff7f0e",
    "VERB_PERCEPT": "#9467bd",
}


# --------------------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------------------


def run_title(run: Run) -> str:
    """A one-line identity of the run for every figure: where it is and what it is."""
    s = run.settings
    init = s.get("init") or {}
    init_name = init.get("name", "?") if isinstance(init, dict) else init
    cell = s.get("cell") if isinstance(s.get("cell"), dict) else {}
    forget_bias = cell.get("forget_bias")
    parts = [
        # gated cells: the cell (their activation is always tanh)
        run.cell if run.gated else f"{run.activation}",
        *([f"forget_bias={forget_bias}"] if forget_bias is not None else []),
        f"init={init_name}",
        f"H={s.get('hidden_size', '?')}",
        f"seq_len={s.get('seq_len', '?')}",
        f"clip={s.get('clip', '?')}",
    ]
    if s.get("freeze_whh"):
        parts.append("recurrent blocks frozen" if run.gated else "W_hh frozen")
    parts.append(f"seed={s.get('seed', '?')}")
    step = run.summary.get("steps_done")
    status = run.summary.get("status")
    where = "/".join(run.path.resolve().parts[-2:])
    tail = f"step {step}" + (f" ({status})" if status and status != "ok" else "")
    return f"{where}: {', '.join(parts)}; {tail}"


def _finish(fig: Figure, run: Run, title: str) -> None:
    fig.suptitle(f"{title}\n{run_title(run)}", fontsize="medium")


def _history_column(run: Run, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of a history column, rows with a value only."""
    h = run.history
    if h.empty or column not in h.columns:
        return np.array([]), np.array([])
    rows = h[["step", column]].dropna()
    return rows["step"].to_numpy(), rows[column].to_numpy(dtype=float)


def _analysis(run: Run, key: str, what: str, topic: str = "") -> dict:
    """details[key] of analysis.json; a skip naming why when absent (the analysis's notes
    that begin with topic, when given: the others are about other metrics)."""
    if run.analysis is None:
        raise PlotSkipped(f"no analysis.json ({what} comes from `rnn-lab analyze`)")
    details = run.analysis.get("details") or {}
    if key not in details:
        notes = [n for n in run.analysis.get("notes") or [] if n.startswith(topic)]
        raise PlotSkipped("; ".join(notes) or f"no {key} in analysis.json")
    return details[key]


def place_labels(
    fig: Figure, ax, xy: np.ndarray, texts: list[str], colors, fontsize: float = 8.5
) -> None:
    """Annotate points with labels pushed apart vertically until they no longer overlap,
    with a leader line when a label had to move away from its point.

    Works in display pixels once the layout is final; the label size is estimated from the
    character count, which is good enough to separate words.
    """
    # Final limits and axes position, without drawing the whole figure: autoscale now, then
    # run the layout engine (the labels stay out of the layout, so it will not move again).
    ax.get_xlim()
    ax.get_ylim()
    if fig.get_layout_engine() is not None:
        fig.get_layout_engine().execute(fig)
    points = ax.transData.transform(np.asarray(xy, dtype=float))
    px = fig.dpi / 72.0
    widths = np.array([0.62 * fontsize * px * len(t) + 2 * px for t in texts])
    height = 1.25 * fontsize * px
    pos = points + np.array([4.0, 2.0]) * px  # lower-left corner of each label
    box = ax.get_window_extent()
    # A label that would run off the right edge goes to the left of its point.
    off_right = pos[:, 0] + widths > box.x1
    pos[off_right, 0] = points[off_right, 0] - widths[off_right] - 4.0 * px
    home = pos.copy()
    n = len(texts)
    order_sign = np.sign(np.arange(n)[None, :] - np.arange(n)[:, None])  # ties: by index
    for _ in range(400):
        cx, cy = pos[:, 0] + widths / 2, pos[:, 1] + height / 2
        dx, dy = cx[None, :] - cx[:, None], cy[None, :] - cy[:, None]
        overlap_x = (widths[:, None] + widths[None, :]) / 2 - np.abs(dx)
        overlap_y = height - np.abs(dy)
        overlap = (overlap_x > 0) & (overlap_y > 0)
        np.fill_diagonal(overlap, False)
        if not overlap.any():
            break
        sign = np.where(dy != 0, np.sign(dy), order_sign)
        push = np.where(overlap, (overlap_y / 2 + 0.5) * sign, 0.0)  # row i pushes column j
        pos[:, 1] += 0.5 * push.sum(axis=0)
        pos[:, 1] = np.clip(pos[:, 1], box.y0 + 1, box.y1 - height - 1)
    to_data = ax.transData.inverted()
    anchors = to_data.transform(pos)
    for i, text in enumerate(texts):
        moved = abs(pos[i, 1] - home[i, 1]) > 0.6 * height
        ann = ax.annotate(
            text,
            xy=tuple(xy[i]),
            xytext=tuple(anchors[i]),
            textcoords="data",
            ha="left",
            va="bottom",
            fontsize=fontsize,
            color=colors[i],
            arrowprops={
                "arrowstyle": "-",
                "color": colors[i],
                "lw": 0.6,
                "alpha": 0.7,
                "shrinkA": 0,
                "shrinkB": 2,
            }
            if moved
            else None,
        )
        ann.set_in_layout(False)


def _step_colors(n: int):
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(0.9 * i / max(1, n - 1)) for i in range(n)]


# --------------------------------------------------------------------------------------
# Training dynamics
# --------------------------------------------------------------------------------------


def plot_loss(run: Run, out: Path) -> Path:
    """Training and validation loss per character, on a linear and a log step axis."""
    steps, loss = _history_column(run, "loss")
    if len(steps) == 0:
        raise PlotSkipped("history.csv has no loss rows")
    val_steps, val_loss = _history_column(run, "val_loss")
    fig = _new_figure(12, 4.8)
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
    _finish(fig, run, "Loss per character")
    return save_figure(fig, out)


def plot_spectral(run: Run, out: Path) -> Path:
    """Spectral radius and largest singular value of W_hh over training; its eigenvalues
    at the first record and at the checkpoint in the complex plane.

    Gated cells: the recurrent weights are one H x H block per gate; the left panel draws the
    largest spectral radius and largest singular value over the blocks and each gate's own
    spectral radius (history.csv's spectral_radius_<gate>), the right one the eigenvalues of
    the candidate block (GRU n, LSTM g: the block in W_hh's place, cells.CANDIDATE_BLOCK)."""
    steps, radius = _history_column(run, "spectral_radius")
    if len(steps) == 0:
        raise PlotSkipped("history.csv has no spectral_radius")
    sig_steps, sigma = _history_column(run, "sigma_max")
    names = _weight_names(run)
    fig = _new_figure(12, 5.2)
    ax, ax_eig = fig.subplots(1, 2, width_ratios=[1.5, 1])
    ax.plot(steps, radius, color="C0", lw=1.5, label=f"spectral radius {names['radius']}")
    if len(sig_steps):
        ax.plot(
            sig_steps, sigma, color="C1", lw=1.5, label=f"largest singular value {names['sigma']}"
        )
    for i, gate in enumerate(cells.gate_names(run.cell)):
        gate_steps, gate_radius = _history_column(run, f"spectral_radius_{gate}")
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
    _finish(fig, run, f"{names['title']}: spectral radius and singular value")
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
    fig = _new_figure(17, 5.4)
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
    _finish(fig, run, f"Gradient flow back through the chunk{state} (small = vanished){measured}")
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
    fig = _new_figure(12, 4.8)
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
    _finish(fig, run, f"Jacobian products {_jacobian_text(run)} over the last steps of a chunk")
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
    steps, sat = _history_column(run, "saturation")
    if len(steps) == 0:
        raise PlotSkipped("history.csv has no saturation column (record=false)")
    if run.gated:
        return plot_gate_saturation(run, out)
    relu = run.activation == "relu"
    fig = _new_figure(8.5, 4.6)
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
    _finish(fig, run, title)
    return save_figure(fig, out)


def plot_gate_saturation(run: Run, out: Path) -> Path:
    """Gated cells: per gate, the fraction of gate values in a chunk within 0.05 of the ends
    of its range (0 or 1 for the sigmoid gates, ±1 for the tanh candidate), over training
    (history.csv's gate_saturation_<gate>); the memory gate (GRU z, LSTM f) drawn bold."""
    fig = _new_figure(8.5, 4.6)
    ax = fig.subplots()
    top = 0.0
    candidate = cells.CANDIDATE_BLOCK[run.cell]
    for i, gate in enumerate(cells.gate_names(run.cell)):
        steps, sat = _history_column(run, f"gate_saturation_{gate}")
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
    _finish(fig, run, f"Gate saturation of the {run.cell.upper()} over training")
    return save_figure(fig, out)


# --------------------------------------------------------------------------------------
# Analysis of the trained network (analysis.json)
# --------------------------------------------------------------------------------------


def plot_word_categories(run: Run, out: Path) -> Path:
    """Word means in the 2-D PCA, labelled and coloured by category; their dendrogram."""
    from scipy.cluster.hierarchy import dendrogram

    cat = _analysis(run, "categories", "the word-category analysis", topic="word categories")
    words, categories = cat["words"], cat["word_categories"]
    coords = np.asarray(cat["pca"], dtype=float)
    colors = [CATEGORY_COLORS.get(c, "0.3") for c in categories]
    fig = _new_figure(14, 6.4)
    ax_pca, ax_den = fig.subplots(1, 2, width_ratios=[1.25, 1])
    ax_pca.scatter(coords[:, 0], coords[:, 1], c=colors, s=18)
    explained = cat.get("pca_explained_variance") or [0, 0]
    ax_pca.set_xlabel(f"PC 1 ({100 * explained[0]:.0f}% of the variance of the word means)")
    ax_pca.set_ylabel(f"PC 2 ({100 * explained[1]:.0f}%)")
    ax_pca.set_title("mean boundary state of each word, 2-D PCA", fontsize="medium")
    ax_pca.grid(alpha=0.3)
    present = [c for c in CATEGORY_COLORS if c in set(categories)]
    handles = [
        Line2D([], [], marker="o", ls="", color=CATEGORY_COLORS[c], label=c) for c in present
    ]
    # Below the axes: inside, it would hide words wherever they happen to lie.
    ax_pca.legend(
        handles=handles,
        fontsize="small",
        loc="upper center",
        bbox_to_anchor=(0.5, -0.11),
        ncol=4,
        title="category",
        title_fontsize="small",
    )
    # Labels last, once the layout is final: words of one cluster often share a point.
    place_labels(fig, ax_pca, coords, words, colors)
    if cat.get("linkage"):
        Z = np.asarray(cat["linkage"], dtype=float)
        dendrogram(
            Z,
            ax=ax_den,
            labels=list(words),
            orientation="left",
            color_threshold=0,
            above_threshold_color="0.35",
            leaf_font_size=8,
        )
        color_of = dict(zip(words, colors))
        for label in ax_den.get_yticklabels():
            label.set_color(color_of.get(label.get_text(), "0.3"))
        ax_den.set_xlabel("average-linkage distance between word means (units of h)")
        ax_den.set_title("hierarchical clustering of the word means", fontsize="medium")
    _finish(fig, run, f"Elman's word categories in the hidden state{_category_scores(run)}")
    return save_figure(fig, out)


def _category_scores(run: Run) -> str:
    """The category scores for the title, from the analysis' structure metrics, e.g.
    `: separation 0.56 (chance 0.34, untrained 0.29, spelling 0.50: not beyond them)`."""
    a = run.analysis
    sep = a.get("category_separation")
    if sep is None:
        return ""
    parts = [f"chance {a.get('category_chance', math.nan):.2f}"]
    for key, name in (("init", "untrained"), ("spelling", "spelling")):
        value = a.get(f"category_separation_{key}")
        if value is not None:
            parts.append(f"{name} {value:.2f}")
    beats = a.get("category_separation_beats_baselines")
    verdict = {True: ": beyond them", False: ": not beyond them (95% CI)"}.get(beats, "")
    text = f": separation {sep:.2f} ({', '.join(parts)}{verdict})"
    ari = a.get("dendrogram_noun_verb_ari")
    if ari is not None:
        text += f";\ntop split vs noun | verb: adjusted Rand {ari:.2f}"
    return text


def plot_memory_probe(run: Run, out: Path) -> Path:
    """Accuracy of decoding the character k steps back from the hidden state."""
    mem = _analysis(run, "memory_probe", "the memory probe")
    lags = np.asarray(mem["lags"])
    fig = _new_figure(9.5, 5.0)
    ax = fig.subplots()
    ax.plot(
        lags,
        mem["accuracy"],
        "o-",
        ms=3,
        color="C0",
        label=f"trained network (memory span {mem['span']})",
    )
    init = (run.analysis.get("details") or {}).get("memory_probe_init")
    if init:
        ax.plot(
            lags,
            init["accuracy"],
            "s--",
            ms=2.5,
            color="C1",
            lw=1,
            label=f"untrained network, same init (span {init['span']})",
        )
    ax.plot(
        lags,
        mem["input_only_accuracy"],
        ":",
        color="C2",
        lw=1.5,
        label="from the current character alone (text statistics, no memory)",
    )
    ax.axhline(
        mem["chance"],
        color="0.3",
        ls="--",
        lw=1,
        label=f"chance = majority class ({mem['chance']:.2f})",
    )
    ax.axhspan(
        mem["chance"],
        mem["chance"] + mem["margin"],
        color="0.85",
        alpha=0.6,
        label=f"chance + margin {mem['margin']} (span threshold)",
    )
    seq_len = run.settings.get("seq_len")
    if seq_len and seq_len <= lags.max():
        ax.axvline(
            seq_len, color="C3", ls="-.", lw=1, label=f"seq_len = {seq_len} (BPTT truncation)"
        )
    ax.set_ylim(0, 1.02)
    ax.set_xlim(0.5, lags.max() + 0.5)
    ax.set_xlabel("lag k (characters back from the one just read)")
    ax.set_ylabel("decoding accuracy on the validation text (fraction)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper right")
    _finish(fig, run, "Memory probe: ridge readout of the character k steps back from h_t")
    return save_figure(fig, out)


_WHITESPACE_GLYPHS = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}


def _visible_char(ch: str) -> str:
    """A glyph for a character label: whitespace made visible, other controls as \\xNN."""
    if ch in _WHITESPACE_GLYPHS:
        return _WHITESPACE_GLYPHS[ch]
    return ch if ch.isprintable() else repr(ch)[1:-1]


def plot_hidden_trajectory(run: Run, out: Path, per_panel: int = 25) -> Path:
    """The hidden state's path through its 2-D PCA while reading a validation excerpt.

    The excerpt is cut into panels of per_panel characters on the same axes (a single
    path of 100 points is an unreadable tangle); each panel shows all the excerpt's states
    as a grey cloud and its own stretch as a labelled path."""
    traj = _analysis(run, "trajectory", "the hidden-state trajectory")
    coords = np.asarray(traj["pca"], dtype=float)
    text = traj["text"]
    if len(coords) == 0:
        raise PlotSkipped("empty trajectory")
    # Panel boundaries just after a space near every per_panel characters: whole words.
    bounds = [0]
    while len(coords) - bounds[-1] > per_panel * 1.4:
        cut = bounds[-1] + per_panel
        for extra in range(10):  # up to 10 more characters to finish the word
            if cut + extra >= len(coords) or text[cut + extra - 1].isspace():
                cut += extra
                break
        bounds.append(cut)
    bounds.append(len(coords))
    n_panels = len(bounds) - 1
    ncols = min(2, n_panels)
    nrows = math.ceil(n_panels / ncols)
    fig = _new_figure(7.2 * ncols, 5.4 * nrows)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, sharex=True, sharey=True)).ravel()
    explained = traj.get("pca_explained_variance") or [0, 0]
    for p, ax in enumerate(axes):
        if p >= n_panels:
            ax.set_visible(False)
            continue
        lo, hi = bounds[p], bounds[p + 1]
        ax.scatter(coords[:, 0], coords[:, 1], s=8, color="0.85", zorder=0)
        seg = coords[lo:hi]
        ax.plot(seg[:, 0], seg[:, 1], color="0.55", lw=0.9, zorder=1)
        # Colour runs from dark (first character of the panel) to yellow (last).
        ax.scatter(
            seg[:, 0],
            seg[:, 1],
            c=np.arange(len(seg)),
            cmap="viridis",
            norm=Normalize(0, max(1, len(seg) - 1)),
            s=26,
            zorder=2,
        )
        ax.scatter(
            seg[:1, 0],
            seg[:1, 1],
            s=140,
            facecolors="none",
            edgecolors="C3",
            lw=1.5,
            zorder=3,
            label="first character of the panel",
        )
        for (x, y), ch in zip(seg, text[lo:hi]):
            ax.annotate(
                _visible_char(ch),
                (x, y),
                xytext=(4, 3),
                textcoords="offset points",
                fontsize=10,
                fontweight="bold",
                color="C3" if ch.isspace() else "0.1",
            )
        ax.set_title(f"characters {lo}-{hi - 1}: {text[lo:hi]!r}", fontsize="medium")
        ax.grid(alpha=0.3)
        if p % ncols == 0:
            ax.set_ylabel(f"PC 2 ({100 * explained[1]:.0f}% of the variance)")
        if p // ncols == nrows - 1 or p + ncols >= n_panels:
            ax.set_xlabel(
                f"PC 1 ({100 * explained[0]:.0f}% of the variance of the validation states)"
            )
    axes[0].legend(fontsize="small", loc="upper right")
    _finish(
        fig,
        run,
        f"Hidden-state trajectory while reading {len(coords)} validation "
        "characters (␣ = space, ↵ = newline; colour: dark = earlier, yellow = later in "
        "the panel; grey = all the excerpt's states)",
    )
    return save_figure(fig, out)


def plot_word_position(run: Run, out: Path) -> Path:
    """Next-character accuracy by the input character's position within its word."""
    pos = _analysis(run, "word_position", "the word-boundary analysis")
    labels, acc, count = pos["labels"], pos["accuracy"], pos["count"]
    keep = [i for i, c in enumerate(count) if c > 0]
    fig = _new_figure(9, 4.8)
    ax = fig.subplots()
    x = np.arange(len(keep))
    heights = [acc[i] for i in keep]
    bar_colors = ["C3" if labels[i] == "after space" else "C0" for i in keep]
    ax.bar(x, heights, color=bar_colors)
    for xi, i in zip(x, keep):
        ax.text(
            xi,
            acc[i] + 0.015,
            f"{acc[i]:.2f}\nn={count[i]}",
            ha="center",
            va="bottom",
            fontsize="x-small",
        )
    ax.set_xticks(
        x,
        [labels[i] if labels[i] == "after space" else f"letter {labels[i]}" for i in keep],
        rotation=0,
        fontsize="small",
    )
    ax.set_ylim(0, 1.18)
    ax.set_xlabel("input character: a space, or the letter's position in its word (0 = first)")
    ax.set_ylabel("argmax next-character accuracy (fraction)")
    ax.grid(alpha=0.3, axis="y")
    handles = [
        Line2D([], [], color="C3", lw=6, label="after a space: the next word's first letter"),
        Line2D([], [], color="C0", lw=6, label="inside a word: next letter or the end"),
    ]
    ax.legend(handles=handles, fontsize="small", loc="upper left")
    _finish(fig, run, "Word boundaries: next-character accuracy on the validation text")
    return save_figure(fig, out)


# --------------------------------------------------------------------------------------
# All of them
# --------------------------------------------------------------------------------------

PLOTS: list[tuple[str, Callable[[Run, Path], Path]]] = [
    ("loss.png", plot_loss),
    ("spectral.png", plot_spectral),
    ("gradient_profile.png", plot_gradient_profile),
    ("jacobian.png", plot_jacobian),
    ("saturation.png", plot_saturation),
    ("word_categories.png", plot_word_categories),
    ("memory_probe.png", plot_memory_probe),
    ("hidden_trajectory.png", plot_hidden_trajectory),
    ("word_position.png", plot_word_position),
]


def plot_run(run_dir: str | Path, strict: bool = False) -> list[Path]:
    """Draw every plot the run has data for into run_dir; return the paths written.

    A plot without its data (record=false, no analysis.json, non-Elman text) is skipped
    and logged; an error while drawing one plot is logged and does not stop the others
    (strict=True raises it instead: for tests).
    """
    run = load_run(run_dir)
    written: list[Path] = []
    for name, draw in PLOTS:
        try:
            written.append(draw(run, run.path / name))
        except PlotSkipped as e:
            log.info("plot %s skipped: %s", name, e)
        except Exception as e:  # one broken plot must not cost the others
            if strict:
                raise
            log.warning("plot %s failed: %s: %s", name, type(e).__name__, e)
    return written
