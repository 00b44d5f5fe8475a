"""Gated cells through the readers: tiny rnn / gru / lstm runs trained, analysed and drawn,
then collected as one study with a `cell` axis and reported.

The runs are a few seconds in all (H=8, 60 steps, 40 sentences); what is checked is that the
analysis, the plots, the collector and the report read a GRU's or LSTM's run directory as
they read a vanilla one, with the gated-only keys beside the shared ones.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import yaml

from rnn_lab.core import cells
from rnn_lab.inspect.analysis import analyze_run, scalar_metrics
from rnn_lab.inspect.load import load_run
from rnn_lab.inspect.plots import PLOTS
from rnn_lab.inspect.training_dynamics import JACOBIAN_BOUND_KEYS
from rnn_lab.run.settings import TrainSettings
from rnn_lab.run.trainer import train
from rnn_lab.study.collect import collect
from rnn_lab.study.figures import has_gated_arms
from rnn_lab.study.report import build_report
from rnn_lab.study.stats import metric_direction

CELLS = ("rnn", "gru", "lstm")
ALL_PLOTS = {name for name, _ in PLOTS}
# Sequence tasks have no text: the plots of the trained network's text analysis are skipped.
TEXT_ONLY_PLOTS = {"word_categories.png", "memory_probe.png", "hidden_trajectory.png"}
TEXT_ONLY_PLOTS.add("word_position.png")
TINY = dict(
    steps=60,
    hidden_size=8,
    seq_len=8,
    val_interval=20,
    checkpoint_interval=0,
    record_interval=10,
    record_dense_until=0,
    jacobian_interval=20,
    jacobian_lags=4,
    sample_interval=0,
    log_interval=0,
    analyze=False,
    data={"name": "elman", "seed": 42, "num_sentences": 40},
)
COPY = {"name": "copy", "seed": 42, "length": 3, "symbols": 4, "delay": 4, "val_sequences": 50}
ADDING = {"name": "adding", "seed": 42, "length": 10, "val_sequences": 50}


def _settings(cell: str, **changes) -> TrainSettings:
    return TrainSettings(**{**TINY, "cell": {"name": cell}, **changes})


def _analysed(run_dir, caplog) -> dict:
    """analyze_run(plots=True) as the end of training calls it; no plot may fail."""
    with caplog.at_level(logging.WARNING, logger="rnn_lab"):
        analyze_run(run_dir, plots=True)
    failed = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert not failed, failed
    return load_run(run_dir).analysis


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """One folder of three runs, one per cell, each with the .hydra/config.yaml a sweep job
    has; the rnn run's config has no `cell` key, as runs written before the group existed."""
    root = tmp_path_factory.mktemp("cells")
    for i, cell in enumerate(CELLS):
        s = _settings(cell)
        run_dir = root / str(i)
        assert train(s, run_dir)["status"] == "ok"
        config = s.to_dict()
        if cell == "rnn":
            config.pop("cell")
        (run_dir / ".hydra").mkdir()
        (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    return root


class _Failures(logging.Handler):
    """The plots analyze_run logs as failed (it logs a drawing error instead of raising)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        if "failed" in record.getMessage():
            self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def analysed(study):
    """cell -> (run dir, its analysis.json, the plot failures logged), each analysed with
    analyze_run(plots=True) as the end of training does."""
    out, logger = {}, logging.getLogger("rnn_lab")
    for i, cell in enumerate(CELLS):
        run_dir, failures = study / str(i), _Failures()
        logger.addHandler(failures)
        try:
            analyze_run(run_dir, plots=True)
        finally:
            logger.removeHandler(failures)
        out[cell] = (run_dir, load_run(run_dir).analysis, failures.messages)
    return out


@pytest.mark.parametrize("cell", CELLS)
def test_load_run_gives_the_cells_parameters(study, cell):
    run = load_run(study / str(CELLS.index(cell)))
    assert run.cell == cell and run.gated == (cell != "rnn")
    params = run.params()
    assert cells.cell_of(params) == cell
    with np.load(run.path / "checkpoint.npz") as z:
        for name in cells.param_names(cell):
            np.testing.assert_array_equal(params.arrays()[name], z[name])


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_gated_analysis_has_the_vanilla_keys_and_the_gate_keys(analysed, cell):
    _, vanilla, _ = analysed["rnn"]
    run_dir, analysis, _ = analysed[cell]
    # every scalar a vanilla run has, with the same meaning (losses, honest metrics, profile)
    assert set(scalar_metrics(vanilla)) <= set(scalar_metrics(analysis))
    for key in ("category_separation_margin", "memory_span", "gradient_decay_median"):
        assert analysis[key] is not None and math.isfinite(analysis[key]), key
    # the Pascanu bound is the vanilla cell's theorem: null for gated runs, and said so
    assert all(vanilla[k] is not None for k in JACOBIAN_BOUND_KEYS)
    assert all(analysis[k] is None for k in JACOBIAN_BOUND_KEYS)
    assert any("jacobian_bound" in note for note in analysis["notes"])
    # the gated-only keys: per-gate spectral radii at the checkpoint, gate saturation
    radii = cells.spectral_radii(load_run(run_dir).params())
    for gate in cells.gate_names(cell):
        assert analysis[f"spectral_radius_{gate}"] == pytest.approx(radii[gate])
        assert 0.0 <= analysis[f"gate_saturation_{gate}"] <= 1.0
    assert not any(k.startswith(("gate_saturation_", "spectral_radius_")) for k in vanilla)
    # the scalars reach summary.json, where the collector reads them
    summary = load_run(run_dir).summary
    assert summary[f"spectral_radius_{cells.gate_names(cell)[0]}"] is not None


@pytest.mark.parametrize("cell", CELLS)
def test_every_plot_is_drawn_for_every_cell(analysed, cell):
    run_dir, _, failures = analysed[cell]
    assert not failures, failures
    assert {p.name for p in run_dir.glob("*.png")} == ALL_PLOTS


@pytest.mark.parametrize(("cell", "data"), [("gru", COPY), ("lstm", ADDING)])
def test_sequence_tasks_with_gated_cells(tmp_path, caplog, cell, data):
    run_dir = tmp_path / cell
    assert train(_settings(cell, data=data), run_dir)["status"] == "ok"
    analysis = _analysed(run_dir, caplog)
    if data["name"] == "copy":
        keys = ["ce_per_step", "recall_accuracy", "recall_ce", "memoryless_baseline"]
        keys += ["recall_chance", "ce_per_step_init", "recall_accuracy_init"]
    else:
        keys = ["mse", "baseline_mse", "mse_init"]
    for key in keys:
        assert analysis[key] is not None and math.isfinite(analysis[key]), key
    for gate in cells.gate_names(cell):
        assert 0.0 <= analysis[f"gate_saturation_{gate}"] <= 1.0
        assert f"spectral_radius_{gate}" in analysis
    assert all(analysis[k] is None for k in JACOBIAN_BOUND_KEYS)
    assert {p.name for p in run_dir.glob("*.png")} == ALL_PLOTS - TEXT_ONLY_PLOTS


def test_collect_has_a_cell_column_and_the_gated_columns(study, analysed):
    df = collect(study, write=False)
    assert sorted(df["cell"]) == sorted(CELLS)  # the run without a `cell` setting is rnn
    assert df.attrs["arm_keys"] == ["cell"]
    assert set(df["arm"]) == {f"cell={c}" for c in CELLS}
    assert has_gated_arms(df)
    by_cell = df.set_index("cell")
    for cell in ("gru", "lstm"):
        for gate in cells.gate_names(cell):
            for column in (f"spectral_radius_{gate}", f"gate_saturation_{gate}"):
                assert np.isfinite(by_cell.loc[cell, column]), (cell, column)
    assert np.isnan(by_cell.loc["rnn", "spectral_radius_n"])
    assert by_cell.loc["gru", "jacobian_bound_ratio_max"] is None or np.isnan(
        by_cell.loc["gru", "jacobian_bound_ratio_max"]
    )


def test_a_vanilla_only_folder_still_has_a_cell_column(study, tmp_path):
    df = collect(study / "0", write=False)
    assert list(df["cell"]) == ["rnn"] and "cell" not in df.attrs["arm_keys"]
    assert not has_gated_arms(df)


def test_report_treats_cell_as_a_grid_axis(study, analysed):
    report = build_report(study).read_text()
    assert "cell=gru" in report and "cell=lstm" in report
    assert "largest recurrent block" in report  # the spectral-radius caption with gated arms
    assert (study / "plots" / "spectral_radius.png").exists()
    assert (study / "plots" / "grad_norm_profile.png").exists()


def test_task_metrics_have_a_direction():
    lower = ("mse", "ce_per_step", "recall_ce")
    higher = ("recall_accuracy", "memory_capacity", "category_separation_margin")
    assert all(metric_direction(m) == "lower" for m in lower)
    assert all(metric_direction(m) == "higher" for m in higher)
    assert metric_direction("dendrogram_noun_verb_ari_margin") == "higher"
    assert metric_direction("gate_saturation_f") is None
