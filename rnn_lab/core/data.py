"""Data: the Elman corpus (rnn_lab.core.elman), any UTF-8 text, and the chunk streams.

The trainer sees only the task interface (inputs, targets, an optional mask, a loss
name, and when to reset h), so tasks whose inputs are real-valued or whose loss counts only
some positions plug in without the engine or the trainer assuming one-hot characters.

Memory is bounded by design. A text is held as one compact array of character ids
(:class:`EncodedText`: uint8 up to 256 distinct characters); the train/validation split, the
B training streams and every batch are views of it, and validation comes in chunks of at
most ``VAL_CHUNK`` positions. Validation reads a fixed sample of its split (:func:`val_sample`):
the whole split up to ``VAL_MAX_CHARS`` characters, evenly spaced blocks beyond, so its time is
bounded on any text. A text that arrives in pieces is normalised and scanned piece by piece
(:class:`StreamNormalizer`, :func:`scan_text`), never joined into one str.

This module reads and writes no file: strings and arrays in, arrays out. Reading a text file
(whole, or streamed in blocks into a memory-mapped cache of its ids) is
``rnn_lab.run.input_files``, which builds the task of a run's data settings.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from rnn_lab.core.batch import Batch
from rnn_lab.core.elman import (  # noqa: F401 (re-exported: the corpus is part of the data API)
    AGENT_PATIENT_VERBS,
    DETERMINERS,
    TEMPLATE_WEIGHTS,
    TEMPLATES,
    WORD_CATEGORIES,
    generate_elman_corpus,
    generate_sentence,
    third_person,
    word_category,
)
from rnn_lab.core.tasks import SEQUENCE_TASKS, TASKS

# --------------------------------------------------------------------------------------
# Text, vocabulary, split
# --------------------------------------------------------------------------------------

VAL_CHUNK = 2048  # validation positions (steps x blocks) per batch: bounds its states and logits
# Validation reads at most this many characters of its split by default (the val_max_chars key);
# a split that is longer is sampled in blocks of about VAL_BLOCK_CHARS (see val_sample).
VAL_MAX_CHARS = 32_768
VAL_BLOCK_CHARS = 1024
ENCODE_CHARS = 1 << 20  # characters per encoding slice: bounds the 4-byte code-point copies
DECODE_MAX_CHARS = 1 << 25  # the longest text handed out as one str (task.text)
_N_CODES = 0x110000  # Unicode code points
# The streaming normaliser holds back the text after the last space or newline; past this many
# characters without one it cuts anyway (see StreamNormalizer).
_MAX_CARRY_CHARS = 1 << 22


def normalize_text(text: str) -> str:
    """The walkthrough's normalisation: lowercase, strip, collapse runs of spaces."""
    return _collapse_spaces(text.lower().strip())


def _collapse_spaces(text: str) -> str:
    # re.sub(" +", " ", text), ~15x faster: every pass halves each run of spaces.
    while "  " in text:
        text = text.replace("  ", " ")
    return text


def ids_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds the ids 0 .. vocab_size - 1."""
    if vocab_size <= 1 << 8:
        return np.dtype(np.uint8)
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


def char_codes(text: str) -> np.ndarray:
    """(N,) the code points of text: uint8 for ASCII text (1 byte a character), else uint32."""
    if text.isascii():  # O(1): CPython keeps the flag
        return np.frombuffer(text.encode("ascii"), dtype=np.uint8)
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def _code_slices(text: str) -> Iterator[np.ndarray]:
    """char_codes of text, ENCODE_CHARS characters at a time (bounded transient memory)."""
    for i in range(0, len(text), ENCODE_CHARS):
        yield char_codes(text[i : i + ENCODE_CHARS])


@dataclass
class Vocab:
    """The characters of a text; a character's id is its position in chars.

    Encoding and decoding are array lookups (code point -> id, id -> code point), never a
    Python loop over the characters.
    """

    chars: list[str]
    index: dict[str, int] = field(init=False)

    def __post_init__(self):
        self.index = {c: i for i, c in enumerate(self.chars)}
        self._codes = np.array([ord(c) for c in self.chars], dtype=np.uint32)  # (V,) id -> code

    @classmethod
    def from_text(cls, text: str) -> Vocab:
        seen = np.zeros(_N_CODES, dtype=bool)  # (0x110000,) code point occurs in text
        for codes in _code_slices(text):
            seen[codes] = True
        return cls.from_seen(seen)

    @classmethod
    def from_seen(cls, seen: np.ndarray) -> Vocab:
        """From a (0x110000,) mask of the code points a text holds. Sorted by code point (for
        reproducibility), which is the order of sorted(set(text))."""
        return cls([chr(c) for c in np.flatnonzero(seen)])

    @property
    def size(self) -> int:
        return len(self.chars)

    @property
    def dtype(self) -> np.dtype:
        """The dtype of encoded ids: uint8 up to 256 characters."""
        return ids_dtype(self.size)

    @cached_property
    def _id_of_code(self) -> np.ndarray:
        # (0x110000,) int32, -1 for code points outside the vocabulary; 4.4 MB, built once.
        table = np.full(_N_CODES, -1, dtype=np.int32)
        table[self._codes] = np.arange(self.size, dtype=np.int32)
        return table

    def encode(self, text: str) -> np.ndarray:
        """(N,) the ids of text, in self.dtype."""
        out = np.empty(len(text), dtype=self.dtype)
        for start, codes in zip(range(0, len(text), ENCODE_CHARS), _code_slices(text)):
            out[start : start + len(codes)] = self.encode_codes(codes)
        return out

    def encode_codes(self, codes: np.ndarray) -> np.ndarray:
        """(N,) ids of (N,) code points; ValueError naming the first unknown character."""
        ids = self._id_of_code[codes]  # (N,) int32
        if ids.size and ids.min() < 0:
            c = chr(int(codes[np.argmax(ids < 0)]))
            raise ValueError(f"character {c!r} is not in the vocabulary ({''.join(self.chars)!r})")
        return ids.astype(self.dtype)

    def decode(self, ids) -> str:
        """The text of (N,) ids (any integer array or list)."""
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu":  # an empty list arrives as float64
            ids = ids.astype(np.intp)
        pieces = []
        for start in range(0, len(ids), ENCODE_CHARS):
            codes = self._codes[ids[start : start + ENCODE_CHARS]]  # (n,) uint32
            pieces.append(codes.tobytes().decode("utf-32-le"))
        return "".join(pieces)


def split_ids(ids: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The last val_fraction is validation, split at int(len * (1 - val_fraction)). Views."""
    split = int(len(ids) * (1.0 - val_fraction))
    return ids[:split], ids[split:]


@dataclass(eq=False)  # ids are arrays: no element-wise ==
class EncodedText:
    """A text as character ids: what a task trains on and what identifies its data."""

    ids: np.ndarray  # (N,) vocab.dtype; a read-only memory map for a cached text file
    vocab: Vocab
    sha1: str  # hex sha1 of the text as UTF-8 (run directories record it)
    text: str | None = None  # the text itself when it was in memory anyway (small texts)

    @classmethod
    def from_text(cls, text: str) -> EncodedText:
        vocab = Vocab.from_text(text)
        sha1 = hashlib.sha1(text.encode("utf-8")).hexdigest()
        return cls(ids=vocab.encode(text), vocab=vocab, sha1=sha1, text=text)

    def as_text(self) -> str:
        """The text as one str, decoded on first use; refused above DECODE_MAX_CHARS."""
        if self.text is None:
            if len(self.ids) > DECODE_MAX_CHARS:
                raise ValueError(
                    f"the text has {len(self.ids)} characters, too many to hold as one str "
                    f"(the limit is DECODE_MAX_CHARS = {DECODE_MAX_CHARS}); read its ids instead"
                )
            self.text = self.vocab.decode(self.ids)
        return self.text


# --------------------------------------------------------------------------------------
# A text in pieces: normalised and scanned without joining it into one str
# --------------------------------------------------------------------------------------


class StreamNormalizer:
    """normalize_text over a text that arrives in pieces: the outputs of push() and close()
    concatenate to normalize_text(whole text), whatever the cuts between pieces.

    Lowercasing waits for a space or newline: str.lower turns a capital sigma into a final
    sigma depending on its neighbours, and a space or newline (neither cased nor
    case-ignorable) cuts that context. Whitespace at the end of what is lowercased is held
    back: it is stripped if the text ends there, and joins the next piece otherwise, so a
    run of spaces over a cut collapses as one. A text with no space or newline in
    _MAX_CARRY_CHARS characters is cut without one.
    """

    def __init__(self):
        self._raw = ""  # received, not lowercased yet
        self._ws = ""  # lowercased trailing whitespace, not emitted yet
        self._started = False  # some non-whitespace has been emitted (leading strip done)

    def push(self, piece: str) -> str:
        raw = self._raw + piece
        cut = max(raw.rfind(" "), raw.rfind("\n")) + 1
        if cut == 0:
            if len(raw) < _MAX_CARRY_CHARS:
                self._raw = raw
                return ""
            # Not prose: cut regardless. Exact unless a capital sigma sits near the cut.
            cut = len(raw)
        self._raw = raw[cut:]
        return self._emit(raw[:cut].lower())

    def close(self) -> str:
        out = self._emit(self._raw.lower())
        self._raw, self._ws = "", ""  # trailing whitespace: stripped
        return out

    def _emit(self, lowered: str) -> str:
        text = self._ws + lowered
        if not self._started:
            text = text.lstrip()
            self._started = bool(text)
        body = text.rstrip()
        self._ws = text[len(body) :]
        return _collapse_spaces(body)


def scan_text(pieces: Iterable[str]) -> tuple[int, Vocab, str]:
    """(number of characters, vocabulary, sha1) of the text the pieces concatenate to; the
    same as len, Vocab.from_text and the sha1 of EncodedText.from_text on the joined text."""
    seen = np.zeros(_N_CODES, dtype=bool)  # (0x110000,)
    sha1 = hashlib.sha1()
    n_chars = 0
    for piece in pieces:
        sha1.update(piece.encode("utf-8"))
        n_chars += len(piece)
        for codes in _code_slices(piece):
            seen[codes] = True
    return n_chars, Vocab.from_seen(seen), sha1.hexdigest()


# --------------------------------------------------------------------------------------
# Tasks: what the trainer consumes
# --------------------------------------------------------------------------------------


def _check_val_max_chars(val_max_chars) -> int:
    if isinstance(val_max_chars, bool) or not isinstance(val_max_chars, int | np.integer):
        raise ValueError(f"val_max_chars: {val_max_chars!r} is not valid: must be an integer")
    if val_max_chars < 0 or val_max_chars == 1:
        raise ValueError(
            f"val_max_chars: {val_max_chars} is not valid: must be 0 (the whole validation "
            "split) or >= 2 (an input and its target)"
        )
    return int(val_max_chars)


@dataclass(frozen=True)
class ValSample:
    """The characters validation reads: blocks of ``length`` characters of the validation
    split starting at ``starts``, each read from h = 0 (a block's first character is an input
    only). One block from 0 of the split's length is the whole split."""

    starts: tuple[int, ...]
    length: int
    n_val: int  # characters in the split

    @property
    def n_chars(self) -> int:
        """Characters read (each block's length, summed)."""
        return len(self.starts) * self.length

    @property
    def whole(self) -> bool:
        return self.n_chars == self.n_val

    def describe(self) -> str:
        """What validation reads, for the log: "the whole split (1226 characters)" or "32768
        of 256141 characters of the split (32 evenly spaced blocks of 1024, each from h = 0)"."""
        if self.whole:
            return f"the whole split ({self.n_val} characters)"
        blocks = len(self.starts)
        return (
            f"{self.n_chars} of {self.n_val} characters of the split ({blocks} evenly spaced "
            f"block{'s' if blocks > 1 else ''} of {self.length}, each from h = 0)"
        )


def val_sample(n_val: int, val_max_chars: int) -> ValSample:
    """The fixed sample of an n_val-character validation split that validation reads.

    val_max_chars = 0, or at least n_val: the whole split, one stream from h = 0. Otherwise
    K = ceil(val_max_chars / VAL_BLOCK_CHARS) blocks of L = val_max_chars // K characters,
    evenly spaced: block j starts at j * (n_val - L) // (K - 1), so the first starts the
    split and the last ends it. The same characters at every validation of every run.
    """
    m = _check_val_max_chars(val_max_chars)
    if m == 0 or m >= n_val:
        return ValSample(starts=(0,), length=n_val, n_val=n_val)
    k = -(-m // VAL_BLOCK_CHARS)
    length = m // k
    starts = tuple(j * (n_val - length) // (k - 1) for j in range(k)) if k > 1 else (0,)
    return ValSample(starts=starts, length=length, n_val=n_val)


class CharTextTask:
    """Next-character prediction over a text, walked in seq_len chunks by B streams.

    The training split is cut into B equal contiguous segments, one per stream (B = 1:
    the whole split, the walkthrough exactly). A single pointer walks the segments: each chunk is
    seq_len + 1 characters (inputs [p, p+T), targets [p+1, p+T]); h carries across chunks;
    when pointer + seq_len + 1 >= segment length, pointer and h reset to zero.

    The text is one (N,) array of compact ids (see Vocab.dtype); the splits, the streams and
    every batch are views of it, so a memory-mapped text is only read where it is walked.
    """

    loss_name = "cross_entropy"

    def __init__(
        self,
        text: str | EncodedText,
        seq_len: int,
        batch_size: int = 1,
        val_fraction: float = 0.1,
        val_max_chars: int = VAL_MAX_CHARS,
    ):
        self.corpus = text if isinstance(text, EncodedText) else EncodedText.from_text(text)
        self.vocab = self.corpus.vocab
        self.data_sha1 = self.corpus.sha1
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.val_max_chars = _check_val_max_chars(val_max_chars)
        ids = np.asarray(self.corpus.ids)  # (N,) a plain view, also of a memory map
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
        self.val_sample = val_sample(len(self.val_ids), self.val_max_chars)
        # streams: (B, segment_len), row b = segment b of the training split (a view)
        self.streams = self.train_ids[: self.segment_len * batch_size].reshape(batch_size, -1)
        self.pointer = 0

    @property
    def text(self) -> str:
        """The whole text as one str (decoded on first use; small texts only)."""
        return self.corpus.as_text()

    @property
    def n_chars(self) -> int:
        return len(self.corpus.ids)

    @property
    def n_train(self) -> int:
        return len(self.train_ids)

    @property
    def n_val(self) -> int:
        """Characters in the validation split."""
        return len(self.val_ids)

    @property
    def n_val_used(self) -> int:
        """Characters validation reads (see val_sample)."""
        return self.val_sample.n_chars

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

    def _validation_blocks(self) -> np.ndarray:
        """(K, L) the blocks of val_sample, row k = block k (the whole split: a view)."""
        sample, L = self.val_sample, self.val_sample.length
        if len(sample.starts) == 1:
            return self.val_ids[None, sample.starts[0] : sample.starts[0] + L]
        return np.stack([self.val_ids[start : start + L] for start in sample.starts])

    def validation_batches(self) -> Iterator[Batch]:
        """The validation sample (val_sample: the whole split, or evenly spaced blocks) as
        K streams from h = 0, in chunks of at most VAL_CHUNK positions (steps x streams).
        Only the first has reset_h: the caller carries h from chunk to chunk, which gives
        one pass over each block."""
        blocks = self._validation_blocks()  # (K, L)
        K, L = blocks.shape
        steps = max(1, VAL_CHUNK // K)
        for start in range(0, L - 1, steps):
            chunk = blocks[:, start : start + steps + 1].T  # (T+1, K), T <= steps
            yield Batch(inputs=chunk[:-1], targets=chunk[1:], mask=None, reset_h=start == 0)

    def validation_batch(self) -> Batch:
        """The validation sample as one batch from h = 0 (unbounded; see
        validation_batches)."""
        blocks = self._validation_blocks().T  # (L, K)
        return Batch(inputs=blocks[:-1], targets=blocks[1:], mask=None, reset_h=True)

    def state_dict(self) -> dict:
        return {"pointer": self.pointer}

    def load_state_dict(self, state: dict) -> None:
        self.pointer = int(state["pointer"])


# --------------------------------------------------------------------------------------
# The data config group's options (rnn_lab.run.input_files.make_task builds the task)
# --------------------------------------------------------------------------------------

# elman and text are character tasks (CharTextTask); the rest are the synthetic sequence tasks
# of rnn_lab.core.tasks.
TEXT_DATA_NAMES = ("elman", "text")
DATA_NAMES = (*TEXT_DATA_NAMES, *SEQUENCE_TASKS)


def loss_name_of(data: dict) -> str:
    """The name (rnn_lab.core.losses.LOSSES) of the loss the task of these data settings
    trains with, without building the task."""
    name = data.get("name")
    if name in TEXT_DATA_NAMES:
        return CharTextTask.loss_name
    if name in TASKS:
        return TASKS[name].loss_name
    raise ValueError(f"data.name: unknown {name!r}; valid: {', '.join(DATA_NAMES)}")
