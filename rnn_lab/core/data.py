"""Data: the Elman (1990)-style grammar corpus, any UTF-8 text, and the chunk streams.

The trainer sees only the :class:`Task` interface (inputs, targets, an optional mask, a loss
name, and when to reset h), so tasks whose inputs are real-valued or whose loss counts only
some positions plug in without the engine or the trainer assuming one-hot characters.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path

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


# --------------------------------------------------------------------------------------
# Text, vocabulary, split
# --------------------------------------------------------------------------------------


def normalize_text(text: str) -> str:
    """The seed's normalisation: lowercase, strip, collapse runs of spaces."""
    return re.sub(r" +", " ", text.lower().strip())


def read_text_file(path: str | Path) -> str:
    """Read UTF-8 text; raise ValueError naming data.path on a missing or undecodable file."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"data.path: file {str(path)!r} does not exist (or is not a file)")
    try:
        return p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(
            f"data.path: {str(path)!r} is not UTF-8 text (byte {e.start}: {e.reason}); "
            "convert it to UTF-8 first"
        ) from None


@dataclass
class Vocab:
    chars: list[str]
    index: dict[str, int] = field(init=False)

    def __post_init__(self):
        self.index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> Vocab:
        return cls(sorted(set(text)))  # sorted for reproducibility

    @property
    def size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        try:
            return np.fromiter((self.index[c] for c in text), dtype=np.int64, count=len(text))
        except KeyError as e:
            raise ValueError(
                f"character {e.args[0]!r} is not in the vocabulary ({''.join(self.chars)!r})"
            ) from None

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def split_ids(ids: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The last val_fraction is validation, split at int(len * (1 - val_fraction))."""
    split = int(len(ids) * (1.0 - val_fraction))
    return ids[:split], ids[split:]


# --------------------------------------------------------------------------------------
# Tasks: what the trainer consumes
# --------------------------------------------------------------------------------------


@dataclass
class Batch:
    inputs: np.ndarray  # (T, B) int or (T, B, D) float
    targets: np.ndarray  # (T, B) int or (T, B, O) float
    mask: np.ndarray | None  # (T, B) 0/1 positions that count in the loss, None = all
    reset_h: bool  # True when h must restart from zero before this chunk


class CharTextTask:
    """Next-character prediction over a text, walked in seq_len chunks by B streams.

    The training split is cut into B equal contiguous segments, one per stream (B = 1:
    the whole split, the seed exactly). A single pointer walks the segments: each chunk is
    seq_len + 1 characters (inputs [p, p+T), targets [p+1, p+T]); h carries across chunks;
    when pointer + seq_len + 1 >= segment length, pointer and h reset to zero.
    """

    loss_name = "cross_entropy"

    def __init__(self, text: str, seq_len: int, batch_size: int = 1, val_fraction: float = 0.1):
        self.text = text
        self.vocab = Vocab.from_text(text)
        self.seq_len = seq_len
        self.batch_size = batch_size
        ids = self.vocab.encode(text)
        self.train_ids, self.val_ids = split_ids(ids, val_fraction)
        self.segment_len = len(self.train_ids) // batch_size
        need = seq_len + 2  # one chunk of seq_len + 1 that does not trigger the wrap rule
        if self.segment_len < need:
            raise ValueError(
                f"seq_len: the training split ({len(self.train_ids)} characters) is too short "
                f"for batch_size={batch_size} streams of one chunk of seq_len + 1 = "
                f"{seq_len + 1} characters; use a longer text, a smaller seq_len or batch_size"
            )
        if len(self.val_ids) < 2:
            raise ValueError(
                f"val_fraction: the validation split holds {len(self.val_ids)} characters, "
                "need at least 2; use a longer text or a larger val_fraction"
            )
        # streams: (B, segment_len), row b = segment b of the training split
        self.streams = self.train_ids[: self.segment_len * batch_size].reshape(batch_size, -1)
        self.pointer = 0

    @property
    def input_size(self) -> int:
        return self.vocab.size

    @property
    def output_size(self) -> int:
        return self.vocab.size

    def next_batch(self) -> Batch:
        T = self.seq_len
        reset = False
        if self.pointer + T + 1 >= self.segment_len:
            self.pointer, reset = 0, True
        p = self.pointer
        chunk = self.streams[:, p : p + T + 1].T  # (T+1, B)
        self.pointer += T
        return Batch(inputs=chunk[:-1], targets=chunk[1:], mask=None, reset_h=reset or p == 0)

    def validation_batch(self) -> Batch:
        """The whole validation split as one stream from h = 0."""
        v = self.val_ids
        return Batch(inputs=v[:-1, None], targets=v[1:, None], mask=None, reset_h=True)

    def state_dict(self) -> dict:
        return {"pointer": self.pointer}

    def load_state_dict(self, state: dict) -> None:
        self.pointer = int(state["pointer"])


# --------------------------------------------------------------------------------------
# Building a task by name (the data config group)
# --------------------------------------------------------------------------------------


def load_corpus_text(data: dict) -> str:
    """The text a char task trains on, from the data settings (name + its own keys)."""
    name = data.get("name")
    if name == "elman":
        return generate_elman_corpus(int(data.get("num_sentences", 600)), int(data.get("seed", 42)))
    if name == "text":
        path = data.get("path")
        if not path:
            raise ValueError("data.path: missing; data=text needs data.path=FILE (a UTF-8 text)")
        text = read_text_file(path)
        return normalize_text(text) if data.get("normalize", True) else text
    raise ValueError(f"data.name: unknown {name!r}; valid: {', '.join(DATA_NAMES)}")


DATA_NAMES = ("elman", "text")


def make_task(data: dict, seq_len: int, batch_size: int, val_fraction: float) -> CharTextTask:
    text = load_corpus_text(data)
    return CharTextTask(text, seq_len=seq_len, batch_size=batch_size, val_fraction=val_fraction)
