"""The real-text recipe (docs/real_text.md, issue 19 point 5): the text built from a fortune
folder, and the baselines a trained network is measured against."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rnn_lab.bench.real_text import (
    build_fortunes_text,
    files_in_validation,
    fortune_files,
    ngram_cross_entropy,
    printable,
)


def test_the_text_is_the_fortune_files_in_name_order_with_blank_lines_between_fortunes(tmp_path):
    folder = tmp_path / "fortunes"
    folder.mkdir()
    (folder / "b").write_text("Second file.\n%\nIts 100% second\tfortune.\n%\n")
    (folder / "a").write_text('To be or not\nto be.\n%\nA "quote".\n%\n')
    (folder / "a.dat").write_bytes(b"\x00\x01index")
    (folder / "a.u8").symlink_to("a")
    assert [p.name for p in fortune_files(folder)] == ["a", "b"]
    info = build_fortunes_text(tmp_path / "out.txt", folder)
    text = (tmp_path / "out.txt").read_text()
    assert text == (
        'To be or not\nto be.\n\nA "quote".\n\nSecond file.\n\nIts 100% second\tfortune.\n\n'
    )
    assert (info["files"], info["chars"]) == (2, len(text))
    assert info["file_chars"] == {"a": 33, "b": len(text) - 33}
    assert files_in_validation(info["file_chars"], len(text) - 33) == ["b"]
    assert files_in_validation(info["file_chars"], len(text) - 32) == ["a", "b"]
    with pytest.raises(FileNotFoundError, match="apt-get install fortunes"):
        fortune_files(tmp_path / "missing")


def _brute_ngram(train, val, n, V, a):
    nll = []
    for i in range(n - 1, len(val)):
        ctx = tuple(val[i - n + 1 : i])
        seen = sum(tuple(train[j : j + n]) == (*ctx, val[i]) for j in range(len(train) - n + 1))
        if n == 1:
            context = len(train)
        else:
            context = sum(tuple(train[j : j + n - 1]) == ctx for j in range(len(train) - n + 1))
        nll.append(-math.log((seen + a) / (context + a * V)))
    return float(np.mean(nll))


@pytest.mark.parametrize("n", [1, 2, 3])
def test_ngram_cross_entropy_counts_as_written(n):
    rng = np.random.default_rng(n)
    V = 4
    train, val = rng.integers(0, V, 300).astype(np.uint8), rng.integers(0, V, 60).astype(np.uint8)
    assert ngram_cross_entropy(train, val, n, V) == pytest.approx(
        _brute_ngram(list(train), list(val), n, V, 0.05), rel=1e-12
    )


def test_ngrams_see_the_memory_a_text_has():
    period = np.tile(np.arange(5, dtype=np.uint8), 200)  # 0 1 2 3 4 0 1 ...
    assert ngram_cross_entropy(period, period, 1, 5) == pytest.approx(math.log(5), rel=1e-3)
    assert ngram_cross_entropy(period, period, 2, 5) < 0.01


def test_control_characters_are_shown_escaped():
    assert printable("a\x07b\x08c\n\td") == "a\\x07b\\x08c\n\td"


def test_the_page_is_written_from_real_runs(tmp_path):
    """--quick: the page's commands at a tiny size, on a small fortune folder."""
    from rnn_lab.bench.real_text import main

    folder = tmp_path / "fortunes"
    folder.mkdir()
    quotes = [f"Quote number {i}: To be or not to be, that is the question.\n" for i in range(400)]
    (folder / "wisdom").write_text("%\n".join(quotes) + "%\n")
    out = tmp_path / "real_text.md"
    assert main(["--folder", str(folder), "--out", str(out), "--quick"]) == 0
    page = out.read_text()
    assert "Written by `python benchmarks/real_text.py --folder" in page
    assert page.count("| 40 | ") == 2  # each run's last validation row
    assert "--prime 'To be or' --temperature 0.8" in page and "To be or" in page
    assert "| the untrained network: ln V |" in page and "### Why one stream stays high" in page
    assert (
        "### Where the recipe stops" in page
        and "the validation split is other files (wisdom" in page
    )
