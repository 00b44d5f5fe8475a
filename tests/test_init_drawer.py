"""The drawer a single run forks at start (rnn_lab.run.init_drawer): it imports torch while the
run starts and draws the bits the run would draw itself; the run's own process never imports
torch; it never outlives the run (killed when not needed, at exit, with its parent), and a
drawer that died leaves the draw to the run. All with real processes and signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from cli_helpers import cli_env
from clusters import alive_in_session

from rnn_lab.core.inits import draw_arrays
from rnn_lab.run import init_drawer

DRAWS = [
    dict(cell="rnn", init="orthogonal", input_size=24, hidden_size=64, output_size=24),
    dict(cell="rnn", init="random", input_size=11, hidden_size=7, output_size=11, embed_dim=5),
    dict(cell="gru", init="identity", input_size=11, hidden_size=7, output_size=3),
    dict(cell="lstm", init="torch", input_size=11, hidden_size=7, output_size=11, seed=5),
]


def _args(draw: dict) -> dict:
    return {"embed_dim": 0, "seed": 42, **draw}


def _python(code: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=cli_env(), text=True, **kwargs)


def _left_in_session(sid: int, seconds: float = 5.0) -> list[str]:
    """The run's session's live processes once they had ``seconds`` to end (none: [])."""
    deadline = time.monotonic() + seconds
    while (alive := alive_in_session(sid)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive


def test_the_drawer_draws_the_bits_the_run_would_draw():
    """Each draw by a drawer (torch never imported by the asking process) equals the same
    draw in this process, bit for bit."""
    code = (
        "import json, sys, numpy as np\n"
        "from rnn_lab.run import init_drawer\n"
        "out = []\n"
        f"for args in {json.dumps([_args(d) for d in DRAWS])}:\n"
        "    init_drawer.start([])\n"
        "    assert init_drawer.running()\n"
        "    arrays = init_drawer.draw(args)\n"
        "    out.append({n: [str(a.dtype), a.tobytes().hex(), a.shape]\n"
        "                for n, a in arrays.items()})\n"
        "print(json.dumps({'torch': 'torch' in sys.modules, 'draws': out}))\n"
    )
    done = _python(code, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["torch"] is False  # every draw was the drawer's
    for draw, got in zip(DRAWS, report["draws"], strict=True):
        want = draw_arrays(**_args(draw))
        assert set(got) == set(want)
        for name, (dtype, hexbytes, shape) in got.items():
            assert dtype == str(want[name].dtype) and tuple(shape) == want[name].shape, name
            assert bytes.fromhex(hexbytes) == want[name].tobytes(), (draw, name)


@pytest.mark.parametrize("command", ["module", "cli"])
def test_a_first_run_draws_in_its_drawer_and_leaves_no_process(command, tmp_path):
    """`python -m rnn_lab.train` / `rnn-lab train` on a fresh cache: the run's process never
    imports torch, the kept draw is torch's, and nothing of the run is left once it ended;
    run again (weights kept), the drawer is killed unasked."""
    entry = (
        "runpy.run_module('rnn_lab.train', run_name='__main__', alter_sys=True)"
        if command == "module"
        else "from rnn_lab.app.cli import main; main(sys.argv[1:])"
    )
    cache = tmp_path / "cache"
    for attempt in ("first", "kept"):
        code = (
            "import atexit, json, os, runpy, sys\n"
            "atexit.register(lambda: print(json.dumps('torch' in sys.modules)))\n"
            f"sys.argv = ['rnn_lab.train', *{['train'] if command == 'cli' else []!r},"
            f" 'hydra.run.dir={tmp_path / attempt}', 'steps=3', 'analyze=false']\n"
            f"{entry}\n"
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            env=cli_env({"RNN_LAB_CACHE": str(cache)}),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert out.strip().splitlines()[-1] == "false", (attempt, out, err)
        assert not _left_in_session(proc.pid), f"{attempt}: a process of the run outlived it"
    (kept,) = cache.glob("init-*.npz")
    want = draw_arrays(**_args(DRAWS[0]))
    with np.load(kept) as stored:
        assert {n: stored[n].tobytes() for n in stored.files} == {
            n: a.tobytes() for n, a in want.items()
        }


def test_a_refused_run_leaves_no_drawer(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnn_lab.train", f"hydra.run.dir={tmp_path / 'r'}", "lr=-1"],
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "lr" in err, err
    assert not _left_in_session(proc.pid)


def test_the_drawer_dies_with_its_parent():
    """SIGKILL to the run (no atexit, no cleanup): its drawer ends too."""
    code = (
        "import os, sys, time\n"
        "from rnn_lab.run import init_drawer\n"
        "init_drawer.start([])\n"
        "print(init_drawer._drawer.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=cli_env(), stdout=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    drawer_pid = int(proc.stdout.readline())
    os.kill(drawer_pid, 0)  # it runs
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not _left_in_session(proc.pid), "the drawer outlived its killed parent"


def test_a_drawer_that_died_leaves_the_draw_to_the_run(tmp_path):
    """The drawer killed before it is asked: the run draws in its own process, the same bits."""
    code = (
        "import json, os, signal, sys\n"
        "from rnn_lab.run import init_drawer, init_cache\n"
        "from rnn_lab.core.inits import draw_arrays\n"
        "init_drawer.start([])\n"
        "os.kill(init_drawer._drawer.pid, signal.SIGKILL)\n"
        f"args = {_args(DRAWS[1])!r}\n"
        "arrays = init_cache.cached_draws(args, lambda: draw_arrays(**args), folder=__import__("
        f"'pathlib').Path({str(tmp_path)!r}))\n"
        "print(json.dumps({n: a.tobytes().hex() for n, a in arrays.items()}))\n"
        "print(init_drawer.running())\n"
    )
    done = _python(code, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    drawn, running = done.stdout.strip().splitlines()
    want = draw_arrays(**_args(DRAWS[1]))
    assert {n: bytes.fromhex(h) for n, h in json.loads(drawn).items()} == {
        n: a.tobytes() for n, a in want.items()
    }
    assert running == "False"


@pytest.mark.parametrize(
    "argv",
    [["-m", "seed=1,2"], ["--multirun"], ["hydra.mode=MULTIRUN"], ["--cfg", "job"], ["--help"]],
)
def test_no_drawer_where_no_run_of_this_process_draws(argv, monkeypatch):
    """A sweep's jobs draw in their own processes; --help, --cfg and the like draw nothing."""
    monkeypatch.setattr(init_drawer.os, "fork", lambda: pytest.fail("forked"))
    init_drawer.start(argv)
    assert not init_drawer.running()
