"""The initial weights kept on disk (rnn_lab.run.init_cache): read back bit for bit as torch
draws them, without importing torch; keyed by what the draws depend on; a broken entry or an
unwritable folder costs only the draw."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from rnn_lab.core import inits
from rnn_lab.run import init_cache
from rnn_lab.run.input_files import cache_dir


def init_params(*sizes, **options):
    """init_params as a run calls it (rnn_lab.run.input_files.build_params): draws kept."""
    return inits.init_params(*sizes, draws=init_cache.keeper(cache_dir()), **options)


def arrays(params) -> dict[str, np.ndarray]:
    return params.arrays()


@pytest.mark.parametrize(
    "options",
    [
        dict(init="orthogonal"),
        dict(init="xavier", embed_dim=5),
        dict(init="random", dtype=np.float32),
        dict(init="identity", scale=0.5),
        dict(init="torch"),
        dict(init="orthogonal", cell="gru"),
        dict(init="torch", cell="lstm", forget_bias=1.0),
    ],
    ids=lambda o: "-".join(f"{k}={getattr(v, '__name__', v)}" for k, v in o.items()),
)
def test_a_kept_draw_is_torchs_draw_bit_for_bit(options, tmp_path, monkeypatch):
    monkeypatch.setenv("RNN_LAB_CACHE", str(tmp_path))
    drawn = arrays(init_params(11, 7, 11, seed=3, **options))  # torch draws, the entry is kept
    assert len(list(tmp_path.glob("init-*.npz"))) == 1
    kept = arrays(init_params(11, 7, 11, seed=3, **options))  # read back
    assert drawn.keys() == kept.keys()
    for name, value in drawn.items():
        assert value.dtype == kept[name].dtype and value.tobytes() == kept[name].tobytes(), name


def test_the_entry_is_the_draw_of_its_arguments(tmp_path, monkeypatch):
    """A seed, a size, an init or a cell of its own draws its own entry; settings outside the
    draw (scale, dtype, forget_bias: applied after) share it."""
    monkeypatch.setenv("RNN_LAB_CACHE", str(tmp_path))
    base = arrays(init_params(11, 7, 11, seed=3))["W_hh"]
    for options in (dict(seed=4), dict(init="xavier"), dict(cell="gru")):
        init_params(11, 7, 11, **{"seed": 3, **options})
    init_params(11, 8, 11, seed=3)
    assert len(list(tmp_path.glob("init-*.npz"))) == 5
    scaled = arrays(init_params(11, 7, 11, seed=3, scale=0.5, dtype=np.float32))["W_hh"]
    assert len(list(tmp_path.glob("init-*.npz"))) == 5
    assert np.array_equal(scaled, (base * 0.5).astype(np.float32))


def test_another_torch_code_or_cpu_is_another_entry(monkeypatch):
    args = dict(cell="rnn", init="orthogonal", seed=1)
    digest = init_cache._key_digest(args)
    what = init_cache._what_draws()
    for key, other in (("torch", "9.9.9"), ("code", "0" * 40), ("cpu", "another cpu")):
        monkeypatch.setattr(init_cache, "_what_draws", lambda key=key, other=other: {
            **what, key: other})  # fmt: skip
        assert init_cache._key_digest(args) != digest, key


def test_a_kept_draw_needs_no_torch(tmp_path):
    code = (
        "import sys; from rnn_lab.run.input_files import build_params;"
        "build_params({'name': 'orthogonal'}, (24, 64, 24), seed=42, embed_dim=0, dtype=float);"
        "print('torch' in sys.modules)"
    )
    env_run = dict(capture_output=True, text=True, env={**_env(), "RNN_LAB_CACHE": str(tmp_path)})
    first = subprocess.run([sys.executable, "-c", code], **env_run)
    second = subprocess.run([sys.executable, "-c", code], **env_run)
    assert first.stdout.strip() == "True", first.stderr  # drawn with torch
    assert second.stdout.strip() == "False", second.stderr  # read back


def test_a_broken_entry_is_drawn_again_and_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("RNN_LAB_CACHE", str(tmp_path))
    drawn = arrays(init_params(11, 7, 11, seed=3))
    (entry,) = tmp_path.glob("init-*.npz")
    entry.write_bytes(entry.read_bytes()[:100])  # cut short
    again = arrays(init_params(11, 7, 11, seed=3))
    assert all(np.array_equal(drawn[n], again[n]) for n in drawn)
    with np.load(entry) as fixed:
        assert set(fixed.files) == set(drawn)


def test_an_unwritable_cache_folder_costs_only_the_draw(tmp_path, monkeypatch):
    (tmp_path / "a_file").write_text("not a folder")
    monkeypatch.setenv("RNN_LAB_CACHE", str(tmp_path / "a_file" / "cache"))
    params = init_params(11, 7, 11, seed=3)
    assert params.W_hh.shape == (7, 7)


def _env() -> dict:
    import os

    from rnn_lab import PROJECT_ROOT

    return {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
