"""The walkthrough's learning checks, through the real trainer on a text file.

"abab..." must be learned to near-zero loss, and a network trained on "hello hello ..."
primed with "hel" must continue with "lo" at temperature 0. The settings are the walkthrough's
defaults (SGD momentum 0.9, lr 0.01, clip 5, orthogonal W_hh, tanh) on a small network, so
each run takes a fraction of a second; both forms of momentum are checked (heavy-ball, and
the moving average that dampening = momentum gives, the Hydra config's default).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from rnn_lab.core import engine
from rnn_lab.core.data import Vocab
from rnn_lab.run.settings import TrainSettings
from rnn_lab.run.trainer import train

SGD_FORMS = {
    "heavy_ball": {"name": "sgd", "momentum": 0.9},
    "moving_average": {"name": "sgd", "momentum": 0.9, "dampening": 0.9},
}


def train_on_text(tmp_path, text: str, steps: int, seed: int = 0, **changes):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text, encoding="utf-8")
    settings = dict(
        steps=steps,
        hidden_size=16,
        seq_len=10,
        seed=seed,
        data={"name": "text", "path": str(corpus)},
        val_interval=100,
        checkpoint_interval=0,
        log_interval=0,
        sample_interval=0,
        analyze=False,
    )
    settings.update(changes)
    run_dir = tmp_path / "run"
    summary = train(TrainSettings(**settings), run_dir)
    assert summary["status"] == "ok"
    with np.load(run_dir / "checkpoint.npz") as ckpt:
        params = engine.Params(**{n: ckpt[n] for n in engine.PARAM_NAMES})
    vocab = Vocab(json.loads((run_dir / "vocab.json").read_text())["chars"])
    return summary, params, vocab


@pytest.mark.parametrize("optim", SGD_FORMS.values(), ids=list(SGD_FORMS))
@pytest.mark.parametrize("batch_size", [1, 4])
def test_alternating_ab_is_learned_to_near_zero_loss(tmp_path, batch_size, optim):
    summary, _, vocab = train_on_text(
        tmp_path, "ab" * 1000, steps=300, batch_size=batch_size, optim=optim
    )
    assert vocab.chars == ["a", "b"]
    # Chance is ln 2 = 0.69 nats/char; a learned alternation is nearly certain.
    assert summary["final_loss"] < 0.05
    assert summary["val_loss"] < 0.05


@pytest.mark.parametrize("optim", SGD_FORMS.values(), ids=list(SGD_FORMS))
def test_hello_primed_with_hel_continues_lo(tmp_path, optim):
    summary, params, vocab = train_on_text(tmp_path, "hello " * 400, steps=500, optim=optim)
    assert summary["final_loss"] < 0.05
    rng = np.random.default_rng(0)
    ids = engine.sample(params, "tanh", vocab.encode("hel"), 8, temperature=0.0, rng=rng)
    assert vocab.decode(ids) == "lo hello"


def test_an_untrained_network_does_not_pass_the_hello_check(tmp_path):
    """The check above is not vacuous: one step of training does not produce 'lo'."""
    _, params, vocab = train_on_text(tmp_path, "hello " * 400, steps=1)
    ids = engine.sample(params, "tanh", vocab.encode("hel"), 8, 0.0, np.random.default_rng(0))
    assert vocab.decode(ids) != "lo hello"
