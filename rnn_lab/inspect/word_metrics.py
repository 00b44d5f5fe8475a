"""What a network says about words: how many of the words it generates are real words, and
how well it predicts the next character by where it stands in a word (word boundaries)."""

from __future__ import annotations

import numpy as np

from rnn_lab.core import cells, engine
from rnn_lab.core.data import Vocab

GENERATED_LENGTH = 2000  # characters sampled for the vocab hit rate
WORD_POSITION_MAX = 7  # positions 0..6 have a bin each, 7 and beyond share the last


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
