"""The data layer: compact ids, the streamed (big-file) path against the in-memory one, the
cache, bounded validation chunks, and the errors on texts that cannot be learned from."""

from __future__ import annotations

import hashlib
import os
import random

import numpy as np
import pytest

from rnn_lab.core import data, engine
from rnn_lab.core.data import (
    CharTextTask,
    EncodedText,
    Vocab,
    generate_elman_corpus,
    normalize_text,
    split_ids,
)
from rnn_lab.core.losses import softmax_cross_entropy
from rnn_lab.inspect import analysis
from rnn_lab.run import input_files
from rnn_lab.run.input_files import (
    encode_text_file,
    load_corpus,
    make_task,
    read_text_file,
    text_pieces,
)

ELMAN = {"name": "elman", "seed": 42, "num_sentences": 600}
# Multibyte characters of 2, 3 and 4 bytes, a capital sigma (its lowercase depends on its
# neighbours), a dotted capital I (lowercases to 2 characters) and non-space whitespace.
ALPHABET = [" ", " ", " ", "a", "B", "é", "Σ", "\n", "\t", "€", "😀", "İ", "x", "\u3000", "\xa0"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Every test caches encoded texts in its own directory, never in ~/.cache."""
    monkeypatch.setenv("RNN_LAB_CACHE", str(tmp_path / "cache"))


def _write(path, text: str):
    path.write_bytes(text.encode("utf-8"))
    return path


def _in_memory(path, normalize: bool = True) -> EncodedText:
    text = read_text_file(path)
    return EncodedText.from_text(normalize_text(text) if normalize else text)


def _assert_same_encoding(got: EncodedText, want: EncodedText) -> None:
    assert got.vocab.chars == want.vocab.chars
    assert got.ids.dtype == want.ids.dtype
    np.testing.assert_array_equal(got.ids, want.ids)
    assert got.sha1 == want.sha1


def _random_params(V: int, H: int = 16, seed: int = 0) -> engine.Params:
    rng = np.random.default_rng(seed)
    return engine.Params(
        W_xh=rng.normal(0, 0.3, (H, V)),
        W_hh=rng.normal(0, 1.2 / np.sqrt(H), (H, H)),
        W_hy=rng.normal(0, 0.3, (V, H)),
        b_h=rng.normal(0, 0.1, H),
        b_y=rng.normal(0, 0.1, V),
    )


# --------------------------------------------------------------------------------------
# The streamed path gives what the in-memory path gives
# --------------------------------------------------------------------------------------


def test_block_boundaries_inside_a_character_and_a_run_of_spaces(tmp_path):
    text = "Ab€    Σ cΣ   \n  dé😀 x  "
    raw = text.encode("utf-8")
    block = 4
    # The test means what it says: a multibyte character and a run of spaces straddle cuts.
    euro = raw.index("€".encode())
    assert euro // block != (euro + 2) // block
    spaces = raw.index(b"    ")
    assert spaces // block != (spaces + 3) // block
    path = _write(tmp_path / "t.txt", text)
    for normalize in (True, False):
        want = _in_memory(path, normalize)
        assert "".join(text_pieces(path, normalize, block)) == want.text
        _assert_same_encoding(encode_text_file(path, normalize, block_bytes=block), want)
    assert want.sha1 == hashlib.sha1(text.encode("utf-8")).hexdigest()
    assert _in_memory(path).text == "ab€ σ cς \n dé😀 x"


def test_streamed_pieces_equal_the_whole_text_for_any_cut(tmp_path):
    rng = random.Random(0)
    for trial in range(150):
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(0, 50)))
        path = _write(tmp_path / f"{trial}.txt", text)
        for block in (1, 2, 3, 5, 64):
            assert "".join(text_pieces(path, True, block)) == normalize_text(text), (text, block)
            assert "".join(text_pieces(path, False, block)) == text, (text, block)


def test_streamed_encoding_equals_in_memory_encoding(tmp_path):
    rng = random.Random(1)
    text = "".join(rng.choice(ALPHABET) for _ in range(3000))
    text += "".join(chr(0x4E00 + i) for i in range(300))  # > 256 characters: uint16 ids
    path = _write(tmp_path / "t.txt", text)
    for normalize in (True, False):
        got = encode_text_file(path, normalize, block_bytes=7)
        want = _in_memory(path, normalize)
        assert got.ids.dtype == np.uint16
        _assert_same_encoding(got, want)


def test_make_task_through_the_streamed_path_trains_on_the_same_batches(tmp_path, monkeypatch):
    path = _write(tmp_path / "t.txt", "The Lion  chases a MOUSE. " * 300)
    settings = dict(seq_len=20, batch_size=3, val_fraction=0.1)
    small = make_task({"name": "text", "path": str(path)}, **settings)
    monkeypatch.setattr(input_files, "STREAM_MIN_BYTES", 0)
    big = make_task({"name": "text", "path": str(path)}, **settings)
    assert isinstance(big.corpus.ids, np.memmap) and small.corpus.text is not None
    assert big.data_sha1 == small.data_sha1 == hashlib.sha1(small.text.encode()).hexdigest()
    assert big.text == small.text  # decoded from the ids
    assert (big.n_chars, big.n_train, big.n_val) == (small.n_chars, small.n_train, small.n_val)
    for _ in range(200):
        a, b = small.next_batch(), big.next_batch()
        np.testing.assert_array_equal(a.inputs, b.inputs)
        np.testing.assert_array_equal(a.targets, b.targets)
        assert a.reset_h == b.reset_h
    # Views of the one memory-mapped array, not copies.
    assert np.shares_memory(big.streams, big.corpus.ids)
    assert np.shares_memory(big.val_ids, big.corpus.ids)


def test_not_utf8_has_the_same_message_on_both_paths(tmp_path):
    raw = ("abc €" * 10).encode() + b"\xff" + b"tail"
    path = tmp_path / "bad.txt"
    path.write_bytes(raw)
    with pytest.raises(ValueError) as small:
        read_text_file(path)
    for block in (1, 3, 4, 1000):
        with pytest.raises(ValueError) as big:
            encode_text_file(path, block_bytes=block)
        assert str(big.value) == str(small.value)
    bad_byte = raw.index(b"\xff")
    assert f"byte {bad_byte}:" in str(small.value)
    # A character cut off by the end of the file.
    path.write_bytes(b"abc \xe2\x82")
    with pytest.raises(ValueError, match=r"data.path: .* is not UTF-8 text \(byte 4"):
        encode_text_file(path, block_bytes=5)


# --------------------------------------------------------------------------------------
# The cache
# --------------------------------------------------------------------------------------


def test_cache_is_reused_and_a_changed_file_is_encoded_again(tmp_path, monkeypatch):
    path = _write(tmp_path / "t.txt", "hello world " * 50)
    first = encode_text_file(path, block_bytes=16)
    entries = sorted((tmp_path / "cache").iterdir())
    assert [p.suffix for p in entries] == [".json", ".npy"]
    assert isinstance(first.ids, np.memmap) and not first.ids.flags.writeable

    def no_reading(*args):
        raise AssertionError("the cached encoding should have been reused")

    monkeypatch.setattr(input_files, "_scan_text_file", no_reading)
    again = encode_text_file(path, block_bytes=16)
    _assert_same_encoding(again, first)
    monkeypatch.undo()
    monkeypatch.setenv("RNN_LAB_CACHE", str(tmp_path / "cache"))

    # New content of the same size, new mtime: encoded again, the stale entry removed.
    _write(path, "hello wor1d " * 50)
    st = path.stat()
    assert st.st_size == first.ids.size + 1  # + the stripped trailing space
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    changed = encode_text_file(path, block_bytes=16)
    _assert_same_encoding(changed, _in_memory(path))
    assert changed.sha1 != first.sha1
    # New size: a different text.
    _write(path, "hello there " * 60)
    grown = encode_text_file(path, block_bytes=16)
    _assert_same_encoding(grown, _in_memory(path))
    assert grown.sha1 != first.sha1
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1, "stale entries are removed"
    # normalize is part of the key: both encodings of one file live side by side.
    raw = encode_text_file(path, normalize=False, block_bytes=16)
    _assert_same_encoding(raw, _in_memory(path, normalize=False))
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2
    # A truncated cache file is not trusted.
    for npy in (tmp_path / "cache").glob("*.npy"):
        npy.write_bytes(npy.read_bytes()[:-5])
    _assert_same_encoding(encode_text_file(path, block_bytes=16), _in_memory(path))


def test_a_file_changed_between_the_two_passes_is_refused(tmp_path, monkeypatch):
    path = _write(tmp_path / "t.txt", "hello world " * 50)
    scan = input_files._scan_text_file

    def scan_then_append(*args):
        result = scan(*args)
        with open(path, "a", encoding="utf-8") as f:
            f.write(" Ω")
        return result

    monkeypatch.setattr(input_files, "_scan_text_file", scan_then_append)
    with pytest.raises(ValueError, match=r"^data\.path: .* changed while it was being read"):
        encode_text_file(path, block_bytes=16)
    assert not list((tmp_path / "cache").iterdir()), "nothing half-written is left"


def test_unwritable_cache_names_the_way_out(tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("x")
    monkeypatch.setenv("RNN_LAB_CACHE", str(tmp_path / "a_file" / "cache"))
    path = _write(tmp_path / "t.txt", "hello world " * 5)
    with pytest.raises(ValueError, match=r"^data\.path: cannot cache .* set RNN_LAB_CACHE"):
        encode_text_file(path)


def test_cache_directory_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("RNN_LAB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert input_files.cache_dir() == tmp_path / "xdg" / "rnn_lab"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert input_files.cache_dir() == tmp_path / "home" / ".cache" / "rnn_lab"


# --------------------------------------------------------------------------------------
# Compact ids, bit-identical training batches
# --------------------------------------------------------------------------------------


def test_elman_ids_are_compact_and_the_batches_unchanged():
    text = generate_elman_corpus()
    task = make_task(ELMAN, seq_len=25, batch_size=4, val_fraction=0.1)
    assert task.train_ids.dtype == np.uint8
    assert task.data_sha1 == hashlib.sha1(text.encode("utf-8")).hexdigest()
    assert task.text == text and task.vocab.chars == sorted(set(text))
    # The encoding as it was: int64 ids from a dict lookup, the same split and streams.
    old_ids = np.array([task.vocab.index[c] for c in text], dtype=np.int64)
    split = int(len(old_ids) * 0.9)
    segment = split // 4
    streams = old_ids[: segment * 4].reshape(4, -1)
    params = _random_params(task.vocab.size)
    h = np.zeros((4, 16))
    for _ in range(3 * segment // 25):  # past the wrap-around
        batch = task.next_batch()
        p = task.pointer - 25
        np.testing.assert_array_equal(batch.inputs, streams[:, p : p + 25].T)
        np.testing.assert_array_equal(batch.targets, streams[:, p + 1 : p + 26].T)
    # The engine and the loss give the very same numbers on uint8 and int64 ids.
    wide = batch.inputs.astype(np.int64), batch.targets.astype(np.int64)
    caches = [engine.forward(params, x, h, "tanh") for x in (batch.inputs, wide[0])]
    losses = [softmax_cross_entropy(c.logits, y) for c, y in zip(caches, (batch.targets, wide[1]))]
    grads = [engine.backward(params, c, ls[1], "tanh") for c, ls in zip(caches, losses)]
    assert losses[0][0] == losses[1][0]
    np.testing.assert_array_equal(grads[0].flat, grads[1].flat)


def test_vocab_encode_decode_round_trip_and_unknown_character():
    text = "".join(chr(c) for c in range(32, 700)) + "😀"
    vocab = Vocab.from_text(text)
    assert vocab.chars == sorted(set(text)) and vocab.dtype == np.uint16
    ids = vocab.encode(text)
    assert ids.dtype == np.uint16 and vocab.decode(ids) == text
    assert vocab.decode([]) == "" and vocab.decode([0, 1]) == text[:2]
    with pytest.raises(ValueError, match="character 'Ω' is not in the vocabulary"):
        Vocab(["a", "b"]).encode("abΩa")
    assert Vocab(["a"] * 0).size == 0


def test_text_property_is_refused_above_the_decode_limit(monkeypatch, tmp_path):
    path = _write(tmp_path / "t.txt", "some words here " * 10)
    monkeypatch.setattr(input_files, "STREAM_MIN_BYTES", 0)
    task = make_task({"name": "text", "path": str(path)}, 5, 1, 0.2)
    monkeypatch.setattr(data, "DECODE_MAX_CHARS", 10)
    with pytest.raises(ValueError, match="too many to hold as one str"):
        _ = task.text


# --------------------------------------------------------------------------------------
# Validation in bounded chunks
# --------------------------------------------------------------------------------------


def _summed_cross_entropy(params, batches) -> tuple[float, int]:
    total, n, h = 0.0, 0, None
    for batch in batches:
        if h is None or batch.reset_h:
            h = np.zeros((1, params.hidden_size))
        cache = engine.forward(params, batch.inputs, h, "tanh")
        loss, _, counted = softmax_cross_entropy(cache.logits, batch.targets, batch.mask)
        total, n, h = total + loss, n + counted, cache.h_last
    return total, n


@pytest.mark.parametrize("chunk", [data.VAL_CHUNK, 100, 1])
def test_validation_chunks_cover_the_split_and_equal_one_pass(monkeypatch, chunk):
    monkeypatch.setattr(data, "VAL_CHUNK", chunk)
    task = make_task(ELMAN, seq_len=25, batch_size=1, val_fraction=0.4)
    batches = list(task.validation_batches())
    assert len(batches) == -(-(task.n_val - 1) // chunk) > (1 if chunk < 2048 else 0)
    assert [b.reset_h for b in batches] == [True] + [False] * (len(batches) - 1)
    assert all(b.inputs.shape == b.targets.shape == (len(b.inputs), 1) for b in batches)
    assert max(len(b.inputs) for b in batches) <= chunk
    assert all(b.mask is None for b in batches)
    inputs = np.concatenate([b.inputs[:, 0] for b in batches])
    targets = np.concatenate([b.targets[:, 0] for b in batches])
    np.testing.assert_array_equal(inputs, task.val_ids[:-1])
    np.testing.assert_array_equal(targets, task.val_ids[1:])

    params = _random_params(task.vocab.size)
    chunked, n = _summed_cross_entropy(params, batches)
    whole, n_whole = _summed_cross_entropy(params, [task.validation_batch()])
    assert n == n_whole == task.n_val - 1
    assert abs(chunked - whole) <= 1e-12 * abs(whole)
    # Restarting h at every chunk would not give it: the test can tell.
    if chunk < 2048:
        restarted = sum(_summed_cross_entropy(params, [b])[0] for b in batches)
        assert abs(restarted - whole) > 1e-9 * abs(whole)


def test_validation_reads_the_whole_split_while_it_is_small():
    task = make_task(ELMAN, seq_len=25, batch_size=1, val_fraction=0.1)
    assert task.val_max_chars == data.VAL_MAX_CHARS > task.n_val
    assert task.val_sample.whole and task.n_val_used == task.n_val
    assert task.val_sample.describe() == f"the whole split ({task.n_val} characters)"
    (batch,) = task.validation_batches()  # one stream, one chunk: the split as it was read
    np.testing.assert_array_equal(batch.inputs[:, 0], task.val_ids[:-1])
    # 0, or any bound not below the split, is the whole split too
    for bound in (0, task.n_val, 10**9):
        assert data.val_sample(task.n_val, bound).whole


def test_the_default_bound_samples_a_longer_split_in_evenly_spaced_blocks():
    assert data.val_sample(data.VAL_MAX_CHARS, data.VAL_MAX_CHARS).whole
    sample = data.val_sample(40_000, data.VAL_MAX_CHARS)
    assert (len(sample.starts), sample.length) == (32, 1024) and sample.n_chars == 32_768
    assert sample.starts[0] == 0 and sample.starts[-1] + sample.length == 40_000
    gaps = np.diff(sample.starts)
    assert gaps.min() >= sample.length and gaps.max() - gaps.min() <= 1  # evenly spaced
    assert sample.describe() == (
        "32768 of 40000 characters of the split (32 evenly spaced blocks of 1024, each from h = 0)"
    )
    # a bound that is not a multiple of the block: fewer characters, never more
    odd = data.val_sample(10**6, 100_000)
    assert (len(odd.starts), odd.length, odd.n_chars) == (98, 1020, 99_960)


def _block_losses(params, blocks: np.ndarray) -> float:
    """Summed cross-entropy of each block read alone from h = 0, summed over the blocks."""
    return sum(_summed_cross_entropy(params, [_one_stream(b)])[0] for b in blocks)


def _one_stream(ids):
    return data.Batch(inputs=ids[:-1, None], targets=ids[1:, None], mask=None, reset_h=True)


def test_a_capped_split_is_read_as_its_blocks_in_bounded_chunks_the_same_every_time():
    task = make_task(ELMAN, seq_len=25, batch_size=1, val_fraction=0.5, val_max_chars=3000)
    sample = task.val_sample
    assert task.n_val > 3000 and task.n_val_used == 3000
    assert (len(sample.starts), sample.length) == (3, 1000)
    blocks = np.stack([task.val_ids[s : s + 1000] for s in sample.starts])  # (3, 1000)
    batches = list(task.validation_batches())
    assert [b.reset_h for b in batches] == [True] + [False] * (len(batches) - 1)
    assert all(b.inputs.size <= data.VAL_CHUNK for b in batches)
    np.testing.assert_array_equal(np.concatenate([b.inputs for b in batches]), blocks[:, :-1].T)
    np.testing.assert_array_equal(np.concatenate([b.targets for b in batches]), blocks[:, 1:].T)
    again = list(task.validation_batches())
    assert all(np.array_equal(a.inputs, b.inputs) for a, b in zip(batches, again))
    # The validation loss is each block's own loss from h = 0, per character.
    from rnn_lab.run.lifecycle import validation_loss

    params = _random_params(task.vocab.size)
    expected = _block_losses(params, blocks) / (3 * 999)
    assert validation_loss(params, "tanh", task) == pytest.approx(expected, rel=1e-12)
    whole_batch = task.validation_batch()
    assert whole_batch.inputs.shape == (999, 3)
    for bad in (-1, 1):
        with pytest.raises(ValueError, match=rf"^val_max_chars: {bad} is not valid"):
            make_task(ELMAN, seq_len=25, batch_size=1, val_fraction=0.5, val_max_chars=bad)


# --------------------------------------------------------------------------------------
# Texts that cannot be learned from
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True])
@pytest.mark.parametrize(
    "content,normalize,expected",
    [
        ("", True, r"is empty \(0 characters after normalisation"),
        ("", False, r"is empty \(0 characters\)"),
        (" \n\t  \n", True, r"is empty \(0 characters after normalisation"),
        ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", True, r"single distinct character \('a'\)"),
        ("  AaAaA aaaa  ", False, None),  # 3 distinct characters raw: fine
        ("\n\nAAAAAAAAAAAAAAAAAAAA\n", True, r"single distinct character \('a'\)"),
    ],
)
def test_empty_and_single_character_texts_are_refused(
    tmp_path, monkeypatch, streamed, content, normalize, expected
):
    if streamed:
        monkeypatch.setattr(input_files, "STREAM_MIN_BYTES", 0)
    path = _write(tmp_path / "t.txt", content)
    settings = {"name": "text", "path": str(path), "normalize": normalize}
    if expected is None:
        assert load_corpus(settings).vocab.size == 3
        return
    with pytest.raises(ValueError, match=rf"^data\.path: '{path}' .*{expected}") as err:
        make_task(settings, seq_len=2, batch_size=1, val_fraction=0.5)
    assert "\n" not in str(err.value) and "seq_len" not in str(err.value)
    assert not list((tmp_path / "cache").glob("*.npy")), "nothing cached for a refused text"


def test_missing_path_and_unknown_name():
    with pytest.raises(ValueError, match=r"^data\.path: missing"):
        load_corpus({"name": "text"})
    with pytest.raises(ValueError, match=r"^data\.path: file '/nonexistent.txt' does not exist"):
        load_corpus({"name": "text", "path": "/nonexistent.txt"})
    with pytest.raises(ValueError, match=r"^data\.name: unknown 'nope'"):
        load_corpus({"name": "nope"})


# --------------------------------------------------------------------------------------
# Analysis reads a bounded excerpt of a big text
# --------------------------------------------------------------------------------------


def test_analysis_text_is_the_whole_small_text_or_an_excerpt_around_the_split(monkeypatch):
    corpus = load_corpus(ELMAN)
    text, split = analysis.analysis_text(corpus, 0.1)
    assert text == corpus.text and split == len(split_ids(corpus.ids, 0.1)[0])
    monkeypatch.setattr(analysis, "ANALYSIS_MAX_CHARS", 1000)
    excerpt, cut = analysis.analysis_text(corpus, 0.1)
    full_split = len(split_ids(corpus.ids, 0.1)[0])
    assert len(excerpt) == 1000 and cut == 900
    assert excerpt[:cut] == corpus.text[full_split - 900 : full_split]
    assert excerpt[cut:] == corpus.text[full_split : full_split + 100]


def test_char_text_task_still_takes_a_str():
    text = generate_elman_corpus(60, 1)
    task = CharTextTask(text, seq_len=10)
    assert task.text is text and task.n_chars == len(text)
    assert task.state_dict() == {"pointer": 0}
    task.next_batch()
    task.load_state_dict({"pointer": 30})
    assert task.pointer == 30
