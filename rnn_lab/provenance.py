"""Where a generated page's numbers come from: the command, date, commit and machine.

Every measured figure in docs/ is written by a command (a benchmark, `rnn-lab reproduce`); the
page opens with :func:`provenance_lines` so a reader knows what made it and on which CPU, and
:func:`write_generated_page` writes it atomically.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

from rnn_lab.run.rundir import atomic_write_text


def cpu_model() -> str:
    """The CPU's model name and whether it has AVX-512 (NumPy and OpenBLAS pick other kernels
    with it), from /proc/cpuinfo; else what platform knows."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    info = {k.strip(): v.strip() for k, _, v in (ln.partition(":") for ln in lines if ":" in ln)}
    avx512 = "with" if "avx512f" in info.get("flags", "").split() else "without"
    return f"{info.get('model name', platform.machine())} ({avx512} AVX-512)"


def load_average() -> str:
    """The 1/5/15-minute load: a timing taken on a busy machine says so."""
    if not hasattr(os, "getloadavg"):
        return "unknown"
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min)"


def kernels() -> str:
    """Which SIMD kernels NumPy and OpenBLAS run here: they decide a result's last bits."""
    import numpy as np

    parts = [f"numpy {np.__version__}"]
    try:
        from numpy.lib.introspect import opt_func_info

        tanh = opt_func_info("tanh", "float64")["tanh"]["dd"]["current"]
        parts.append(f"float64 tanh {tanh}")
    except (ImportError, KeyError, TypeError):
        pass
    try:
        from threadpoolctl import threadpool_info

        blas = [f"{i['internal_api']} {i.get('architecture', '?')}" for i in threadpool_info()]
        parts.extend(b for b in blas if b.startswith(("openblas", "mkl", "blis")))
    except ImportError:
        pass
    return ", ".join(parts)


def machine_line() -> str:
    """CPU model, logical cores, kernels: the machine a measured number belongs to."""
    return f"{cpu_model()}, {os.cpu_count()} logical CPUs; {kernels()}"


def git_commit(cwd: str | Path | None = None) -> str:
    """The checkout's commit (with `+changes` when the tree is dirty), or `unknown`."""
    cwd = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=cwd, capture_output=True, text=True
        )
        if head.returncode != 0:
            return "unknown (not a git checkout)"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return head.stdout.strip() + (" +uncommitted changes" if dirty else "")
    except OSError:
        return "unknown (no git)"


def provenance_lines(command: str | None = None) -> list[str]:
    """The Markdown lines that open a generated page."""
    command = command or " ".join(shlex.quote(a) for a in sys.argv)
    now = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return [
        f"Written by `{command}` (do not edit by hand: run it again).",
        "",
        f"- date: {now}",
        f"- commit: {git_commit()}",
        f"- machine: {machine_line()}; load average when written {load_average()}",
    ]


def docs_page(name: str) -> Path:
    """Where a generated page goes: docs/NAME in a checkout, ./NAME for an installed package."""
    from rnn_lab import PROJECT_ROOT

    return PROJECT_ROOT / "docs" / name if PROJECT_ROOT else Path(name)


def page_header(title: str, command: str | None = None) -> str:
    """A generated page's title and provenance block (Markdown, ending in a blank line)."""
    return "\n".join([f"# {title}", "", *provenance_lines(command), ""]) + "\n"


def write_page(path: str | Path, text: str) -> Path:
    """Write a generated page atomically (its folder made if needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text.rstrip() + "\n")
    return path


def write_generated_page(path: str | Path, title: str, body: list[str], command=None) -> Path:
    """Write docs page `path`: the title, the provenance block, then `body` (Markdown lines)."""
    return write_page(path, page_header(title, command) + "\n".join(body))
