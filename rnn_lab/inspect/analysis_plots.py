"""The run's plots of its trained network, drawn from analysis.json
(rnn_lab.inspect.analysis): Elman's word categories, the memory probe, the hidden-state
trajectory, next-character accuracy by position in a word."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from rnn_lab.inspect.figure_io import ONE_AXES, Margins, PlotSkipped, new_figure, save_figure
from rnn_lab.inspect.load import Run
from rnn_lab.inspect.plot_parts import analysis_details, finish_figure

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


def plot_word_categories(run: Run, out: Path) -> Path:
    """Word means in the 2-D PCA, labelled and coloured by category; their dendrogram."""
    from scipy.cluster.hierarchy import dendrogram

    cat = analysis_details(run, "categories", "the word-category analysis", topic="word categories")
    words, categories = cat["words"], cat["word_categories"]
    coords = np.asarray(cat["pca"], dtype=float)
    colors = [CATEGORY_COLORS.get(c, "0.3") for c in categories]
    fig = new_figure(14, 6.4, Margins(0.75, 0.9, 1.55, 1.05, wspace=0.6, cols=2))
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
    finish_figure(fig, run, f"Elman's word categories in the hidden state{_category_scores(run)}")
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
    mem = analysis_details(run, "memory_probe", "the memory probe")
    lags = np.asarray(mem["lags"])
    fig = new_figure(9.5, 5.0, ONE_AXES)
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
    finish_figure(fig, run, "Memory probe: ridge readout of the character k steps back from h_t")
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
    traj = analysis_details(run, "trajectory", "the hidden-state trajectory")
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
    margins = Margins(0.75, 0.2, 0.55, 0.85, wspace=0.25, hspace=0.45, cols=ncols, rows=nrows)
    fig = new_figure(7.2 * ncols, 5.4 * nrows, margins)
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
    finish_figure(
        fig,
        run,
        f"Hidden-state trajectory while reading {len(coords)} validation "
        "characters (␣ = space, ↵ = newline; colour: dark = earlier, yellow = later in "
        "the panel; grey = all the excerpt's states)",
    )
    return save_figure(fig, out)


def plot_word_position(run: Run, out: Path) -> Path:
    """Next-character accuracy by the input character's position within its word."""
    pos = analysis_details(run, "word_position", "the word-boundary analysis")
    labels, acc, count = pos["labels"], pos["accuracy"], pos["count"]
    keep = [i for i, c in enumerate(count) if c > 0]
    fig = new_figure(9, 4.8, ONE_AXES)
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
    finish_figure(fig, run, "Word boundaries: next-character accuracy on the validation text")
    return save_figure(fig, out)
