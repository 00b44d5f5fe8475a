"""The initial weights torch drew, kept on disk: a run whose initial weights were drawn before
does not import torch (its import was 0.7-1.0 s of a default run's ~10 s; the draws of the
default network are 30 KB).

rnn_lab draws its initial weights with torch.nn.init, so that a seed gives PyTorch's weights
(rnn_lab.core.inits, which draws them; this module, in run/ because core reads and
writes no file, keeps them). Those draws depend on the network's sizes, the init, the cell, the
embedding and the seed, and on what computes them: torch's version, the drawing code of this
package (inits.py) and the CPU (torch's kernels, e.g. the QR of the orthogonal init, may round
differently on another CPU type). All of them make the key, so an entry holds the bits torch
draws on this machine; the learning rate, the activation, seq_len and the other settings do
not change the draws and share them. The entries are ``init-<key>.npz`` in the cache folder of
encoded texts ($RNN_LAB_CACHE, else $XDG_CACHE_HOME/rnn_lab, else ~/.cache/rnn_lab), written
atomically; an entry that cannot be read is drawn again, a folder that cannot be written is
left alone (the draw is used, not kept).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import zipfile
from collections.abc import Callable
from functools import cache
from importlib import metadata
from pathlib import Path

import numpy as np

from rnn_lab.core import inits
from rnn_lab.run import init_drawer
from rnn_lab.run.rundir import atomic_write_bytes

INIT_CACHE_VERSION = 1  # part of the key: bump it when what is stored changes


def keeper(folder: str | Path) -> Callable:
    """The ``draws`` store of core.inits.init_params that keeps its entries in folder (the
    runs': rnn_lab.run.input_files.cache_dir())."""
    return functools.partial(cached_draws, folder=Path(folder))


def cached_draws(args: dict, draw: Callable[[], dict[str, np.ndarray]], folder: Path) -> dict:
    """The arrays ``draw()`` returns for these draw arguments: from folder when drawn before
    on this machine with this torch and this code, else drawn (and kept)."""
    path = folder / f"init-{_key_digest(args)}.npz"
    try:
        with np.load(path, allow_pickle=False) as stored:
            return {name: stored[name] for name in stored.files}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass  # not drawn yet, or unreadable: draw it
    # A single run's drawer imported torch while the run started (rnn_lab.run.init_drawer).
    arrays = init_drawer.draw(args) or draw()
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, buf.getvalue())
    except OSError:
        pass  # a read-only or full cache folder: the run goes on with its draw
    return arrays


def _key_digest(args: dict) -> str:
    key = {"version": INIT_CACHE_VERSION, "args": args, **_what_draws()}
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()[:24]


@cache
def _what_draws() -> dict:
    """torch's version, the drawing code and the CPU: what the bits of a draw depend on."""
    code = hashlib.sha1()
    for name in ("inits.py", "gated.py"):
        code.update((Path(inits.__file__).parent / name).read_bytes())
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = None
    return {"torch": torch_version, "code": code.hexdigest(), "cpu": _cpu()}


def _cpu() -> str:
    """The CPU type as kernels choose their code: its model and instruction-set flags."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        import platform

        return f"{platform.machine()} {platform.processor()}"
    info = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in lines if ":" in ln)}
    return f"{info.get('model name')} | {info.get('flags')}"
