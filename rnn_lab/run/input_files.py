"""The files a run reads besides its own directory, and the task built from its data settings.

- ``data=text``: the UTF-8 file at data.path, read whole when small; a file of
  ``STREAM_MIN_BYTES`` or more is never held as one str: it is read in blocks, twice
  (vocabulary, length and sha1; then the ids), and its ids are cached as a .npy file under
  :func:`cache_dir` that later runs memory-map read-only.
- ``init=file``: the weights at init.path (a .npz, e.g. another run's checkpoint.npz);
  drawn initial weights are kept in the same folder (rnn_lab.run.init_cache).

The engine (rnn_lab.core) does no file I/O: it gets the text, the ids and the arrays from here.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from rnn_lab.core.data import (
    DATA_NAMES,
    TEXT_DATA_NAMES,
    VAL_MAX_CHARS,
    CharTextTask,
    EncodedText,
    StreamNormalizer,
    Vocab,
    generate_elman_corpus,
    normalize_text,
    scan_text,
)
from rnn_lab.core.inits import init_params, param_names, params_from_arrays
from rnn_lab.core.tasks import make_sequence_task
from rnn_lab.run import init_cache
from rnn_lab.run.rundir import atomic_write_stream, atomic_write_text

BLOCK_BYTES = 4 << 20  # a big text file is read in blocks of this many bytes
STREAM_MIN_BYTES = 16 << 20  # files of this size or more are streamed and cached, never a str
CACHE_VERSION = 1  # part of the cache key: bump it when the encoding changes


# --------------------------------------------------------------------------------------
# Text files
# --------------------------------------------------------------------------------------


def _not_utf8(path, byte: int, reason: str) -> ValueError:
    return ValueError(
        f"data.path: {str(path)!r} is not UTF-8 text (byte {byte}: {reason}); "
        "convert it to UTF-8 first"
    )


def read_text_file(path: str | Path) -> str:
    """Read UTF-8 text; raise ValueError naming data.path on a missing or undecodable file."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"data.path: file {str(path)!r} does not exist (or is not a file)")
    try:
        return p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise _not_utf8(path, e.start, e.reason) from None


def _check_text(path, n_chars: int, vocab: Vocab, normalize: bool) -> None:
    """A text to learn from: not empty, and at least 2 distinct characters to tell apart."""
    if n_chars == 0:
        after = " after normalisation (lowercase, strip)" if normalize else ""
        raise ValueError(
            f"data.path: {str(path)!r} is empty (0 characters{after}); use a file with text"
        )
    if vocab.size < 2:
        raise ValueError(
            f"data.path: {str(path)!r} holds a single distinct character ({vocab.chars[0]!r}), "
            "nothing to predict (the loss is 0 from the start); use a text with at least 2 "
            "distinct characters"
        )


# --------------------------------------------------------------------------------------
# Big text files: streamed in blocks, encoded once into a memory-mapped cache
# --------------------------------------------------------------------------------------


def _utf8_pieces(path, block_bytes: int) -> Iterator[str]:
    """The file decoded as UTF-8, block_bytes at a time. The incremental decoder keeps a
    character whose bytes straddle two blocks for the next piece."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0  # bytes read before this block
    with open(path, "rb") as f:
        while True:
            block = f.read(block_bytes)
            held = len(decoder.getstate()[0])  # bytes of a split character from the last block
            try:
                piece = decoder.decode(block, final=not block)
            except UnicodeDecodeError as e:
                raise _not_utf8(path, offset - held + e.start, e.reason) from None
            if piece:
                yield piece
            if not block:
                return
            offset += len(block)


def text_pieces(path, normalize: bool, block_bytes: int = BLOCK_BYTES) -> Iterator[str]:
    """The text of a file (normalised when normalize), in pieces of about block_bytes
    characters, never all at once. Concatenated: normalize_text(read_text_file(path))."""
    pieces = _utf8_pieces(path, block_bytes)
    if not normalize:
        yield from pieces
        return
    norm = StreamNormalizer()
    for piece in pieces:
        if out := norm.push(piece):
            yield out
    if out := norm.close():
        yield out


def _scan_text_file(path, normalize: bool, block_bytes: int) -> tuple[int, Vocab, str]:
    """Pass 1 over a file: (number of characters, vocabulary, sha1) of its text."""
    return scan_text(text_pieces(path, normalize, block_bytes))


def _write_ids(f: BinaryIO, pieces: Iterable[str], vocab: Vocab, n_chars: int) -> int:
    """Pass 2: the .npy of the (n_chars,) ids, written piece by piece through f. Plain
    writes, not a writable memory map: every page written through a map would count in the
    process's resident memory until the map is closed. Returns the ids written."""
    header = {
        "descr": np.lib.format.dtype_to_descr(vocab.dtype),
        "fortran_order": False,
        "shape": (n_chars,),
    }
    np.lib.format.write_array_header_1_0(f, header)
    written = 0
    for piece in pieces:
        ids = vocab.encode(piece)  # (len(piece),)
        f.write(ids.data)
        written += len(ids)
    return written


def cache_dir() -> Path:
    """Where encoded texts are cached: $RNN_LAB_CACHE, else $XDG_CACHE_HOME/rnn_lab, else
    ~/.cache/rnn_lab."""
    if os.environ.get("RNN_LAB_CACHE"):
        return Path(os.environ["RNN_LAB_CACHE"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "rnn_lab"
    return Path.home() / ".cache" / "rnn_lab"


def _file_key(path: Path, normalize: bool) -> dict:
    """What identifies a file's encoding: a new size or mtime means a new text."""
    st = path.stat()
    return {
        "version": CACHE_VERSION,
        "path": str(path.resolve()),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "normalize": bool(normalize),
    }


def _cache_stem(key: dict) -> Path:
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()
    return cache_dir() / f"text-{digest[:20]}"  # + .npy (ids) and .json (the rest)


def _load_cached(stem: Path, key: dict) -> EncodedText | None:
    """The cached encoding of key (ids memory-mapped read-only), or None."""
    try:
        meta = json.loads(stem.with_suffix(".json").read_text(encoding="utf-8"))
        if {k: meta.get(k) for k in key} != key:
            return None
        vocab = Vocab(list(meta["chars"]))
        ids = np.load(stem.with_suffix(".npy"), mmap_mode="r")
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent, or written by another version: encode again
    if ids.shape != (meta["n_chars"],) or ids.dtype != vocab.dtype:
        return None
    return EncodedText(ids=ids, vocab=vocab, sha1=str(meta["sha1"]))


def _drop_stale_entries(stem: Path, key: dict) -> None:
    """Remove cached encodings of earlier versions of the same file (each can be GBs)."""
    for meta_path in stem.parent.glob("text-*.json"):
        if meta_path.stem == stem.name:
            continue
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if meta.get("path") == key["path"] and meta.get("normalize") == key["normalize"]:
            meta_path.unlink(missing_ok=True)  # the .json first: no entry without its ids
            meta_path.with_suffix(".npy").unlink(missing_ok=True)


def _write_cache(stem: Path, meta: dict, pieces: Iterable[str], vocab: Vocab) -> None:
    """Pass 2 into the cache: the ids (.npy), then the rest (.json), each written whole."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    n_chars = meta["n_chars"]
    written = []
    atomic_write_stream(
        stem.with_suffix(".npy"), lambda f: written.append(_write_ids(f, pieces, vocab, n_chars))
    )
    if written != [n_chars]:
        raise ValueError(f"pass 2 read {written} characters, pass 1 read {n_chars}")
    text = json.dumps(meta, indent=1)
    atomic_write_text(stem.with_suffix(".json"), text)


def encode_text_file(
    path, normalize: bool = True, *, block_bytes: int = BLOCK_BYTES
) -> EncodedText:
    """A text file as an EncodedText, without ever holding its text as one str.

    Reused from the cache when the file (resolved path, size, mtime_ns) and normalize are
    unchanged; otherwise read twice in blocks of block_bytes (1: vocabulary, length and sha1;
    2: the ids, written to the cache) and then memory-mapped read-only. Same ids, vocabulary
    and sha1 as EncodedText.from_text of the whole (normalised) text.
    """
    p = Path(path)
    key = _file_key(p, normalize)
    stem = _cache_stem(key)
    cached = _load_cached(stem, key)
    if cached is not None:
        return cached
    n_chars, vocab, sha1 = _scan_text_file(p, normalize, block_bytes)
    _check_text(path, n_chars, vocab, normalize)
    meta = {**key, "n_chars": n_chars, "sha1": sha1, "chars": vocab.chars}
    try:
        _write_cache(stem, meta, text_pieces(p, normalize, block_bytes), vocab)
    except OSError as e:
        raise ValueError(
            f"data.path: cannot cache the encoded text of {str(path)!r} in {stem.parent} "
            f"({e.strerror or e}); set RNN_LAB_CACHE to a writable directory"
        ) from None
    except ValueError:  # pass 2 met a character or a length that pass 1 did not
        changed = True
    else:
        changed = _file_key(p, normalize) != key
    corpus = None if changed else _load_cached(stem, key)
    if corpus is None:
        for suffix in (".json", ".npy"):
            stem.with_suffix(suffix).unlink(missing_ok=True)
        raise ValueError(
            f"data.path: {str(path)!r} changed while it was being read; run again once "
            "nothing writes to it"
        )
    _drop_stale_entries(stem, key)
    return corpus


# --------------------------------------------------------------------------------------
# The task of the data settings; the weights of init=file
# --------------------------------------------------------------------------------------


def _load_text_file(data: dict) -> EncodedText:
    path = data.get("path")
    if not path:
        raise ValueError("data.path: missing; data=text needs data.path=FILE (a UTF-8 text)")
    normalize = bool(data.get("normalize", True))
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"data.path: file {str(path)!r} does not exist (or is not a file)")
    if p.stat().st_size >= STREAM_MIN_BYTES:
        return encode_text_file(path, normalize)
    text = read_text_file(p)
    if normalize:
        text = normalize_text(text)
    corpus = EncodedText.from_text(text)
    _check_text(path, len(text), corpus.vocab, normalize)
    return corpus


def load_corpus(data: dict) -> EncodedText:
    """The encoded text a char task trains on, from the data settings (name + its keys)."""
    name = data.get("name")
    if name == "elman":
        text = generate_elman_corpus(int(data.get("num_sentences", 600)), int(data.get("seed", 42)))
        return EncodedText.from_text(text)
    if name == "text":
        return _load_text_file(data)
    raise ValueError(f"data.name: unknown {name!r}; valid: {', '.join(DATA_NAMES)}")


def load_corpus_text(data: dict) -> str:
    """The text a char task trains on, as one str (small texts; see EncodedText.as_text)."""
    return load_corpus(data).as_text()


def make_task(
    data: dict,
    seq_len: int,
    batch_size: int,
    val_fraction: float,
    val_max_chars: int = VAL_MAX_CHARS,
    dtype=np.float64,
):
    """The task of the data settings: a CharTextTask (see it for the other arguments), or a
    sequence task of rnn_lab.core.tasks (real values in ``dtype``; val_fraction and
    val_max_chars do not apply: its validation set is data.val_sequences sequences)."""
    if data.get("name") not in TEXT_DATA_NAMES and data.get("name") in DATA_NAMES:
        return make_sequence_task(data, seq_len, batch_size, dtype)
    return CharTextTask(
        load_corpus(data),
        seq_len=seq_len,
        batch_size=batch_size,
        val_fraction=val_fraction,
        val_max_chars=val_max_chars,
    )


def read_params_file(path: str | Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The parameter arrays of a .npz (a checkpoint.npz also holds optimiser state: ignored)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"init.path: file {str(path)!r} does not exist")
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in (*names, "E") if k in z.files} | {
                "_files": np.array(sorted(z.files))
            }
    except Exception as e:  # a truncated or non-npz file, a pickled payload
        raise ValueError(f"init.path: {str(path)!r} is not a readable .npz file ({e})") from None


# why: the sizes plus keyword-only options, as init_params takes them.
def build_params(
    init: dict,
    sizes: tuple[int, int, int],
    *,
    seed,
    embed_dim,
    dtype,
    cell: str = "rnn",
    forget_bias: float | None = None,
):
    """The parameters a run starts from, by its init settings ({name, scale, path})."""
    name = init.get("name", "orthogonal")
    scale = float(init.get("scale", 1.0) or 1.0)
    if name == "file":
        path = init.get("path") or ""
        # The file's biases are the starting point: forget_bias only shapes drawn weights.
        return params_from_arrays(
            read_params_file(path, param_names(cell)),
            path,
            sizes,
            seed=seed,
            embed_dim=embed_dim,
            scale=scale,
            dtype=dtype,
            cell=cell,
        )
    return init_params(
        *sizes,
        init=name,
        scale=scale,
        seed=seed,
        embed_dim=embed_dim,
        dtype=dtype,
        cell=cell,
        forget_bias=forget_bias,
        draws=init_cache.keeper(cache_dir()),  # drawn before: read back, no torch import
    )
