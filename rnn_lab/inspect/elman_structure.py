"""Elman's word categories in the hidden states: the per-word picture (PCA and dendrogram of
the word means) and the structure metrics, each against the untrained network, the words'
spelling and the majority class (see the comment above STRUCTURES)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rnn_lab.core.data import word_category
from rnn_lab.inspect.network_states import majority_rate, pca_2d, word_spans


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
