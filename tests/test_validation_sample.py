"""Validation reads a bounded, fixed sample of a long split, by default (issue 19, point 4):
every validation of a run and its final one read the same characters, the lone trainer and the
stacked one alike, the log and summary say how many, and a small split is read whole."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from rnn_lab.core import data
from rnn_lab.core.data import CharTextTask, generate_elman_corpus
from rnn_lab.inspect.load import load_run
from rnn_lab.run.lifecycle import build_task, validation_loss
from rnn_lab.run.stacked import train_group
from rnn_lab.run.trainer import train


@pytest.fixture(scope="module")
def long_text(tmp_path_factory):
    """~370k characters: a validation split of ~37k, longer than the default bound."""
    path = tmp_path_factory.mktemp("text") / "long.txt"
    path.write_text(" ".join(generate_elman_corpus(600, seed) for seed in range(30)))
    return path


@pytest.fixture
def validations(monkeypatch):
    """Every validation pass: the (steps, streams) inputs it read, concatenated."""
    passes: list[np.ndarray] = []
    original = CharTextTask.validation_batches

    def recorded(self):
        read = []
        for batch in original(self):
            read.append(batch.inputs)
            yield batch
        passes.append(np.concatenate(read))

    monkeypatch.setattr(CharTextTask, "validation_batches", recorded)
    return passes


def _settings(tiny_settings, path, **changes):
    return tiny_settings(data={"name": "text", "path": str(path), "normalize": True}, **changes)


def test_a_long_split_is_sampled_by_default_the_same_at_every_validation(
    tmp_path, tiny_settings, long_text, validations, caplog
):
    s = _settings(tiny_settings, long_text, steps=40, val_interval=20)
    assert s.val_max_chars == data.VAL_MAX_CHARS
    task = build_task(s)
    assert task.n_val > data.VAL_MAX_CHARS
    blocks = np.stack([task.val_ids[i : i + 1024] for i in task.val_sample.starts])
    with caplog.at_level(logging.INFO, logger="rnn_lab"):
        summary = train(s, tmp_path)
    # Steps 20 and 40; the last step's validation is the final one (not read twice).
    assert len(validations) == 2
    for inputs in validations:
        np.testing.assert_array_equal(inputs, blocks[:, :-1].T)
    assert (summary["val_chars_read"], summary["val_split_chars"]) == (32_768, task.n_val)
    assert f"validation reads 32768 of {task.n_val} characters of the split (32" in caplog.text
    assert f"(on 32768 of {task.n_val} validation chars)" in caplog.text
    params = load_run(tmp_path).params()
    assert summary["val_loss"] == validation_loss(params, s.activation, task)


def test_the_final_validation_reads_the_same_sample(
    tmp_path, tiny_settings, long_text, validations
):
    summary = train(_settings(tiny_settings, long_text, steps=40, val_interval=30), tmp_path)
    assert len(validations) == 2  # step 30, then the final one at step 40
    np.testing.assert_array_equal(validations[0], validations[1])
    assert summary["val_chars_read"] == 32_768


def test_val_max_chars_still_overrides_the_bound(tmp_path, tiny_settings, long_text, validations):
    whole = train(_settings(tiny_settings, long_text, val_max_chars=0, val_interval=0), tmp_path)
    assert whole["val_chars_read"] == whole["val_split_chars"] == len(validations[0]) + 1
    capped = _settings(tiny_settings, long_text, val_max_chars=5000, val_interval=0)
    summary = train(capped, tmp_path / "capped")
    assert summary["val_chars_read"] == 5000 and validations[1].shape == (999, 5)


def test_stacked_runs_validate_on_the_same_sample_once_per_stack(
    tmp_path, tiny_settings, long_text, validations
):
    arms = [_settings(tiny_settings, long_text, seed=seed) for seed in (1, 2)]
    stacked = train_group([(s, tmp_path / f"stacked{i}") for i, s in enumerate(arms)])
    assert len(validations) == 2  # steps 20 and 40, all arms at once
    singles = [train(s, tmp_path / f"single{i}") for i, s in enumerate(arms)]
    assert len(validations) == 6  # and 2 for each lone run
    assert all(np.array_equal(v, validations[0]) for v in validations)
    for a, b in zip(stacked, singles):
        assert a["val_chars_read"] == b["val_chars_read"] == 32_768
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-12)


def test_a_small_split_keeps_its_run_identity(tmp_path, tiny_settings):
    """The Elman split is read whole under the new default, as under the old one (0): the same
    run, so a directory written before the default changed is this run's own."""
    before = train(tiny_settings(val_max_chars=0), tmp_path)
    again = train(tiny_settings(resume=True), tmp_path)
    assert again["run_id"] == before["run_id"] and again["status"] == "ok"
    assert again["val_chars_read"] == again["val_split_chars"]
