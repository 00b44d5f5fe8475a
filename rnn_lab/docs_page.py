"""Pages of docs/ written by a command: each opens with the command that wrote it, the date,
the commit and the machine (CPU model, cores, load), so every figure in it can be traced and
measured again."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

from rnn_lab import PROJECT_ROOT
from rnn_lab.run.rundir import atomic_write_text


def cpu_model() -> str:
    """The CPU's model name and whether it has AVX-512 (/proc/cpuinfo on Linux: NumPy and
    OpenBLAS pick other kernels with it), else what platform knows."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    info = dict(line.split(":", 1) for line in lines if ":" in line)
    info = {k.strip(): v.strip() for k, v in info.items()}
    avx512 = "with" if "avx512f" in info.get("flags", "").split() else "without"
    return f"{info.get('model name', platform.machine())} ({avx512} AVX-512)"


def load_average() -> str:
    if not hasattr(os, "getloadavg"):
        return "unknown"
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min)"


def _git(*args: str) -> str:
    out = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise OSError(out.stderr.strip())
    return out.stdout.strip()


def commit() -> str:
    """The checkout's commit (with "+ uncommitted changes" when the tracked files differ), or
    "unknown" outside a git checkout."""
    try:
        head = _git("rev-parse", "--short=12", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except OSError:
        return "unknown"
    return head + (" + uncommitted changes" if dirty else "")


def page_header(title: str, command: str) -> str:
    """The page's title and provenance block (markdown)."""
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (
        f"# {title}\n\n"
        f"Written by `{command}` (do not edit by hand: run it again).\n\n"
        f"- date: {now}\n"
        f"- commit: {commit()}\n"
        f"- machine: {cpu_model()}, {os.cpu_count()} logical cores, load average when the "
        f"page was written {load_average()}\n"
    )


def write_page(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, text)
    return path
