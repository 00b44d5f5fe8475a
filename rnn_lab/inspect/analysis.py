"""What a trained network has learned: generated words, word boundaries, Elman's word
categories, memory of past characters, and the path of its hidden state.

``analyze_run(run_dir)`` loads the run's last checkpoint, rebuilds its text and vocabulary,
computes the metrics below, writes ``analysis.json``, merges the scalar metrics into
``summary.json`` (so a sweep table can compare them) and draws the run's plots. The metric
functions are plain functions on arrays, usable on any parameters (e.g. an untrained
network, which every run is compared against).

Conventions: ``states[t]`` is the hidden state right after the network has read character
``t`` of the text, the whole text run as one stream from h = 0 (as the trainer walks it;
states are causal, so the validation part of the stream sees only its own past). The
validation split is the last ``val_fraction`` of the text, cut as the trainer cuts it. A text
of more than ``ANALYSIS_MAX_CHARS`` characters is analysed on an excerpt around that cut (the
end of the training split, then the start of the validation split, one stream from h = 0
at the excerpt's start), and the memory probe fits on at most ``PROBE_FIT_ROWS`` states and
scores at most ``PROBE_SCORE_ROWS``, so time and memory stay bounded on any text (the Elman
corpus, ~12k characters, is analysed whole and probed on every state).

Metrics (all in analysis.json under these names; scalars also in summary.json):

- vocab_hit_rate: fraction of the words of ~2000 generated characters that are words of
  the training text (the Elman corpus only: on any other text a word list of the whole text
  is unknown to the analysis, which reads an excerpt, and punctuation sticks to words, so the
  number would mislead; a note says it does not apply and the generated text is kept).
- boundary_accuracy / within_word_accuracy / word_end_accuracy: argmax next-character
  accuracy on the validation text right after a space (which word comes next), inside a
  word (the next letter), and at a word's last letter (is the next character a space).
- Structure metrics (see the comment above STRUCTURES): each category word token is
  classified from its hidden state by nearest centroid with its whole word type held out
  (a word is placed by the OTHER words of its class, so its own spelling cannot do it), and
  the same is done on the untrained network's states (`<metric>_init`) and on the word's
  letters alone (`<metric>_spelling`); `<metric>_margin` = trained - the best of those and
  the majority-class rate, with a 95% bootstrap CI over word types
  (`_margin_ci_low/_high`), and `<metric>_beats_baselines` = that CI is above 0.
  category_separation (chance: category_chance, the majority-class rate, not 1/7): Elman's
  7 categories at the boundary state (after the space that ends the word).
  noun_verb_separation (noun_verb_chance): noun vs verb at the state BEFORE the word's last
  letter: every verb here ends in -s, so at the boundary an "ends in -s" rule scores 0.99 and
  an untrained network 0.96, above the trained one; the -s is not read yet one letter earlier.
  noun_category_separation / verb_category_separation: the 4 noun classes among the nouns,
  the 3 verb classes among the verbs (boundary state), where spelling says little.
  dendrogram_noun_verb_ari (_init, _spelling, _margin): the adjusted Rand index between the
  top split of the dendrogram of the word means (as drawn) and noun | verb.
  Why the boundary state and whole types held out for the categories: with token-level
  leave-one-out at the last letter, a word's other tokens (same spelling, same state) define
  its centroid, and an untrained network scored 0.72-0.83, as high as trained ones.
- memory_probe (memory_lag1_accuracy, memory_span, memory_chance): a ridge readout
  decoding the character k steps back from the state, k = 1 .. 2 x seq_len, fit on the
  training text (its last PROBE_FIT_ROWS states), scored on the validation text (its first
  PROBE_SCORE_ROWS states); see :func:`memory_probe`.
- *_init: the same metrics for the run's own untrained network (same init and seed), so
  every run says what training added.
- gradient_fall_median / _first / _last: ||dL_T/dh_T|| / ||dL_T/dh_1||, how far the last
  step's loss gradient falls over the chunk, from diagnostics.npz (median over the record
  steps, at step 1 and at the last record step); absent with record=false.
- analysis_step: the training step of the checkpoint analysed.

Every cell (rnn, gru, lstm: rnn_lab.core.cells): the metrics above read the hidden state h
(the LSTM's cell state c carries along unseen) and keep their names and meaning. Gated cells
add spectral_radius_<gate> (each gate's H x H recurrent block at the checkpoint) and
gate_saturation_<gate> (fraction of the gate's values within 0.05 of the ends of its range over
the analysed text); their jacobian_bound_* are null (see :func:`jacobian_bound`).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnn_lab.core import cells, engine
from rnn_lab.core.data import EncodedText, Vocab, split_ids, word_category
from rnn_lab.inspect.load import cell_options, load_run
from rnn_lab.inspect.task_metrics import analyze_task_params, is_sequence_task
from rnn_lab.run import rundir
from rnn_lab.run.input_files import load_corpus
from rnn_lab.run.rundir import (
    ANALYSIS_FILE,
    RunDirError,
    atomic_write_json,
    read_json,
)

log = logging.getLogger("rnn_lab")
detail_log = logging.getLogger("rnn_lab.detail")  # lines for train.log, not the terminal

GENERATED_LENGTH = 2000  # characters sampled for the vocab hit rate
WORD_POSITION_MAX = 7  # positions 0..6 have a bin each, 7 and beyond share the last
MEMORY_MARGIN = 0.05  # a lag counts as remembered when accuracy > chance + this
RIDGE_LAMBDA = 1e-2  # ridge penalty, times the mean eigenvalue of the states' covariance
TRAJECTORY_LENGTH = 100  # first characters of the validation text drawn as a PCA path
# Longest text analysed whole; (N, H) states of two networks and (N, V) probe targets per lag.
ANALYSIS_MAX_CHARS = 100_000
# The memory probe's states: its cost is rows x H x V per lag (2 x seq_len lags, two networks),
# 40 s at H=256, V=86, seq_len=50 on 90k rows. Above the Elman corpus's ~11k training states
# and ~1.2k validation states, so its runs are probed on every state.
PROBE_FIT_ROWS = 16_384
PROBE_SCORE_ROWS = 4_096
# Time steps per forward call when a gated cell's states are computed (its forward keeps every
# gate value: bounded chunks keep the memory bounded; the state carries across, so exact).
STATE_CHUNK = 4096


# --------------------------------------------------------------------------------------
# Hidden states and words
# --------------------------------------------------------------------------------------


def hidden_states(params, activation: str, ids: np.ndarray) -> np.ndarray:
    """(N, H): the hidden state h after reading each character of ids, one stream from the
    zero state (any cell: for the LSTM, h_t; its cell state c_t carries along unseen)."""
    return run_states(params, activation, ids)[0]


def run_states(params, activation: str, ids: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """(states (N, H) as hidden_states, gate saturation over those N steps by gate letter).

    The gate saturation (cells.gate_saturation: the fraction of gate values within 0.05 of the
    ends of their range) is {} for the vanilla cell, which has no gates."""
    act = engine.get_activation(activation)
    cell = cells.cell_of(params)
    inputs = np.asarray(ids)[:, None]
    state = cells.zero_state(cell, 1, params.hidden_size, params.dtype)
    if cell == "rnn":  # no gates: the states alone, in one call (as before gated cells)
        return cells.run_hidden(params, inputs, state, act)[1:, 0], {}
    states = np.empty((len(inputs), params.hidden_size), dtype=params.dtype)
    near: dict[str, float] = {}
    for start in range(0, len(inputs), STATE_CHUNK):
        cache = cells.forward(params, inputs[start : start + STATE_CHUNK], state, act)
        n = cache.hs.shape[0] - 1
        states[start : start + n] = cache.hs[1:, 0]
        for gate, fraction in cells.gate_saturation(cache).items():
            near[gate] = near.get(gate, 0.0) + fraction * n
        state = tuple(np.array(x) for x in cells.final_state(cache))
    return states, {g: v / max(1, len(inputs)) for g, v in near.items()}


def output_logits(params, states: np.ndarray) -> np.ndarray:
    """(N, V): the next-character logits of each state."""
    return states @ params.W_hy.T + params.b_y


def word_spans(text: str) -> list[tuple[str, int, int]]:
    """(word, first index, last index) of every whitespace-separated word of text."""
    spans, start = [], None
    for i, c in enumerate(text):
        if c.isspace():
            if start is not None:
                spans.append((text[start:i], start, i - 1))
                start = None
        elif start is None:
            start = i
    if start is not None:
        spans.append((text[start:], start, len(text) - 1))
    return spans


def pca_2d(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Project rows of X onto their first two principal axes (SVD of the centred rows).

    Returns (coords (N, 2), axes (2, H), explained variance ratio of the two axes)."""
    Xc = X - X.mean(axis=0)
    _, s, Vt = np.linalg.svd(Xc, full_matrices=False)
    total = float((s**2).sum())
    k = min(2, Vt.shape[0])
    axes = np.zeros((2, X.shape[1]))
    axes[:k] = Vt[:k]
    explained = [float(s[i] ** 2 / total) if total > 0 and i < k else 0.0 for i in range(2)]
    return Xc @ axes.T, axes, explained


# --------------------------------------------------------------------------------------
# Generated text
# --------------------------------------------------------------------------------------


def generate_text(
    params, activation, vocab: Vocab, length: int, temperature: float, seed: int, prime: str = " "
) -> str:
    """length characters sampled after prime, from np.random.default_rng(seed)."""
    rng = np.random.default_rng(seed)
    prime_ids = [vocab.index[c] for c in prime if c in vocab.index] or [0]
    act = engine.get_activation(activation)
    return vocab.decode(cells.sample(params, act, prime_ids, length, temperature, rng))


def vocab_hit_rate(generated: str, known_words: set[str]) -> dict:
    """Fraction of the generated words that are known words.

    The last word is left out when the text stops inside it (the cut is not the network's).
    """
    words = generated.split()
    if words and generated and not generated[-1].isspace():
        words = words[:-1]
    hits = sum(w in known_words for w in words)
    return {
        "vocab_hit_rate": hits / len(words) if words else None,
        "generated_words": len(words),
        "generated_known_words": hits,
    }


NOT_ELMAN_HIT_RATE = (
    "vocab_hit_rate does not apply: the data is not the Elman corpus, whose word list it "
    "counts (on another text, words carry punctuation and a long text is analysed on an "
    "excerpt); the generated text is in details.generated"
)


# --------------------------------------------------------------------------------------
# Word-boundary behaviour
# --------------------------------------------------------------------------------------


def word_position_accuracy(predicted: str, text: str, start: int) -> dict:
    """Next-character accuracy grouped by where the input character sits in its word.

    predicted[i] is the argmax prediction made after reading text[start + i], scored against
    text[start + i + 1]. Groups: "after space" (the input is whitespace: the next word's
    first letter is due) and the input letter's position 0, 1, ..., 6, "7+" in its word.
    """
    last_label = f"{WORD_POSITION_MAX}+"
    labels = ["after space"] + [str(p) for p in range(WORD_POSITION_MAX)] + [last_label]
    correct = dict.fromkeys(labels, 0)
    count = dict.fromkeys(labels, 0)
    within = [0, 0]  # [hits, count] letter -> letter
    word_end = [0, 0]  # letter -> whitespace
    # The position of text[start] in its word depends on the characters before it.
    j = start - 1
    while j >= 0 and not text[j].isspace():
        j -= 1
    position = start - j - 1
    for i, pred in enumerate(predicted[: len(text) - 1 - start]):
        c, nxt = text[start + i], text[start + i + 1]
        hit = int(pred == nxt)
        if c.isspace():
            label, position = "after space", 0
        else:
            label = str(position) if position < WORD_POSITION_MAX else last_label
            position += 1
            pair = word_end if nxt.isspace() else within
            pair[0] += hit
            pair[1] += 1
        correct[label] += hit
        count[label] += 1
    accuracy = {k: (correct[k] / count[k] if count[k] else None) for k in labels}
    return {
        "labels": labels,
        "accuracy": [accuracy[k] for k in labels],
        "count": [count[k] for k in labels],
        "boundary_accuracy": accuracy["after space"],
        "within_word_accuracy": within[0] / within[1] if within[1] else None,
        "word_end_accuracy": word_end[0] / word_end[1] if word_end[1] else None,
    }


# --------------------------------------------------------------------------------------
# Elman's word categories
# --------------------------------------------------------------------------------------


def nearest_centroid_accuracy(X: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> float:
    """Leave-one-group-out nearest-centroid accuracy (Euclidean); see nearest_centroid_correct."""
    return float(nearest_centroid_correct(X, labels, groups).mean())


def nearest_centroid_correct(X: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Per row: is it placed in its own class by leave-one-group-out nearest centroid?

    Each row is classified by the class centroids computed without the rows of its group
    (groups = word types: a word is placed by the OTHER words of each class). A class left
    without rows by the hold-out cannot be chosen.
    """
    classes = np.unique(labels)
    label_idx = np.searchsorted(classes, labels)
    K = len(classes)
    sums = np.zeros((K, X.shape[1]))
    np.add.at(sums, label_idx, X)
    counts = np.bincount(label_idx, minlength=K).astype(float)
    correct = np.zeros(len(labels), dtype=bool)
    for g in np.unique(groups):
        rows = groups == g
        g_sums = np.zeros_like(sums)
        np.add.at(g_sums, label_idx[rows], X[rows])
        g_counts = np.bincount(label_idx[rows], minlength=K)
        left = counts - g_counts
        centroids = (sums - g_sums) / np.maximum(left, 1)[:, None]
        d = ((X[rows][:, None, :] - centroids[None]) ** 2).sum(-1)
        d[:, left == 0] = np.inf
        correct[rows] = d.argmin(axis=1) == label_idx[rows]
    return correct


def majority_rate(labels) -> float:
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    return float(counts.max() / counts.sum())


def category_tokens(text: str, start: int = 0) -> list[tuple[str, str, int]]:
    """(word, category, state index) for the category words (determiners left out) of text
    from index start, at each word's boundary state: the state after the space that ends
    it (the word is complete and the network is predicting what follows). A word that ends
    the text has no boundary and is left out."""
    out = []
    for word, first, last in word_spans(text):
        category = word_category(word)
        if first < start or category in (None, "DETERMINER") or last + 1 >= len(text):
            continue
        out.append((word, category, last + 1))
    return out


def category_structure(states: np.ndarray, text: str) -> dict:
    """Elman's picture of the boundary states of the category words of the whole text.

    The whole text, not only the validation split: this is a description of the network's
    geometry, not a fitted readout, and the validation split holds ~160 category words, too
    few for per-word means. Returns the per-word mean states' 2-D PCA and their
    average-linkage clustering (the dendrogram), with the two groups of its top split.
    The separation scores are :func:`structure_metrics`.
    """
    tokens = category_tokens(text)
    if len({c for _, c, _ in tokens}) < 2:
        return {"skipped": "fewer than two word categories in the text"}
    types, type_categories, means = word_means(states, tokens)
    coords, _, explained = pca_2d(means)
    link = average_linkage(means)
    words = [w for w, _, _ in tokens]
    return {
        "source": "whole text (training and validation)",
        "state": "boundary (after the space that ends the word)",
        "n_tokens": len(tokens),
        "words": types,
        "word_categories": type_categories,
        "word_counts": [words.count(w) for w in types],
        "pca": coords.tolist(),
        "pca_explained_variance": explained,
        "linkage": link.tolist() if link is not None else None,
        "top_split": top_split_groups(link, types),
    }


def word_means(states: np.ndarray, tokens) -> tuple[list[str], list[str], np.ndarray]:
    """(word types ordered by category then word, their categories, (n_types, H) mean state
    of each type over its tokens)."""
    category_of = {w: c for w, c, _ in tokens}
    types = sorted(category_of, key=lambda w: (category_of[w], w))
    words = np.array([w for w, _, _ in tokens])
    X = states[[t for _, _, t in tokens]]
    means = np.array([X[words == w].mean(axis=0) for w in types])
    return types, [category_of[w] for w in types], means


def average_linkage(means: np.ndarray) -> np.ndarray | None:
    from scipy.cluster.hierarchy import linkage

    return linkage(means, method="average", metric="euclidean") if len(means) > 1 else None


def top_split(link: np.ndarray | None, n: int) -> np.ndarray:
    """(n,) 0/1: the two groups the dendrogram's top merge joins (all 0 without a linkage)."""
    from scipy.cluster.hierarchy import fcluster

    if link is None:
        return np.zeros(n, dtype=int)
    return fcluster(link, 2, criterion="maxclust") - 1


def top_split_groups(link: np.ndarray | None, types: list[str]) -> list[list[str]]:
    side = top_split(link, len(types))
    return [[w for w, s in zip(types, side) if s == k] for k in (0, 1)]


def adjusted_rand_index(a, b) -> float:
    """Hubert & Arabie's adjusted Rand index of two labelings: 1 identical partitions, ~0 (or
    below) for partitions no more alike than chance."""
    from scipy.special import comb

    _, ai = np.unique(np.asarray(a), return_inverse=True)
    _, bi = np.unique(np.asarray(b), return_inverse=True)
    table = np.zeros((ai.max() + 1, bi.max() + 1))
    np.add.at(table, (ai, bi), 1)
    pairs = comb(table, 2).sum()
    rows, cols, total = comb(table.sum(1), 2).sum(), comb(table.sum(0), 2).sum(), comb(len(ai), 2)
    expected = rows * cols / total if total else 0.0
    best = (rows + cols) / 2
    return float((pairs - expected) / (best - expected)) if best != expected else 1.0


# --------------------------------------------------------------------------------------
# Structure beyond spelling and beyond the untrained network
# --------------------------------------------------------------------------------------
#
# A category score alone proves little: the state after a word holds its last letters, so
# any network, trained or not, "separates" words that are spelled alike, and here all verbs
# end in -s. Each structure metric is therefore computed three ways on the same tokens with
# the same hold-out (whole word types left out, so a word is placed by the OTHER words of its
# class): on the trained network's states, on the untrained network's (`_init`), and on the
# word's letters alone (`_spelling`: the better of a nearest-centroid classifier on character
# 1-3-gram counts and a "same last letter, same class" majority rule learned from the other
# words; the -s rule is the latter). `_chance` is the majority-class rate. `_margin` is the
# trained score minus the best of the three baselines; its 95% CI is a bootstrap over word
# types (the types resampled with replacement, each baseline re-scored on the resample and
# the best one taken again; the per-token predictions are fixed, so the CI says how much the
# verdict depends on which words the corpus happens to hold, not on the training seed: a
# study's seeds give that one). `_beats_baselines` is true when that CI lies above 0, None
# when the untrained network could not be rebuilt.

STRUCTURE_RESAMPLES = 2000  # bootstrap resamples of the word types
STRUCTURE_CONFIDENCE = 0.95


@dataclass(frozen=True)
class StructureSpec:
    """A structure metric: which tokens, which labels, and which state of each token."""

    name: str
    chance_name: str
    labels: str  # "category" (Elman's 7 classes) or "coarse" (NOUN | VERB)
    within: str | None  # only the tokens of this coarse class (NOUN | VERB)
    # "boundary": the state after the space that ends the word (what follows is predicted);
    # "before_last": the state before the word's last letter (the verbs' -s is not yet read).
    state: str


# Why noun/verb is read before the last letter: at the boundary, the -s rule places 99% of
# the tokens and the untrained network 96% (its state holds the last letters), above the
# trained network's 92%: the score measured spelling. One letter earlier the -s is not
# visible, the spelling baseline sees the same prefix the network has read, and what is
# left to find is what the sentence so far says (after a determiner a noun, after a noun
# phrase a verb), which is the distinction Elman's network learned from context.
STRUCTURES = (
    StructureSpec("category_separation", "category_chance", "category", None, "boundary"),
    StructureSpec("noun_verb_separation", "noun_verb_chance", "coarse", None, "before_last"),
    StructureSpec(
        "noun_category_separation", "noun_category_chance", "category", "NOUN", "boundary"
    ),
    StructureSpec(
        "verb_category_separation", "verb_category_chance", "category", "VERB", "boundary"
    ),
)
STATE_OFFSET = {"boundary": 0, "before_last": -2}  # from the boundary state's index


def spelling_features(words) -> np.ndarray:
    """(N, F): counts of the character 1-, 2- and 3-grams of "<word>" (with boundary marks),
    each row scaled to unit length: a word described by its letters alone."""
    grams = [_char_grams(f"<{w}>") for w in words]
    index = {g: j for j, g in enumerate(dict.fromkeys(g for gs in grams for g in gs))}
    X = np.zeros((len(words), max(1, len(index))))
    for i, gs in enumerate(grams):
        for g in gs:
            X[i, index[g]] += 1
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def _char_grams(text: str) -> list[str]:
    return [text[i : i + k] for k in (1, 2, 3) for i in range(len(text) + 1 - k)]


def last_letter_rule_correct(seen, labels: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Per token: does "the majority class of the OTHER word types' tokens that end in the
    same letter" (all other tokens when none does) name its class? `seen` is the part of the
    word read so far; for whole words, on this corpus, this is the "ends in -s" rule."""
    last = np.array([w[-1:] for w in seen])
    correct = np.zeros(len(labels), dtype=bool)
    for g in np.unique(groups):
        rows = groups == g
        for letter in np.unique(last[rows]):
            pool = labels[~rows & (last == letter)]
            pool = pool if len(pool) else labels[~rows]
            values, counts = np.unique(pool, return_counts=True)
            here = rows & (last == letter)
            correct[here] = labels[here] == values[counts.argmax()]
    return correct


def bootstrap_margin(
    correct: dict[str, np.ndarray], labels: np.ndarray, groups: np.ndarray, seed: int = 0
) -> tuple[float, float]:
    """95% percentile CI of accuracy(trained) - max(accuracy of each baseline, majority rate)
    over resamples of the word types. correct: per-token hits, "trained" and the baselines."""
    types, type_idx = np.unique(groups, return_inverse=True)
    _, label_idx = np.unique(labels, return_inverse=True)
    n_tokens = np.bincount(type_idx, minlength=len(types)).astype(float)
    label_counts = np.zeros((len(types), label_idx.max() + 1))
    np.add.at(label_counts, (type_idx, label_idx), 1.0)
    hits = {k: np.bincount(type_idx, weights=v, minlength=len(types)) for k, v in correct.items()}
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(types), size=(STRUCTURE_RESAMPLES, len(types)))
    weight = np.zeros((STRUCTURE_RESAMPLES, len(types)))
    np.add.at(weight, (np.arange(STRUCTURE_RESAMPLES)[:, None], draws), 1.0)
    total = weight @ n_tokens
    best = (weight @ label_counts).max(axis=1) / total  # majority rate of each resample
    for k, h in hits.items():
        if k != "trained":
            best = np.maximum(best, weight @ h / total)
    margin = weight @ hits["trained"] / total - best
    tail = 100 * (1 - STRUCTURE_CONFIDENCE) / 2
    return float(np.percentile(margin, tail)), float(np.percentile(margin, 100 - tail))


def structure_scores(X, X_init, seen, labels: np.ndarray, groups: np.ndarray) -> dict:
    """One structure metric on its tokens: the trained states X, the untrained X_init (or
    None), what the network has read of each word (`seen`), the classes and word types."""
    correct = {"trained": nearest_centroid_correct(X, labels, groups)}
    if X_init is not None:
        correct["init"] = nearest_centroid_correct(X_init, labels, groups)
    correct["spelling_ngram"] = nearest_centroid_correct(spelling_features(seen), labels, groups)
    correct["spelling_last_letter"] = last_letter_rule_correct(seen, labels, groups)
    acc = {k: float(v.mean()) for k, v in correct.items()}
    spelling = max(acc["spelling_ngram"], acc["spelling_last_letter"])
    chance = majority_rate(labels)
    margin = acc["trained"] - max(acc.get("init", -math.inf), spelling, chance)
    low, high = bootstrap_margin(correct, labels, groups)
    return {
        "value": acc["trained"],
        "init": acc.get("init"),
        "spelling": spelling,
        "chance": chance,
        "margin": margin,
        "margin_ci_low": low,
        "margin_ci_high": high,
        "beats_baselines": bool(low > 0) if X_init is not None else None,
        "spelling_ngram": acc["spelling_ngram"],
        "spelling_last_letter": acc["spelling_last_letter"],
        "n_tokens": len(labels),
        "n_types": len(np.unique(groups)),
    }


def structure_metrics(states, init_states, text: str) -> tuple[dict, dict]:
    """(scalar metrics, details) of every StructureSpec and of the dendrogram's top split, on
    the category words of the whole text; see the comment above STRUCTURES."""
    tokens = [tok for tok in category_tokens(text) if tok[2] + STATE_OFFSET["before_last"] >= 0]
    words = np.array([w for w, _, _ in tokens])
    categories = np.array([c for _, c, _ in tokens])
    coarse = np.array([c.split("_")[0] for c in categories])
    boundary = np.array([t for _, _, t in tokens])
    metrics, details = {}, {}
    for spec in STRUCTURES:
        rows = coarse == spec.within if spec.within else np.ones(len(tokens), dtype=bool)
        labels = (categories if spec.labels == "category" else coarse)[rows]
        if len(np.unique(labels)) < 2:
            continue
        index = boundary[rows] + STATE_OFFSET[spec.state]
        seen = [w if spec.state == "boundary" else w[:-1] for w in words[rows]]
        X_init = init_states[index] if init_states is not None else None
        s = structure_scores(states[index], X_init, seen, labels, words[rows])
        metrics[spec.name] = s["value"]
        metrics[spec.chance_name] = s["chance"]
        for k in ("init", "spelling", "margin", "margin_ci_low", "margin_ci_high"):
            metrics[f"{spec.name}_{k}"] = s[k]
        metrics[f"{spec.name}_beats_baselines"] = s["beats_baselines"]
        details[spec.name] = {"state": spec.state, "within": spec.within, **s}
    metrics.update(dendrogram_noun_verb(states, init_states, tokens))
    return metrics, details


def dendrogram_noun_verb(states, init_states, tokens) -> dict:
    """How well the top split of the word-mean dendrogram (boundary states, as drawn) is nouns
    vs verbs: the adjusted Rand index of the two groups against NOUN | VERB (1: exactly nouns
    vs verbs; ~0: unrelated), for the trained network, the untrained one and a dendrogram of
    the words' spelling features. No CI within a run: a study's seeds give it."""
    types, type_categories, means = word_means(states, tokens)
    coarse = [c.split("_")[0] for c in type_categories]
    if len(set(coarse)) < 2:
        return {}

    def ari(X: np.ndarray) -> float:
        return adjusted_rand_index(top_split(average_linkage(X), len(X)), coarse)

    out = {
        "dendrogram_noun_verb_ari": ari(means),
        "dendrogram_noun_verb_ari_spelling": ari(spelling_features(types)),
    }
    baselines = [out["dendrogram_noun_verb_ari_spelling"]]
    if init_states is not None:
        out["dendrogram_noun_verb_ari_init"] = ari(word_means(init_states, tokens)[2])
        baselines.append(out["dendrogram_noun_verb_ari_init"])
    out["dendrogram_noun_verb_ari_margin"] = out["dendrogram_noun_verb_ari"] - max(baselines)
    return out


# --------------------------------------------------------------------------------------
# Training dynamics (diagnostics.npz)
# --------------------------------------------------------------------------------------


def gradient_fall(diagnostics: dict) -> dict:
    """How far the last step's loss gradient falls over the chunk: at each record step,
    ||dL_T/dh_T|| / ||dL_T/dh_1|| from last_loss_grad_norm (T = seq_len). gradient_fall_median:
    its median over the record steps; _first / _last: at the first (step 1, the untrained
    network) and the last record step. {} without a recorded profile."""
    g = diagnostics.get("last_loss_grad_norm") if diagnostics else None
    if g is None or np.ndim(g) != 2 or np.shape(g)[1] < 2 or len(g) == 0:
        return {}
    g = np.asarray(g, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        fall = g[:, -1] / g[:, 0]
    ok = np.isfinite(fall) & (fall > 0)
    if not ok.any():
        return {}
    return {
        "gradient_fall_median": float(np.median(fall[ok])),
        "gradient_fall_first": float(fall[0]) if ok[0] else None,
        "gradient_fall_last": float(fall[-1]) if ok[-1] else None,
    }


def gradient_decay(diagnostics: dict) -> dict:
    """The per-step factor of the last step's loss gradient over the chunk: the geometric
    mean (||dL_T/dh_1|| / ||dL_T/dh_T||)^(1/(T-1)), < 1 when it vanishes (0.5 = halves every
    step). A per-step factor, not the whole fall, because a fall over a chunk spans tens of
    orders of magnitude across arms and a t-interval over it says nothing. _first (step 1, the
    untrained network), _median (over record steps), _last."""
    g = diagnostics.get("last_loss_grad_norm") if diagnostics else None
    if g is None or np.ndim(g) != 2 or np.shape(g)[1] < 2 or len(g) == 0:
        return {}
    g = np.asarray(g, dtype=float)
    T = g.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        decay = np.exp((np.log(g[:, 0]) - np.log(g[:, -1])) / (T - 1))
    ok = np.isfinite(decay)
    if not ok.any():
        return {}
    return {
        "gradient_decay_first": float(decay[0]) if ok[0] else None,
        "gradient_decay_median": float(np.median(decay[ok])),
        "gradient_decay_last": float(decay[-1]) if ok[-1] else None,
    }


JACOBIAN_BOUND_KEYS = (
    "jacobian_bound_ratio_max",
    "jacobian_bound_violations",
    "jacobian_bound_factor_first",
)


def jacobian_bound(diagnostics: dict, activation: str, cell: str = "rnn") -> dict:
    """Pascanu, Mikolov & Bengio (2013): every product P_k = J_T ... J_{T-k+1} of one-step
    Jacobians diag(f'(a_t)) W_hh obeys ||P_k|| <= (gamma sigma_max(W_hh))^k, gamma = max |f'|.

    jacobian_bound_ratio_max: the largest ||P_k|| / (gamma sigma_max)^k over every captured
    step and lag (<= 1 when the bound holds; computed in logs: products span 1e-40..1e12);
    jacobian_bound_violations: how many (capture, lag) pairs exceed the bound by more than a
    relative 1e-9 (rounding); jacobian_bound_factor_first: gamma sigma_max at the first capture
    (< 1: the bound forces the gradient to vanish geometrically).

    Gated cells: every key is None. The bound is a theorem about the vanilla cell, whose
    one-step Jacobian is diag(f'(a_t)) W_hh; a GRU's or LSTM's Jacobian ds_t/ds_{t-1} adds
    the gates' own paths (z h, f c) and their derivatives to it, so gamma sigma_max of one
    block bounds nothing, and no bound is invented here. Their Jacobian products against the
    lag are still recorded and drawn (jacobian.png)."""
    if cell != "rnn":
        return dict.fromkeys(JACOBIAN_BOUND_KEYS)
    P = diagnostics.get("jacobian_product_norm") if diagnostics else None
    sigma = diagnostics.get("jacobian_sigma_max") if diagnostics else None
    if P is None or sigma is None or np.size(P) == 0 or len(sigma) != len(P):
        return {}
    gamma = engine.get_activation(activation).deriv_max
    P, sigma = np.asarray(P, dtype=float), np.asarray(sigma, dtype=float)
    k = np.arange(1, P.shape[1] + 1)  # lags
    with np.errstate(divide="ignore", invalid="ignore"):
        log_ratio = np.log(P) - k[None, :] * np.log(gamma * sigma)[:, None]  # (m, K)
    ok = np.isfinite(log_ratio)
    if not ok.any():
        return {}
    return {
        "jacobian_bound_ratio_max": float(np.exp(np.max(log_ratio[ok]))),
        "jacobian_bound_violations": int(np.sum(log_ratio[ok] > np.log1p(1e-9))),
        "jacobian_bound_factor_first": float(gamma * sigma[0]),
    }


# --------------------------------------------------------------------------------------
# Memory probe
# --------------------------------------------------------------------------------------


def memory_probe(
    states: np.ndarray,
    ids: np.ndarray,
    split: int,
    max_lag: int,
    vocab_size: int,
    margin: float = MEMORY_MARGIN,
) -> dict:
    """Decode the character k steps back from the state, k = 0 .. max_lag.

    One ridge readout per lag (closed form, one-vs-rest on one-hot targets, bias by
    centring): fit on the states of the training text, scored (argmax accuracy) on the
    validation text (the last PROBE_FIT_ROWS states before split and the first
    PROBE_SCORE_ROWS from it). Lag 0 is the character just read (a sanity check, not memory);
    lag k is the character read k steps before it. memory_span: the number of lags, counting
    from 1, whose accuracy stays above chance + margin, where chance is the majority-class
    rate of the validation characters scored. input_only_accuracy: the same decoding from the
    current character alone (a table fit on the training text), i.e. what the text's
    statistics give without any memory.
    """
    ids = np.asarray(ids)
    states = np.asarray(states, dtype=np.float64)  # float32 runs: solve in double precision
    N, H = states.shape
    # the same rows for every lag: one Gram matrix
    train_rows = np.arange(max(max_lag, split - PROBE_FIT_ROWS), split)
    val_rows = np.arange(max(split, max_lag), N)[:PROBE_SCORE_ROWS]
    X = states[train_rows]
    mean = X.mean(axis=0)
    Xc = X - mean
    gram = Xc.T @ Xc
    lam = RIDGE_LAMBDA * max(float(np.trace(gram)) / H, 1e-12)
    chol = np.linalg.cholesky(gram + lam * np.eye(H))
    X_val = states[val_rows] - mean
    chance = majority_rate(ids[split : split + PROBE_SCORE_ROWS])
    # Per lag, the centred one-hot targets one_hot(y) - y_mean, built bit for bit without the
    # one-hot: y_mean is the class counts / n (what one_hot.mean(axis=0) computes: an exact
    # integer sum, then the division), and row i is row y_i of a (V, V) table whose entries
    # are 0.0 - y_mean and, on the diagonal, 1.0 - y_mean. One (n, V) buffer serves every lag.
    n = len(train_rows)
    classes = np.arange(vocab_size)
    centred_rows = np.empty((vocab_size, vocab_size))
    centred = np.empty((n, vocab_size))
    inputs_train, inputs_val = ids[train_rows], ids[val_rows]
    # The input-only table's flat index, less the target (intp: ids may be uint8).
    pairs = inputs_train.astype(np.intp) * vocab_size
    accuracy, input_only = [], []
    for k in range(max_lag + 1):
        y_train = ids[train_rows - k]
        y_val = ids[val_rows - k]
        y_mean = np.bincount(y_train, minlength=vocab_size) / n
        centred_rows[:] = 0.0 - y_mean
        centred_rows[classes, classes] = 1.0 - y_mean
        # mode="clip" (unbuffered): no id is out of range here, bincount has seen them all (a
        # negative id is an error there, one >= V makes y_mean too long for the table).
        np.take(centred_rows, y_train, axis=0, out=centred, mode="clip")
        rhs = Xc.T @ centred
        W = np.linalg.solve(chol.T, np.linalg.solve(chol, rhs))  # (H, V)
        predicted = (X_val @ W + y_mean).argmax(axis=1)
        accuracy.append(float((predicted == y_val).mean()))
        # The input-only table: counts of (current character, character k back), exact ints.
        table = np.bincount(pairs + y_train, minlength=vocab_size * vocab_size)
        table = table.reshape(vocab_size, vocab_size)
        input_only.append(float((table.argmax(axis=1)[inputs_val] == y_val).mean()))
    span = 0
    for acc in accuracy[1:]:
        if acc <= chance + margin:
            break
        span += 1
    return {
        "lags": list(range(1, max_lag + 1)),
        "accuracy": accuracy[1:],
        "lag0_accuracy": accuracy[0],
        "input_only_accuracy": input_only[1:],
        "chance": chance,
        "chance_kind": "majority-class rate of the validation characters",
        "margin": margin,
        "span": span,
        "ridge_lambda": lam,
    }


# --------------------------------------------------------------------------------------
# Hidden-state trajectory
# --------------------------------------------------------------------------------------


def hidden_trajectory(
    states: np.ndarray, text: str, split: int, length: int = TRAJECTORY_LENGTH
) -> dict:
    """About the first `length` characters of the validation text, from its first whole
    word, as a path in the 2-D PCA of all the validation states (the axes come from the
    whole validation text, not the excerpt)."""
    val_states = states[split:]
    _, axes, explained = pca_2d(val_states)
    first_space = next((i for i, c in enumerate(text[split:]) if c.isspace()), -1)
    start = split + first_space + 1 if 0 <= first_space < len(text) - split - 1 else split
    excerpt = states[start : start + length]
    coords = (excerpt - val_states.mean(axis=0)) @ axes.T
    return {
        "start": start,
        "text": text[start : start + len(excerpt)],
        "pca": coords.tolist(),
        "pca_explained_variance": explained,
    }


# --------------------------------------------------------------------------------------
# Everything for one set of parameters
# --------------------------------------------------------------------------------------


def initial_params(settings: dict, vocab_size: int):
    """The run's untrained network: its cell and init rebuilt from the settings (seeded, so
    exact). None when it cannot be rebuilt (e.g. init=file whose file is gone)."""
    from rnn_lab.run.input_files import build_params
    from rnn_lab.run.settings import DTYPES, TrainSettings

    defaults = TrainSettings()
    get = lambda key: settings.get(key, getattr(defaults, key))  # noqa: E731
    try:
        embed_dim = get("embed_dim") if get("use_embedding") else 0
        sizes = (vocab_size, get("hidden_size"), vocab_size)
        dtype = DTYPES[get("dtype")]
        return build_params(
            get("init"),
            sizes,
            seed=get("seed"),
            embed_dim=embed_dim,
            dtype=dtype,
            **cell_options(settings),
        )
    except (ValueError, TypeError, KeyError, OSError) as e:
        log.info("analysis: cannot rebuild the initial network (%s)", e)
        return None


def params_are_finite(params) -> bool:
    return all(np.all(np.isfinite(a)) for a in params.arrays().values())


def analyze_params(
    params, settings: dict, text: str, vocab: Vocab, *, compare_init=True, split=None
) -> dict:
    """All the metrics of one network on its text; the analysis.json document.

    split: where text's validation part starts (None: its last val_fraction, as trained).
    Top-level keys with scalar values are the metrics (merged into summary.json);
    "details" holds the curves and tables the plots draw; "notes" says what was skipped.
    """
    activation = str(settings.get("activation", "tanh"))
    seq_len = int(settings.get("seq_len", 25))
    val_fraction = float(settings.get("val_fraction", 0.1))
    ids = vocab.encode(text)
    split = len(split_ids(ids, val_fraction)[0]) if split is None else split
    notes: list[str] = []
    metrics: dict = {}
    details: dict = {}

    states, gates = run_states(params, activation, ids)
    if not np.all(np.isfinite(states)):
        return {"notes": ["hidden states are not finite: nothing to analyse"], "details": {}}
    # Gated cells: how many gate values sit at the ends of their range over the text read.
    metrics.update({f"gate_saturation_{g}": v for g, v in gates.items()})

    # Generated text: how many of its words are real words (the Elman corpus only).
    generated = generate_text(
        params,
        activation,
        vocab,
        GENERATED_LENGTH,
        float(settings.get("temperature", 1.0)),
        int(settings.get("seed", 0)),
    )
    details["generated"] = {"text": generated}
    is_elman = (settings.get("data") or {}).get("name") == "elman"
    if is_elman:
        hit = vocab_hit_rate(generated, set(text[:split].split()))
        metrics["vocab_hit_rate"] = hit["vocab_hit_rate"]
        details["generated"].update(hit)
    else:
        notes.append(NOT_ELMAN_HIT_RATE)

    # Word boundaries: predictions over the validation text.
    predicted = output_logits(params, states[split:-1]).argmax(axis=1)
    positions = word_position_accuracy(vocab.decode(predicted), text, split)
    for k in ("boundary_accuracy", "within_word_accuracy", "word_end_accuracy"):
        metrics[k] = positions[k]
    details["word_position"] = positions

    # The untrained network, for the category and memory baselines.
    init_states = None
    if compare_init:
        init = initial_params(settings, vocab.size)
        if init is not None:
            init_states = hidden_states(init, activation, ids)
            if not np.all(np.isfinite(init_states)):
                init_states = None
                notes.append("the untrained network's states are not finite: no *_init metrics")
        else:
            notes.append("the untrained network could not be rebuilt: no *_init metrics")

    # Elman's categories (the Elman corpus only).
    if is_elman:
        categories = category_structure(states, text)
        if "skipped" in categories:
            notes.append(f"word categories skipped: {categories['skipped']}")
        else:
            scores, details["structures"] = structure_metrics(states, init_states, text)
            metrics.update(scores)
            details["categories"] = categories
    else:
        notes.append("word categories skipped: the data is not the Elman corpus")

    # Memory probe.
    max_lag = max(1, min(2 * seq_len, split // 4))
    memory = memory_probe(states, ids, split, max_lag, vocab.size)
    metrics["memory_lag1_accuracy"] = memory["accuracy"][0]
    metrics["memory_span"] = memory["span"]
    metrics["memory_chance"] = memory["chance"]
    details["memory_probe"] = memory
    if init_states is not None:
        init_memory = memory_probe(init_states, ids, split, max_lag, vocab.size)
        metrics["memory_lag1_accuracy_init"] = init_memory["accuracy"][0]
        metrics["memory_span_init"] = init_memory["span"]
        details["memory_probe_init"] = {
            k: init_memory[k] for k in ("accuracy", "span", "lag0_accuracy")
        }

    details["trajectory"] = hidden_trajectory(states, text, split)
    # memory_probe_acc: the probe's accuracy per lag 1 .. max_lag, at the top level so a
    # sweep table can carry the whole curve (as JSON text; only scalars reach summary.json).
    return {**metrics, "memory_probe_acc": memory["accuracy"], "notes": notes, "details": details}


# --------------------------------------------------------------------------------------
# A run directory
# --------------------------------------------------------------------------------------


def scalar_metrics(analysis: dict) -> dict:
    """The top-level scalar entries of an analysis document (what summary.json receives)."""
    return {
        k: v for k, v in analysis.items() if v is None or isinstance(v, bool | int | float | str)
    }


def _recorded_text_sha1(run_dir) -> str | None:
    path = Path(run_dir) / rundir.VOCAB_FILE
    try:
        return read_json(path).get("text_sha1") if path.exists() else None
    except ValueError:
        return None


def analysis_text(corpus: EncodedText, val_fraction: float) -> tuple[str, int]:
    """(text, split): what the analysis reads and where its validation part starts.

    The whole text up to ANALYSIS_MAX_CHARS characters; beyond, an excerpt of that many:
    the end of the training split then the start of the validation split (val_fraction of
    the excerpt, at least 2 characters), decoded from the ids alone.
    """
    n = len(corpus.ids)
    split = len(split_ids(corpus.ids, val_fraction)[0])
    if n <= ANALYSIS_MAX_CHARS:
        return corpus.as_text(), split
    n_val = min(n - split, max(2, int(ANALYSIS_MAX_CHARS * val_fraction)))
    n_train = min(split, ANALYSIS_MAX_CHARS - n_val)
    return corpus.vocab.decode(corpus.ids[split - n_train : split + n_val]), n_train


def analyze_run(run_dir: str | Path, plots: bool = True) -> dict:
    """Analyse a run's last checkpoint; write analysis.json, merge its scalar metrics into
    summary.json and (plots=True) draw the run's plots. Returns the merged summary.

    Works on any run with a checkpoint, including one whose training was interrupted or
    cut off (its summary says "interrupted" or "running"): the analysis describes the
    weights of the last checkpoint, at step ``analysis_step``.
    Raises RunDirError when the directory or its checkpoint is missing.
    """
    run = load_run(run_dir)
    if not run.has_checkpoint:
        raise RunDirError(f"{run_dir}: no checkpoint.npz to analyse")
    params = run.params()
    settings = run.settings
    step = run.checkpoint_step()
    base = {
        "analysis_step": step,
        **gradient_fall(run.diagnostics),
        **gradient_decay(run.diagnostics),
        **jacobian_bound(run.diagnostics, run.activation, run.cell),
    }
    finite = params_are_finite(params)
    base.update(gate_spectral_radii(params) if finite else {})
    if not finite:
        analysis = {**base, "notes": ["the weights are not finite (a diverged run)"], "details": {}}
    elif is_sequence_task(settings):  # copy, adding, memory_capacity: the task's own metrics
        analysis = {**base, **analyze_task_params(params, settings)}
    else:
        corpus = load_corpus(settings.get("data") or {"name": "elman"})
        vocab = Vocab(run.vocab) if run.vocab else corpus.vocab
        missing = sorted(set(corpus.vocab.chars) - set(vocab.chars))
        recorded_sha1 = _recorded_text_sha1(run_dir)
        if recorded_sha1 and recorded_sha1 != corpus.sha1:
            raise RunDirError(
                f"{run_dir}: the text rebuilt from the run's data settings is not the text it "
                "was trained on (vocab.json's text_sha1 differs); was data.path changed since "
                "training?"
            )
        if missing:
            raise RunDirError(
                f"{run_dir}: the text rebuilt from the run's data settings holds characters "
                f"the run's vocab.json lacks ({''.join(missing)[:20]!r}); was data.path "
                "changed since training?"
            )
        text, split = analysis_text(corpus, float(settings.get("val_fraction", 0.1)))
        analysis = {**base, **analyze_params(params, settings, text, vocab, split=split)}
    if run.gated:
        analysis["notes"] = [*analysis.get("notes", []), GATED_BOUND_NOTE]
    run_dir = Path(run_dir)
    summary = rundir.read_json_or_none(run_dir / rundir.SUMMARY_FILE) or {}
    # The analysis names the run and step it describes: collect and write_summary merge it
    # into a summary only when both match (no analysis of another run or step leaks in).
    analysis = {"run_id": summary.get("run_id"), "steps_done": step, **analysis}
    atomic_write_json(run_dir / rundir.ANALYSIS_FILE, analysis)
    summary = rundir.write_summary(run_dir, summary)
    # The whole key=value dump for train.log only (conf/hydra/job_logging: rnn_lab.detail's
    # INFO lines stay off the terminal); one short line for everyone.
    detail_log.info("analysis of %s (step %s): %s", run_dir, step, _metrics_line(analysis))
    log.info("analysis (step %s): %s", step, _headline(analysis, run_dir / rundir.ANALYSIS_FILE))

    if plots:
        from rnn_lab.inspect.plots import plot_run

        written = plot_run(run_dir)
        log.info("plots: %s", ", ".join(p.name for p in written))
    return summary


GATED_BOUND_NOTE = (
    "jacobian_bound_* are null: the Pascanu et al. bound (gamma sigma_max(W_hh))^k holds for "
    "the vanilla cell only; a gated cell's Jacobian products are in jacobian.png"
)


def gate_spectral_radii(params) -> dict:
    """Gated cells: ``spectral_radius_<gate>``, the spectral radius of each gate's H x H
    recurrent block at the checkpoint (as history.csv's columns of the same names); {} for
    the vanilla cell (its one block is summary.json's spectral_radius)."""
    if cells.cell_of(params) == "rnn":
        return {}
    return {f"spectral_radius_{g}": r for g, r in cells.spectral_radii(params).items()}


# The metrics a run's one-line analysis names (those it has), before the file holding all.
HEADLINE_METRICS = ("vocab_hit_rate", "category_separation", "memory_span", "memory_capacity")


def _headline(analysis: dict, path: Path) -> str:
    """ "vocab_hit_rate=0.880 memory_span=4; 57 metrics in DIR/analysis.json" """
    scalars = scalar_metrics(analysis)
    shown = {k: scalars[k] for k in HEADLINE_METRICS if scalars.get(k) is not None}
    head = _metrics_line(shown)
    return f"{head + '; ' if head else ''}{len(scalars)} metrics in {path}"


def _metrics_line(analysis: dict) -> str:
    parts = []
    for k, v in scalar_metrics(analysis).items():
        if isinstance(v, float):
            parts.append(f"{k}={v:.3f}")
        elif v is not None:
            parts.append(f"{k}={v}")
    return " ".join(parts)


def main_analyze(argv: list[str]) -> int:
    """``rnn-lab analyze RUN_DIR [--no-plots]``: analysis.json, summary metrics, plots."""
    parser = argparse.ArgumentParser(
        prog="rnn-lab analyze",
        description="Analyse a trained run (its last checkpoint): analysis.json, the metrics "
        "merged into summary.json, and the run's plots.",
    )
    parser.add_argument("run_dir", help="a run directory (holds checkpoint.npz)")
    parser.add_argument("--no-plots", action="store_true", help="skip drawing the plots")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        print(f"rnn-lab analyze: error: {run_dir} is not a directory", file=sys.stderr)
        return 2
    if not (run_dir / rundir.CHECKPOINT_FILE).exists():
        print(
            f"rnn-lab analyze: error: {run_dir} has no checkpoint.npz (not a run directory, "
            "or its run saved no weights yet)",
            file=sys.stderr,
        )
        return 2
    try:
        analyze_run(run_dir, plots=not args.no_plots)
    except (RunDirError, ValueError) as e:
        print(f"rnn-lab analyze: error: {e}", file=sys.stderr)
        return 2
    analysis = read_json(run_dir / ANALYSIS_FILE)
    print(f"analysis of {run_dir} at step {analysis.get('analysis_step')}:")
    for k, v in scalar_metrics(analysis).items():
        shown = f"{v:.4g}" if isinstance(v, float) and math.isfinite(v) else v
        print(f"  {k:34s} {shown}")
    for note in analysis.get("notes", []):
        print(f"  note: {note}")
    return 0
