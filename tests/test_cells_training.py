"""The gated cells inside the trainer: a whole run equals a torch replica, resumes bit-identically,
honours freeze_whh and init=file, and bad cell settings are refused before any work."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rnn_lab.core import cells, gated
from rnn_lab.run.lifecycle import TrainError, build_task
from rnn_lab.run.settings import TrainSettings
from rnn_lab.run.trainer import train

TORCH_NAMES = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
REPLICA = dict(
    steps=300,
    hidden_size=12,
    seq_len=10,
    batch_size=2,
    lr=0.05,
    clip=1.0,
    init={"name": "torch", "scale": 1.0, "path": None},
    optim={"name": "sgd", "momentum": 0.9, "dampening": 0.0, "nesterov": False},
    record=False,
    val_interval=0,
    sample_interval=0,
    checkpoint_interval=0,
    log_interval=0,
    analyze=False,
    data={"name": "elman", "seed": 42, "num_sentences": 60},
)


def rel_err(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(np.linalg.norm(a), np.linalg.norm(b))
    return float(np.linalg.norm(a - b) / scale) if scale > 0 else 0.0


def checkpoint(run_dir) -> dict[str, np.ndarray]:
    with np.load(run_dir / "checkpoint.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def torch_replica(s: TrainSettings, params):
    """The same run in torch: nn.GRU / nn.LSTM + nn.Linear, autograd, rnn_lab's global-norm
    clip (torch's clip_grad_norm_ adds 1e-6 to the norm), torch.optim.SGD with momentum, the
    state carried between chunks and reset where the task says, on the task's own batches."""
    rnn, head = gated.to_torch(params)
    trainable = [*rnn.parameters(), *head.parameters()]
    opt = torch.optim.SGD(trainable, lr=s.lr, momentum=s.optim["momentum"])
    task = build_task(s)
    V, B, H = task.output_size, s.batch_size, s.hidden_size
    zero = torch.zeros(1, B, H, dtype=torch.float64)
    state = None
    for _ in range(s.steps):
        batch = task.next_batch()
        if state is None or batch.reset_h:
            state = zero if params.cell == "gru" else (zero, zero.clone())
        x = F.one_hot(torch.as_tensor(batch.inputs, dtype=torch.long), V).double()  # (T, B, V)
        out, last = rnn(x, state)
        logits = head(out)  # (T, B, V)
        loss = F.cross_entropy(
            logits.reshape(-1, V), torch.as_tensor(batch.targets).reshape(-1), reduction="sum"
        )
        opt.zero_grad()
        (loss / B).backward()  # rnn_lab: summed over t, averaged over the B streams
        norm = torch.sqrt(sum((w.grad**2).sum() for w in trainable))
        if norm > s.clip:
            for w in trainable:
                w.grad.mul_(s.clip / norm)
        opt.step()
        state = tuple(t.detach() for t in last) if isinstance(last, tuple) else last.detach()
    return rnn, head, state


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_a_300_step_run_equals_a_torch_replica(cell, tmp_path):
    s = TrainSettings(cell={"name": cell}, **REPLICA)
    summary = train(s, tmp_path)
    assert summary["status"] == "ok" and summary["steps_done"] == 300
    ours = checkpoint(tmp_path)
    start = cells.params_from_arrays(cell, _initial(s))
    rnn, head, state = torch_replica(s, start)
    for name in TORCH_NAMES:
        assert rel_err(ours[name], getattr(rnn, name).detach().numpy()) < 1e-8, name
    assert rel_err(ours["W_hy"], head.weight.detach().numpy()) < 1e-8
    assert rel_err(ours["b_y"], head.bias.detach().numpy()) < 1e-8
    torch_h = state[0] if isinstance(state, tuple) else state
    assert rel_err(ours["h"], torch_h[0].numpy()) < 1e-8
    if cell == "lstm":
        assert rel_err(ours["c"], state[1][0].numpy()) < 1e-8
    # It learned (below 90% of a uniform guess's ln V): not compared at a trivial point.
    V = len(json.loads((tmp_path / "vocab.json").read_text())["chars"])
    assert summary["final_loss"] < 0.9 * np.log(V)


def _initial(s: TrainSettings) -> dict[str, np.ndarray]:
    from rnn_lab.run.lifecycle import build_params

    return build_params(s, build_task(s)).arrays()


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_a_resumed_gated_run_ends_bit_identical(cell, tmp_path, tiny_settings):
    whole = tiny_settings(cell={"name": cell}, steps=60, batch_size=2)
    train(whole, tmp_path / "whole")
    # cut at a validation step, so its end-of-run validation is also the whole run's row
    train(tiny_settings(cell={"name": cell}, steps=40, batch_size=2), tmp_path / "cut")
    train(tiny_settings(cell={"name": cell}, steps=60, batch_size=2, resume=True), tmp_path / "cut")
    a, b = checkpoint(tmp_path / "whole"), checkpoint(tmp_path / "cut")
    assert ("c" in a) == (cell == "lstm")
    for key in a:
        if key not in ("wall_time_s", "settings"):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    history = [(tmp_path / d / "history.csv").read_text() for d in ("whole", "cut")]
    assert history[0] == history[1]


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_freeze_whh_freezes_every_recurrent_block(cell, tmp_path, tiny_settings):
    s = tiny_settings(cell={"name": cell}, freeze_whh=True, steps=30)
    train(s, tmp_path)
    start = _initial(s)
    end = checkpoint(tmp_path)
    np.testing.assert_array_equal(end["weight_hh_l0"], start["weight_hh_l0"])
    assert not np.array_equal(end["bias_hh_l0"], start["bias_hh_l0"])  # biases still train


def test_init_file_takes_a_gated_checkpoint_and_refuses_a_vanilla_one(tmp_path, tiny_settings):
    train(tiny_settings(cell={"name": "gru"}, steps=20), tmp_path / "gru")
    train(tiny_settings(steps=20), tmp_path / "rnn")
    path = str(tmp_path / "gru" / "checkpoint.npz")
    s = tiny_settings(cell={"name": "gru"}, init={"name": "file", "scale": 1.0, "path": path})
    train(s, tmp_path / "from_file")
    assert _initial(s)["weight_hh_l0"].shape == (3 * 8, 8)
    np.testing.assert_array_equal(_initial(s)["W_hy"], checkpoint(tmp_path / "gru")["W_hy"])
    wrong = str(tmp_path / "rnn" / "checkpoint.npz")
    s = tiny_settings(cell={"name": "lstm"}, init={"name": "file", "scale": 1.0, "path": wrong})
    with pytest.raises(TrainError, match=r"lacks arrays .*weight_ih_l0.*cell=lstm needs"):
        train(s, tmp_path / "refused")
    assert not (tmp_path / "refused" / "checkpoint.npz").exists()


def test_bad_cell_settings_are_refused_naming_key_value_and_choices(compose):
    from rnn_lab.app.schema import ConfigError, settings_from_config

    with pytest.raises(ConfigError, match=r"activation='relu' with cell=gru.*only activation=tanh"):
        settings_from_config(compose(["cell=gru", "activation=relu"]))
    assert settings_from_config(compose(["cell=lstm"])).cell == {
        "name": "lstm",
        "forget_bias": None,
    }
    assert settings_from_config(compose([])).cell == {"name": "rnn"}
    with pytest.raises(
        ConfigError, match=r"cell.forget_bias=1.0 is not valid: cell=gru has no key 'forget_bias'"
    ):
        settings_from_config(compose(["cell=gru", "+cell.forget_bias=1.0"]))
    with pytest.raises(ConfigError, match=r"optim.foo=1 is not valid: optim=sgd has no key 'foo'"):
        settings_from_config(compose(["+optim.foo=1"]))


def test_the_vanilla_cell_keeps_its_run_identity():
    from rnn_lab.run.settings import identity_settings

    assert "cell" not in identity_settings(TrainSettings())
    assert identity_settings(TrainSettings(cell={"name": "gru"}))["cell"] == {"name": "gru"}
