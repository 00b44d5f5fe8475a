"""The Elman (1990)-style grammar corpus: 7 word categories, 16 sentence templates (human-
subject templates weighted 2x), determiners before nouns, sentences joined by single spaces.
The network must find word boundaries and categories from characters alone."""

from __future__ import annotations

import random

import numpy as np

# --------------------------------------------------------------------------------------
# The Elman corpus: 7 word categories, 16 sentence templates, determiners before nouns.
# --------------------------------------------------------------------------------------

WORD_CATEGORIES: dict[str, list[str]] = {
    "NOUN_HUMAN": ["boy", "girl", "man", "woman", "king", "queen"],
    "NOUN_ANIMAL": ["cat", "dog", "lion", "bird", "fish", "mouse"],
    "NOUN_FOOD": ["bread", "cake", "apple", "milk", "cookie"],
    "NOUN_OBJECT": ["book", "rock", "glass", "plate", "ball"],
    "VERB_INTRAN": ["sleep", "walk", "think", "swim"],
    "VERB_TRAN": ["chase", "eat", "see", "break", "read", "move"],
    "VERB_PERCEPT": ["smell", "hear", "watch"],
}
# Agent-patient verbs (Elman's VERB-AGPAT) also stand alone: "the glass breaks".
AGENT_PATIENT_VERBS = ["break", "move"]
DETERMINERS = ["the", "a"]

# A slot is (category, takes_determiner, word_subset or None). Perception verbs take
# animate objects only; transitive verbs take any noun. Human-subject templates come first
# and are weighted 2x, so NOUN_HUMAN is the best-separated cluster, as in Elman's corpus.
_H, _A, _F, _O = "NOUN_HUMAN", "NOUN_ANIMAL", "NOUN_FOOD", "NOUN_OBJECT"
_VI, _VT, _VP = "VERB_INTRAN", "VERB_TRAN", "VERB_PERCEPT"


def _np(cat):
    return (cat, True, None)


def _v(cat, subset=None):
    return (cat, False, subset)


TEMPLATES: list[list[tuple]] = [
    [_np(_H), _v(_VI)],  # 1. the boy sleeps
    [_np(_H), _v(_VT), _np(_O)],  # 2. the girl reads a book
    [_np(_H), _v(_VT), _np(_F)],  # 3. the man eats the bread
    [_np(_H), _v(_VT), _np(_H)],  # 4. the queen sees the king
    [_np(_H), _v(_VT), _np(_A)],  # 5. the woman chases a cat
    [_np(_H), _v(_VP), _np(_H)],  # 6. the boy hears the girl
    [_np(_H), _v(_VP), _np(_A)],  # 7. the king watches the lion
    [_np(_H), _v(_VT, AGENT_PATIENT_VERBS)],  # 8. the man moves
    [_np(_A), _v(_VI)],  # 9. the dog sleeps
    [_np(_A), _v(_VT), _np(_F)],  # 10. the mouse eats the cookie
    [_np(_A), _v(_VT), _np(_A)],  # 11. the lion chases the mouse
    [_np(_A), _v(_VT), _np(_H)],  # 12. the dog sees the boy
    [_np(_A), _v(_VT), _np(_O)],  # 13. the cat moves the ball
    [_np(_A), _v(_VP), _np(_A)],  # 14. the cat smells the fish
    [_np(_A), _v(_VP), _np(_H)],  # 15. the bird hears the woman
    [_np(_O), _v(_VT, AGENT_PATIENT_VERBS)],  # 16. the glass breaks
]
TEMPLATE_WEIGHTS = np.array([2.0 if t[0][0] == _H else 1.0 for t in TEMPLATES])


def third_person(verb: str) -> str:
    """The verb as it follows a singular subject: chase -> chases, watch -> watches."""
    if verb.endswith(("ch", "sh", "s", "x")):
        return verb + "es"
    return verb + "s"


def word_category(word: str) -> str | None:
    """Category of a surface word (nouns as listed, verbs in their -s form)."""
    return _SURFACE_CATEGORY.get(word)


_SURFACE_CATEGORY: dict[str, str] = {}
for _cat, _words in WORD_CATEGORIES.items():
    for _w in _words:
        _SURFACE_CATEGORY[third_person(_w) if _cat.startswith("VERB") else _w] = _cat
for _d in DETERMINERS + ["an"]:
    _SURFACE_CATEGORY[_d] = "DETERMINER"


def generate_sentence(template: list[tuple], rng: random.Random) -> str:
    """Fill one template with random word choices."""
    tokens: list[str] = []
    for cat, with_det, subset in template:
        word = rng.choice(subset if subset is not None else WORD_CATEGORIES[cat])
        if cat.startswith("VERB"):
            tokens.append(third_person(word))
            continue
        if with_det:
            det = rng.choice(DETERMINERS)
            tokens.append("an" if det == "a" and word[0] in "aeiou" else det)
        tokens.append(word)
    return " ".join(tokens)


def generate_elman_corpus(num_sentences: int = 600, seed: int = 42) -> str:
    """The default corpus: sentences joined by single spaces, one lowercase stream.

    Deterministic for a (num_sentences, seed): its own Random and Generator, never the
    global ones.
    """
    rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)
    p = TEMPLATE_WEIGHTS / TEMPLATE_WEIGHTS.sum()
    template_ids = np_rng.choice(len(TEMPLATES), size=num_sentences, p=p)
    return " ".join(generate_sentence(TEMPLATES[int(i)], rng) for i in template_ids)
