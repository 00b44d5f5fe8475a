"""The analysis of a trained network: metrics on known inputs, on a real Elman run, and the
run-directory and command-line paths (interrupted runs, errors)."""

from __future__ import annotations

import json
import math
import signal

import numpy as np
import pytest

from rnn_lab.core.data import CharTextTask, Vocab, generate_elman_corpus, word_category
from rnn_lab.inspect import analysis, network_states, word_metrics
from rnn_lab.inspect import memory_probe as probe
from rnn_lab.inspect.analysis import analyze_params, analyze_run, initial_params, main_analyze
from rnn_lab.inspect.elman_structure import (
    STRUCTURES,
    adjusted_rand_index,
    bootstrap_margin,
    category_tokens,
    last_letter_rule_correct,
    nearest_centroid_accuracy,
    spelling_features,
    structure_scores,
)
from rnn_lab.inspect.load import load_run
from rnn_lab.inspect.memory_probe import memory_probe
from rnn_lab.inspect.network_states import word_spans
from rnn_lab.inspect.training_dynamics import gradient_decay, gradient_fall, jacobian_bound
from rnn_lab.inspect.word_metrics import vocab_hit_rate, word_position_accuracy
from rnn_lab.run.settings import TrainSettings
from rnn_lab.run.trainer import train

# Category structure takes a while to emerge with the walkthrough's SGD (6,000 steps, ~8 s); eight
# streams with Adam get there in 1,500 steps (~3 s) and are still the same engine.
ELMAN_TRAINED = dict(
    steps=1500,
    batch_size=8,
    optim={"name": "adam"},
    lr=0.005,
    seed=1,
    record=False,
    val_interval=0,
    checkpoint_interval=0,
    log_interval=0,
    analyze=False,
)
TINY = dict(
    steps=60,
    hidden_size=12,
    seq_len=8,
    val_interval=0,
    checkpoint_interval=0,
    log_interval=0,
    analyze=False,
    record=False,
)


@pytest.fixture(scope="module")
def elman_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("elman")
    train(TrainSettings(**ELMAN_TRAINED), run_dir)
    return run_dir


@pytest.fixture(scope="module")
def elman_analysis(elman_run):
    run = load_run(elman_run)
    text = generate_elman_corpus()
    return analyze_params(run.params(), run.settings, text, Vocab(run.vocab))


@pytest.fixture(scope="module")
def untrained_analysis(elman_run):
    run = load_run(elman_run)
    text = generate_elman_corpus()
    init = initial_params(run.settings, len(run.vocab))
    return analyze_params(init, run.settings, text, Vocab(run.vocab), compare_init=False)


# --------------------------------------------------------------------------------------
# The metric functions on inputs whose answer is known
# --------------------------------------------------------------------------------------


def test_word_spans():
    assert word_spans(" ab  c\nde") == [("ab", 1, 2), ("c", 5, 5), ("de", 7, 8)]
    assert word_spans("") == []


def test_vocab_hit_rate_drops_the_cut_last_word():
    known = {"the", "boy", "sleeps"}
    r = vocab_hit_rate("the boy sleepz the bo", known)  # "bo" is cut by the length: ignored
    assert r["generated_words"] == 4 and r["generated_known_words"] == 3
    assert r["vocab_hit_rate"] == pytest.approx(0.75)
    assert vocab_hit_rate("the boy ", known)["vocab_hit_rate"] == 1.0
    assert vocab_hit_rate("xx", known)["vocab_hit_rate"] is None


def test_word_position_accuracy_groups():
    text = "ab cde fg"
    # Predictions after each character from index 0: perfect except the first letter after
    # each space, and the word end after "cde".
    truth = text[1:]
    predicted = list(truth)
    predicted[2] = "x"  # after " " (index 2): the next word's first letter
    predicted[5] = "x"  # after "e" (position 2 of "cde"): the space
    r = word_position_accuracy("".join(predicted), text, 0)
    acc = dict(zip(r["labels"], r["accuracy"]))
    count = dict(zip(r["labels"], r["count"]))
    assert count["after space"] == 2 and acc["after space"] == 0.5
    assert count["0"] == 3 and acc["0"] == 1.0  # a->b, c->d, f->g
    assert count["2"] == 1 and acc["2"] == 0.0  # e->" " missed
    assert r["word_end_accuracy"] == pytest.approx(1 / 2)  # b->" " right, e->" " wrong
    assert r["within_word_accuracy"] == 1.0
    # Starting inside a word: the position of the first character comes from the text.
    r = word_position_accuracy(truth[4:], text, 4)  # text[4] = "d", position 1 of "cde"
    assert dict(zip(r["labels"], r["count"]))["1"] == 1


def test_nearest_centroid_leaves_the_whole_group_out():
    rng = np.random.default_rng(0)
    # Two classes far apart, three "words" per class with a small offset each.
    centres = {"A": np.array([0.0, 0.0]), "B": np.array([10.0, 0.0])}
    X, labels, groups = [], [], []
    for c, centre in centres.items():
        for w in range(3):
            offset = rng.normal(0, 0.5, 2)
            for _ in range(5):
                X.append(centre + offset + rng.normal(0, 0.1, 2))
                labels.append(c)
                groups.append(f"{c}{w}")
    X, labels, groups = np.array(X), np.array(labels), np.array(groups)
    assert nearest_centroid_accuracy(X, labels, groups) == 1.0
    # Words that sit with the other class are misplaced once their own tokens are held out,
    # although token-level leave-one-out would still get them right.
    X_swapped = X.copy()
    X_swapped[groups == "A0"] += centres["B"]
    score = nearest_centroid_accuracy(X_swapped, labels, groups)
    assert score == pytest.approx(25 / 30)


def test_spelling_features_and_the_last_letter_rule():
    X = spelling_features(["cat", "cat", "cats", "dog"])
    assert np.allclose(np.linalg.norm(X, axis=1), 1.0)
    assert np.allclose(X[0], X[1]) and X[0] @ X[2] > X[0] @ X[3]
    words = np.array(["cat", "cat", "dog", "glass", "runs", "runs", "eats", "sees"])
    labels = np.array(["N", "N", "N", "N", "V", "V", "V", "V"])
    # Held out, each word takes the class of the other words with its last letter: the -s
    # rule, which misplaces "glass" only; a last letter no other word has takes the majority.
    correct = last_letter_rule_correct(words, labels, words)
    assert correct.tolist() == [False, False, False, False, True, True, True, True]
    words[1] = words[0] = "cab"  # "cab" and "dog": no other word ends like them
    assert last_letter_rule_correct(words[:3], labels[:3], words[:3]).all()


def test_structure_scores_tell_learned_structure_from_spelling():
    rng = np.random.default_rng(0)
    words = [f"{a}{b}{c}" for a in "bcdfg" for b in "aeiou" for c in "klmnp"][:40]
    classes = np.array(["A", "B"] * 20)
    groups = np.repeat(np.array(words), 5)
    labels = np.repeat(classes, 5)
    seen = list(groups)
    spelling = spelling_features(seen)
    # States that hold the class (plus noise): beyond spelling, whatever the word.
    learned = np.where(labels[:, None] == "A", 1.0, -1.0) + rng.normal(0, 0.5, (200, 3))
    s = structure_scores(learned, spelling, seen, labels, groups)
    assert s["value"] > 0.9 and s["beats_baselines"] and s["margin_ci_low"] > 0
    assert s["init"] < 0.7 and s["chance"] == 0.5
    # States that are the spelling itself: no margin, never "beyond".
    s = structure_scores(spelling, spelling, seen, labels, groups)
    assert s["margin"] <= 0 and s["beats_baselines"] is False
    # Without the untrained network there is no verdict.
    assert structure_scores(learned, None, seen, labels, groups)["beats_baselines"] is None


def test_bootstrap_margin_over_word_types():
    groups = np.repeat(np.arange(20), 10)
    labels = np.repeat(np.array(["A", "B"]), 100)
    perfect = np.ones(200, dtype=bool)
    half = np.repeat(np.arange(20) % 2 == 0, 10)
    low, high = bootstrap_margin({"trained": perfect, "init": half}, labels, groups)
    assert 0.2 < low <= high <= 0.5 + 1e-12
    # No better than a baseline: the margin is never above 0 (max() takes that baseline).
    low, high = bootstrap_margin({"trained": half, "init": half}, labels, groups)
    assert low <= high <= 1e-12
    assert bootstrap_margin({"trained": perfect, "x": half}, labels, groups) == (
        bootstrap_margin({"trained": perfect, "x": half}, labels, groups)
    )


def test_adjusted_rand_index():
    assert adjusted_rand_index([0, 0, 1, 1], ["n", "n", "v", "v"]) == pytest.approx(1.0)
    assert adjusted_rand_index([1, 1, 0, 0], ["n", "n", "v", "v"]) == pytest.approx(1.0)
    # Each split mixes the classes evenly: no better than chance (below 0 here).
    assert adjusted_rand_index([0, 1, 0, 1], ["n", "n", "v", "v"]) < 0
    # One word on the wrong side: 1 pair of 6 disagrees in the contingency sense.
    ari = adjusted_rand_index([0, 0, 0, 1, 1, 1], ["n", "n", "v", "v", "v", "v"])
    assert 0 < ari < 1


def test_gradient_fall_from_the_recorded_profile():
    T = 25
    g = np.vstack([0.8 ** np.arange(T - 1, -1, -1.0) * k for k in (1, 2, 3)])
    g[1] = 0.5 ** np.arange(T - 1, -1, -1.0)
    out = gradient_fall({"last_loss_grad_norm": g})
    assert out["gradient_fall_first"] == pytest.approx(0.8 ** -(T - 1))
    assert out["gradient_fall_last"] == pytest.approx(0.8 ** -(T - 1))
    assert out["gradient_fall_median"] == pytest.approx(0.8 ** -(T - 1))
    assert gradient_fall({}) == {} and gradient_fall({"last_loss_grad_norm": g[:, :1]}) == {}
    g[0, 0] = 0.0  # a profile that vanished to 0 has no finite fall: left out
    assert gradient_fall({"last_loss_grad_norm": g})["gradient_fall_first"] is None


def test_memory_probe_recovers_a_known_memory():
    """States that hold exactly the last three characters: lags 1 and 2 decode perfectly,
    lag 3 is at chance, so the span is 2."""
    rng = np.random.default_rng(0)
    V, N = 5, 4000
    ids = rng.integers(0, V, N)
    eye = np.eye(V)
    states = np.concatenate([eye[ids], eye[np.roll(ids, 1)], eye[np.roll(ids, 2)]], axis=1)
    r = memory_probe(states, ids, split=3000, max_lag=6, vocab_size=V)
    assert r["lag0_accuracy"] == 1.0
    assert r["accuracy"][:2] == [1.0, 1.0]
    assert max(r["accuracy"][2:]) < r["chance"] + r["margin"]
    assert r["span"] == 2
    assert r["lags"] == [1, 2, 3, 4, 5, 6]


def test_memory_probe_reads_a_bounded_window_around_the_split(monkeypatch):
    """On a long text the probe fits on the last PROBE_FIT_ROWS states before the split and
    scores the first PROBE_SCORE_ROWS after it: the same answer as on that window alone."""
    monkeypatch.setattr(probe, "PROBE_FIT_ROWS", 500)
    monkeypatch.setattr(probe, "PROBE_SCORE_ROWS", 200)
    rng = np.random.default_rng(1)
    V, N, split, max_lag = 7, 6000, 5000, 4
    ids = rng.integers(0, V, N)
    states = rng.normal(size=(N, 9)) + np.eye(V)[np.roll(ids, 1)] @ rng.normal(size=(V, 9))
    window = slice(split - 500 - max_lag, split + 200)
    bounded = memory_probe(states, ids, split, max_lag, V)
    alone = memory_probe(states[window], ids[window], 500 + max_lag, max_lag, V)
    assert bounded == alone
    assert bounded["accuracy"][0] > bounded["chance"] + 0.3  # lag 1 is in the states
    # and a change outside the window changes nothing
    ids_far, states_far = ids.copy(), states.copy()
    ids_far[:1000], states_far[-500:] = 0, 0.0
    assert memory_probe(states_far, ids_far, split, max_lag, V) == bounded


# --------------------------------------------------------------------------------------
# A real network trained on the Elman corpus
# --------------------------------------------------------------------------------------


def test_training_builds_category_structure(elman_analysis, untrained_analysis):
    a, u = elman_analysis, untrained_analysis
    chance = a["category_chance"]
    assert 0.25 < chance < 0.45  # majority class (NOUN_HUMAN) among the category words
    assert a["category_separation"] > chance + 0.1
    assert a["category_separation"] > u["category_separation"] + 0.1
    # The run's own comparison with its untrained network says the same.
    assert a["category_separation_init"] == pytest.approx(u["category_separation"])
    assert a["noun_verb_separation"] > a["noun_verb_chance"] + 0.2
    assert len(a["details"]["categories"]["words"]) >= 30


def test_every_structure_metric_has_its_baselines_and_verdict(elman_analysis):
    a = elman_analysis
    for spec in STRUCTURES:
        m = spec.name
        for key in (m, f"{m}_init", f"{m}_spelling", spec.chance_name):
            assert 0.0 <= a[key] <= 1.0, key
        best = max(a[f"{m}_init"], a[f"{m}_spelling"], a[spec.chance_name])
        assert a[f"{m}_margin"] == pytest.approx(a[m] - best)
        assert a[f"{m}_margin_ci_low"] <= a[f"{m}_margin_ci_high"]
        assert a[f"{m}_beats_baselines"] == (a[f"{m}_margin_ci_low"] > 0)
        detail = a["details"]["structures"][m]
        assert detail["spelling"] == max(detail["spelling_ngram"], detail["spelling_last_letter"])
    assert -1.0 <= a["dendrogram_noun_verb_ari"] <= 1.0
    assert {"dendrogram_noun_verb_ari_init", "dendrogram_noun_verb_ari_spelling"} <= set(a)
    assert len(a["details"]["categories"]["top_split"]) == 2


def test_noun_verb_is_read_before_the_s_that_gives_it_away(elman_analysis):
    """On whole words an "ends in -s" rule nearly solves noun vs verb; on what the network has
    read before the last letter, spelling is far from it, and that is the baseline used."""
    tokens = category_tokens(generate_elman_corpus())
    words = np.array([w for w, _, _ in tokens])
    coarse = np.array([word_category(w).split("_")[0] for w in words])
    assert last_letter_rule_correct(words, coarse, words).mean() > 0.98
    assert elman_analysis["noun_verb_separation_spelling"] < 0.9
    assert elman_analysis["details"]["structures"]["noun_verb_separation"]["state"] == (
        "before_last"
    )


def test_untrained_network_remembers_the_last_character(untrained_analysis):
    u = untrained_analysis
    assert u["memory_lag1_accuracy"] > u["memory_chance"] + 0.3
    assert u["memory_span"] >= 2


def test_trained_network_generates_words_and_finds_boundaries(elman_analysis):
    a = elman_analysis
    assert a["vocab_hit_rate"] > 0.6
    assert a["within_word_accuracy"] > 0.8
    assert a["word_end_accuracy"] > 0.8
    # The next word after a space is the hard prediction.
    assert a["boundary_accuracy"] < a["within_word_accuracy"]
    assert a["memory_lag1_accuracy"] > a["memory_chance"] + 0.3
    assert len(a["details"]["memory_probe"]["accuracy"]) == 2 * 25
    assert len(a["details"]["trajectory"]["pca"]) == network_states.TRAJECTORY_LENGTH


def test_analysis_is_deterministic(elman_run, elman_analysis):
    run = load_run(elman_run)
    again = analyze_params(run.params(), run.settings, generate_elman_corpus(), Vocab(run.vocab))
    assert analysis.scalar_metrics(again) == analysis.scalar_metrics(elman_analysis)


# --------------------------------------------------------------------------------------
# Run directories
# --------------------------------------------------------------------------------------


def test_analyze_run_writes_and_merges(tmp_path):
    run_dir = tmp_path / "run"
    train(TrainSettings(**TINY), run_dir)
    before = json.loads((run_dir / "summary.json").read_text())
    merged = analyze_run(run_dir, plots=False)
    written = json.loads((run_dir / "analysis.json").read_text())
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert merged == on_disk
    for key, value in before.items():  # the trainer's keys are kept
        assert on_disk[key] == value
    for key in ("vocab_hit_rate", "category_separation", "memory_span", "analysis_step"):
        assert on_disk[key] == written[key]
    assert "gradient_fall_median" not in written  # record=false: no profile to measure
    assert "details" not in on_disk and "notes" not in on_disk  # scalars only
    assert written["analysis_step"] == TINY["steps"]
    assert not list(run_dir.glob("*.png"))


def _interrupt_after(n_batches: int):
    """A task that sends this process SIGINT when the trainer asks for batch n_batches."""

    class Interrupting(CharTextTask):
        calls = 0

        def next_batch(self):
            Interrupting.calls += 1
            if Interrupting.calls == n_batches:
                signal.raise_signal(signal.SIGINT)
            return super().next_batch()

    return Interrupting(generate_elman_corpus(), seq_len=8)


def test_interrupted_run_is_analysed_at_its_checkpoint(tmp_path):
    run_dir = tmp_path / "interrupted"
    summary = train(TrainSettings(**{**TINY, "steps": 10_000}), run_dir, task=_interrupt_after(40))
    assert summary["status"] == "interrupted" and summary["steps_done"] == 40
    merged = analyze_run(run_dir, plots=False)
    assert merged["status"] == "interrupted"  # the analysis does not pretend it finished
    assert merged["analysis_step"] == 40
    assert merged["vocab_hit_rate"] is not None and math.isfinite(merged["memory_lag1_accuracy"])


def test_cut_off_run_is_analysed_at_its_checkpoint(tmp_path):
    """A job killed mid-training: summary still says "running", the last checkpoint is older."""
    run_dir = tmp_path / "killed"
    train(TrainSettings(**{**TINY, "steps": 50}), run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    summary.update(status="running", steps=300)
    (run_dir / "summary.json").write_text(json.dumps(summary))
    merged = analyze_run(run_dir, plots=False)
    assert merged["status"] == "running" and merged["analysis_step"] == 50
    assert "category_separation" in merged


def test_diverged_weights_do_not_crash(tmp_path):
    run_dir = tmp_path / "nan"
    train(TrainSettings(**TINY), run_dir)
    with np.load(run_dir / "checkpoint.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["W_hh"] = np.full_like(arrays["W_hh"], np.nan)
    np.savez(run_dir / "checkpoint.npz", **arrays)
    merged = analyze_run(run_dir, plots=False)
    written = json.loads((run_dir / "analysis.json").read_text())
    assert "not finite" in written["notes"][0]
    assert "vocab_hit_rate" not in merged


@pytest.mark.parametrize(
    "variant",
    [
        {"use_embedding": True, "embed_dim": 6},
        {"activation": "sigmoid", "dtype": "float32"},
        {"freeze_whh": True, "init": {"name": "xavier", "scale": 1.0, "path": None}},
    ],
)
def test_other_models_are_analysed(tmp_path, variant):
    run_dir = tmp_path / "run"
    train(TrainSettings(**{**TINY, **variant}), run_dir)
    merged = analyze_run(run_dir, plots=False)
    assert 0.0 <= merged["vocab_hit_rate"] <= 1.0
    assert merged["memory_lag1_accuracy_init"] is not None
    written = json.loads((run_dir / "analysis.json").read_text())
    assert len(written["memory_probe_acc"]) == 2 * TINY["seq_len"]
    assert written["notes"] == []


def test_text_data_skips_categories(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("It was the best of times, it was the worst of times.\n" * 40)
    run_dir = tmp_path / "text"
    settings = TrainSettings(**{**TINY, "data": {"name": "text", "path": str(corpus)}})
    train(settings, run_dir)
    merged = analyze_run(run_dir, plots=False)
    written = json.loads((run_dir / "analysis.json").read_text())
    assert "category_separation" not in merged and "vocab_hit_rate" not in merged
    skipped = "word categories skipped: the data is not the Elman corpus"
    assert skipped in written["notes"]
    assert word_metrics.NOT_ELMAN_HIT_RATE in written["notes"]
    assert len(written["details"]["generated"]["text"]) == word_metrics.GENERATED_LENGTH
    # The categories plot says why it is skipped, not the other metrics' notes.
    from rnn_lab.inspect.analysis_plots import plot_word_categories
    from rnn_lab.inspect.figure_io import PlotSkipped

    with pytest.raises(PlotSkipped, match=rf"^{skipped}$"):
        plot_word_categories(load_run(run_dir), run_dir / "word_categories.png")
    assert merged["memory_span"] >= 0 and merged["boundary_accuracy"] is not None


# --------------------------------------------------------------------------------------
# rnn-lab analyze
# --------------------------------------------------------------------------------------


def test_main_analyze_missing_directory(tmp_path, capsys):
    assert main_analyze([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "not a directory" in err and len(err.strip().splitlines()) == 1


def test_main_analyze_without_checkpoint(tmp_path, capsys):
    (tmp_path / "summary.json").write_text('{"status": "failed"}')
    assert main_analyze([str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint.npz" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "analysis.json").exists()


def test_main_analyze_changed_text_is_an_error(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("abc abd abe " * 100)
    run_dir = tmp_path / "run"
    train(TrainSettings(**{**TINY, "data": {"name": "text", "path": str(corpus)}}), run_dir)
    corpus.write_text("xyz " * 300)  # the text the run trained on is gone
    assert main_analyze([str(run_dir)]) == 2
    assert "not the text it was trained on" in capsys.readouterr().err
    # Same characters, other text: only the recorded hash can tell.
    corpus.write_text("abd abc abe " * 100)
    assert main_analyze([str(run_dir)]) == 2
    assert "text_sha1 differs" in capsys.readouterr().err


def test_main_analyze_ok(tmp_path, capsys):
    run_dir = tmp_path / "run"
    train(TrainSettings(**TINY), run_dir)
    assert main_analyze([str(run_dir), "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "vocab_hit_rate" in out and "memory_span" in out
    assert (run_dir / "analysis.json").exists()
    assert not list(run_dir.glob("*.png"))


def test_gradient_fall_is_measured_on_a_recorded_run(tmp_path):
    run_dir = tmp_path / "run"
    train(TrainSettings(**{**TINY, "record": True, "record_interval": 10}), run_dir)
    merged = analyze_run(run_dir, plots=False)
    with np.load(run_dir / "diagnostics.npz") as z:
        g = z["last_loss_grad_norm"]
    assert merged["gradient_fall_median"] == pytest.approx(float(np.median(g[:, -1] / g[:, 0])))
    assert merged["gradient_fall_first"] == pytest.approx(float(g[0, -1] / g[0, 0]))


def test_jacobian_bound_and_gradient_decay_on_known_profiles():
    k = np.arange(1, 6)
    exact = {"jacobian_product_norm": np.array([0.5**k]), "jacobian_sigma_max": np.array([0.5])}
    out = jacobian_bound(exact, "linear")  # W_hh = 0.5 I: the bound is met with equality
    assert out["jacobian_bound_ratio_max"] == pytest.approx(1.0, rel=1e-12)
    assert out["jacobian_bound_violations"] == 0 and out["jacobian_bound_factor_first"] == 0.5
    # sigmoid: gamma = 1/4, so the same products exceed its bound 4^k-fold
    over = jacobian_bound(exact, "sigmoid")
    assert over["jacobian_bound_violations"] == 5
    assert over["jacobian_bound_ratio_max"] == pytest.approx(4.0**5, rel=1e-9)
    profile = {"last_loss_grad_norm": np.array([[1.0, 2.0, 4.0, 8.0], [8.0, 8.0, 8.0, 8.0]])}
    decay = gradient_decay(profile)
    assert decay["gradient_decay_first"] == pytest.approx(0.5)  # halves every step back
    assert decay["gradient_decay_last"] == pytest.approx(1.0)
    assert decay["gradient_decay_median"] == pytest.approx(0.75)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu"])
def test_trained_runs_obey_the_jacobian_bound(tmp_path, tiny_settings, activation):
    s = tiny_settings(activation=activation, jacobian_interval=10, jacobian_lags=8)
    train(s, tmp_path)
    analysis = analyze_run(tmp_path, plots=False)
    assert analysis["jacobian_bound_violations"] == 0
    assert 0 < analysis["jacobian_bound_ratio_max"] <= 1 + 1e-9
    assert 0 < analysis["gradient_decay_first"]
