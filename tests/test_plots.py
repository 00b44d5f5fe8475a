"""Every plot of a run is drawn from real (short) runs: tanh, relu, record=false."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

from rnn_lab.inspect.analysis import analyze_run
from rnn_lab.inspect.analysis_plots import _category_scores, place_labels, plot_memory_probe
from rnn_lab.inspect.dynamics_plots import plot_gradient_profile
from rnn_lab.inspect.figure_io import PlotSkipped
from rnn_lab.inspect.load import load_run
from rnn_lab.inspect.plots import PLOTS, plot_run
from rnn_lab.run.settings import TrainSettings
from rnn_lab.run.trainer import train

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ALL_PLOTS = {name for name, _ in PLOTS}
NEED_DIAGNOSTICS = {"gradient_profile.png", "jacobian.png", "saturation.png"}
NEED_ANALYSIS = {
    "word_categories.png",
    "memory_probe.png",
    "hidden_trajectory.png",
    "word_position.png",
}
SHORT = dict(
    steps=300,
    hidden_size=16,
    seq_len=10,
    record_dense_until=100,
    record_interval=20,
    jacobian_interval=100,
    jacobian_lags=6,
    sample_interval=0,
    val_interval=100,
    checkpoint_interval=0,
    log_interval=0,
    analyze=False,
)


def _trained(tmp_path_factory, name, **overrides):
    run_dir = tmp_path_factory.mktemp(name)
    train(TrainSettings(**{**SHORT, **overrides}), run_dir)
    return run_dir


def _assert_pngs(paths, expected):
    assert {p.name for p in paths} == expected
    for p in paths:
        data = p.read_bytes()
        assert data.startswith(PNG_SIGNATURE), p
        assert len(data) > 20_000, p  # a drawn figure, not an empty canvas


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_all_plots_for_a_recorded_run(tmp_path_factory, activation):
    run_dir = _trained(tmp_path_factory, activation, activation=activation)
    analyze_run(run_dir, plots=False)
    paths = plot_run(run_dir, strict=True)  # strict: a drawing error fails the test
    _assert_pngs(paths, ALL_PLOTS)
    assert all(p.parent == run_dir for p in paths)


def test_record_false_gets_the_plots_that_need_no_diagnostics(tmp_path_factory):
    """Through analyze_run(plots=True), as the end of training calls it."""
    run_dir = _trained(tmp_path_factory, "unrecorded", record=False)
    analyze_run(run_dir, plots=True)
    _assert_pngs(sorted(run_dir.glob("*.png")), ALL_PLOTS - NEED_DIAGNOSTICS)


def test_plots_say_what_they_lack(tmp_path_factory):
    """Without analysis.json or diagnostics a plot is skipped with the reason, not drawn."""
    run_dir = _trained(tmp_path_factory, "bare", steps=20, record=False)
    run = load_run(run_dir)
    with pytest.raises(PlotSkipped, match="analysis.json"):
        plot_memory_probe(run, run_dir / "memory_probe.png")
    with pytest.raises(PlotSkipped, match="record=false"):
        plot_gradient_profile(run, run_dir / "gradient_profile.png")
    assert not list(run_dir.glob("*.png"))


def test_place_labels_separates_labels_on_one_point():
    fig = Figure(figsize=(5, 4))
    canvas = FigureCanvasAgg(fig)  # a renderer, to measure the labels as drawn
    ax = fig.subplots()
    xy = np.array([[0.0, 0.0]] * 6 + [[1.0, 1.0]])
    ax.scatter(xy[:, 0], xy[:, 1])
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "alone"]
    place_labels(fig, ax, xy, words, ["k"] * len(words))
    fig.draw_without_rendering()
    renderer = canvas.get_renderer()
    # Text's own extent: an Annotation's would include its leader line.
    boxes = [Text.get_window_extent(t, renderer) for t in ax.texts]
    assert [t.get_text() for t in ax.texts] == words
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert not boxes[i].overlaps(boxes[j]), (words[i], words[j])


def test_category_title_says_whether_the_structure_beats_its_baselines():
    class FakeRun:
        analysis = {
            "category_separation": 0.56,
            "category_chance": 0.34,
            "category_separation_init": 0.29,
            "category_separation_spelling": 0.50,
            "category_separation_beats_baselines": False,
            "dendrogram_noun_verb_ari": 0.27,
        }

    title = _category_scores(FakeRun)
    assert "separation 0.56 (chance 0.34, untrained 0.29, spelling 0.50" in title
    assert "not beyond them" in title and "adjusted Rand 0.27" in title
    FakeRun.analysis = {**FakeRun.analysis, "category_separation_beats_baselines": True}
    assert ": beyond them" in _category_scores(FakeRun)
    FakeRun.analysis = {}
    assert _category_scores(FakeRun) == ""


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_the_fixed_margins_hold_every_label(tmp_path_factory, monkeypatch, cell):
    """The run plots are laid out by fixed margins (figure_io.Margins), not measured: every
    axes' labels, titles and legends and the figure's title stay inside the figure and clear
    of each other (as constrained layout would have them), for the vanilla cell and for a gated
    cell's longer labels (gate legends, s = (h, c))."""
    import rnn_lab.inspect.analysis_plots as analysis_plots
    import rnn_lab.inspect.dynamics_plots as dynamics_plots
    from rnn_lab.inspect import figure_io

    figures = {}

    def keep(fig, path):
        figures[path.name] = fig
        return figure_io.save_figure(fig, path)

    for module in (analysis_plots, dynamics_plots):
        monkeypatch.setattr(module, "save_figure", keep)
    run_dir = _trained(tmp_path_factory, f"margins_{cell}", cell={"name": cell})
    analyze_run(run_dir, plots=False)
    plot_run(run_dir, strict=True)
    assert set(figures) == ALL_PLOTS
    problems = {name: figure_io.layout_problems(fig) for name, fig in figures.items()}
    assert not any(problems.values()), problems
    # The check can fail: a label longer than the margins leave room for.
    fig = figures["saturation.png"]
    fig.axes[0].set_ylabel("a y label far longer than the margin left of the axes " * 2)
    assert figure_io.layout_problems(fig)
