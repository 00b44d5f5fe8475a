"""What every plot of one run shares: the title naming the run, and the data it reads (a
history column, a section of analysis.json)."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from rnn_lab.inspect.figure_io import PlotSkipped
from rnn_lab.inspect.load import Run


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


def finish_figure(fig: Figure, run: Run, title: str) -> None:
    fig.suptitle(f"{title}\n{run_title(run)}", fontsize="medium")


def history_column(run: Run, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of a history column, rows with a value only."""
    h = run.history
    if h.empty or column not in h.columns:
        return np.array([]), np.array([])
    rows = h[["step", column]].dropna()
    return rows["step"].to_numpy(), rows[column].to_numpy(dtype=float)


def analysis_details(run: Run, key: str, what: str, topic: str = "") -> dict:
    """details[key] of analysis.json; a skip naming why when absent (the analysis's notes
    that begin with topic, when given: the others are about other metrics)."""
    if run.analysis is None:
        raise PlotSkipped(f"no analysis.json ({what} comes from `rnn-lab analyze`)")
    details = run.analysis.get("details") or {}
    if key not in details:
        notes = [n for n in run.analysis.get("notes") or [] if n.startswith(topic)]
        raise PlotSkipped("; ".join(notes) or f"no {key} in analysis.json")
    return details[key]
