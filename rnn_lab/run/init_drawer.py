"""A process that imports torch while a single run starts, in case its initial weights must be
drawn (rnn_lab.run.init_cache has not kept them yet).

Importing torch takes ~0.7 s (measured: docs/everyday_run.md, "first run"), more than the
whole start-up of a run whose weights were kept (Hydra's import and compose, the checks, the
plan: ~0.5 s); one after the other they were the everyday run's largest cost outside training.
``python -m rnn_lab.train`` and ``rnn-lab train`` therefore fork this drawer before they import
Hydra: it imports torch on another core while the run composes its config, then draws what it
is asked for (rnn_lab.core.inits.draw_arrays, the very function the run would call: the same
code, torch, CPU and thread settings, so the same bits; tests/test_init_drawer.py compares).

The run asks at most once. Once its initial weights exist (read back, drawn here, or none
needed: a resumed run, init=file) the drawer is killed by its pid. It never outlives the run:
it is killed at exit, and it ends by itself when its pipe closes or its parent dies. A sweep
(``-m``), ``--help``, ``--cfg`` and the like start none, nor does a machine that cannot fork or
has one usable CPU (the drawer would take the run's own core), nor ``RNN_LAB_INIT_DRAWER=0``
in the environment (the benchmark's "no drawer" mode; a machine short of memory: the drawer
holds torch, ~300 MB, for the run's first second). A drawer that died or failed
costs nothing but the time: the run draws in its own process, as without one.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys

from rnn_lab import usable_cpus

# Hydra's flags after which no run of ours draws weights (or a sweep's jobs do, elsewhere).
_NO_DRAW_FLAGS = frozenset({
    "-m", "--multirun", "-h", "--help", "--hydra-help", "-c", "--cfg", "-i", "--info",
    "-sc", "--shell-completion",
})  # fmt: skip

DISABLE_VAR = "RNN_LAB_INIT_DRAWER"  # =0: no drawer (the run imports torch itself if it draws)
_drawer: _Drawer | None = None


def start(argv: list[str]) -> None:
    """Fork the drawer for the command line ``argv`` of a single run (else do nothing)."""
    global _drawer
    if _drawer is not None or not _worth_it(argv):
        return
    from multiprocessing.connection import Pipe

    mine, theirs = Pipe()
    parent = os.getpid()
    sys.stdout.flush()  # a line still in a buffer would be written again by the child
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the drawer
        mine.close()
        try:
            _serve(theirs, parent)
        finally:
            os._exit(0)
    theirs.close()
    _drawer = _Drawer(pid, mine, owner=parent)
    atexit.register(stop)


def draw(args: dict) -> dict | None:
    """The raw arrays rnn_lab.core.inits.draw_arrays(**args) returns, drawn by the drawer;
    None when there is none (or it failed): then draw them in this process."""
    global _drawer
    if not running():
        return None
    drawer, _drawer = _drawer, None  # asked once: whatever happens, it is done after this
    try:
        drawer.conn.send(args)
        ok, value = drawer.conn.recv()
    except (EOFError, OSError):
        ok, value = False, None
    finally:
        drawer.kill()
    return value if ok else None


def stop() -> None:
    """Kill the drawer unless it was asked: this run's initial weights need no drawing."""
    global _drawer
    if running():
        drawer, _drawer = _drawer, None
        drawer.kill()


def running() -> bool:
    """A drawer of this process waits (a process forked since, e.g. an analysis worker, has
    none: the drawer is not its child)."""
    return _drawer is not None and _drawer.owner == os.getpid()


class _Drawer:
    def __init__(self, pid: int, conn, owner: int):
        self.pid, self.conn, self.owner = pid, conn, owner

    def kill(self) -> None:
        self.conn.close()
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def _worth_it(argv: list[str]) -> bool:
    if os.environ.get(DISABLE_VAR, "1") == "0":
        return False
    if any(arg in _NO_DRAW_FLAGS for arg in argv):
        return False
    if any(arg.replace(" ", "").upper() == "HYDRA.MODE=MULTIRUN" for arg in argv):
        return False  # a sweep without -m
    return hasattr(os, "fork") and usable_cpus() >= 2


def _serve(conn, parent: int) -> None:
    """In the drawer: import torch, then draw the one request (if any) and end."""
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the run's; it kills this
    try:
        import torch  # noqa: F401  (the point of this process: imported before it is asked)

        from rnn_lab.core.inits import draw_arrays
    except Exception:
        return  # the run finds the pipe closed and draws itself (and reports the error)
    try:
        args = conn.recv()
    except (EOFError, OSError):
        return  # the run needed no drawing
    try:
        reply = (True, draw_arrays(**args))
    except Exception as e:  # the run draws again in its own process and meets the error there
        reply = (False, repr(e))
    try:
        conn.send(reply)
    except OSError:
        pass


def _die_with_parent(parent: int) -> None:
    """Linux: SIGKILL when the run's process ends, however it ends (prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass  # elsewhere: the pipe's EOF ends it
    if os.getppid() != parent:  # the parent ended before prctl took effect
        os._exit(0)
