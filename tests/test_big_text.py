"""A big text trains in bounded memory: a ~300 MB file, a real training subprocess, its peak
resident memory measured (the issue: a 20 MB text needed 2.9 GB, a 2 GB one died)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rnn_lab import PROJECT_ROOT
from rnn_lab.bench.big_text import write_big_text

TEXT_BYTES = 300_000_000
PEAK_RSS_LIMIT_MB = 400


def run_measured(cmd: list[str], log_path, env: dict) -> tuple[int, float]:
    """Run cmd to completion; (exit code, the peak resident memory in MB of its process and of
    any it started, e.g. its initial-weights drawer), as GNU time reports it.

    Not by wait4 on a child of this process: a child started from pytest (vfork or fork, then
    exec) inherits pytest's resident high-water mark, which Linux keeps across exec; in a full
    session that alone read 630 MB. GNU time forks the command from its own small process."""
    if not os.access("/usr/bin/time", os.X_OK):
        pytest.skip("needs GNU time (/usr/bin/time: Debian's package time)")
    peak_file = log_path.with_suffix(".peak_kb")
    with open(log_path, "wb") as log:
        proc = subprocess.run(
            ["/usr/bin/time", "-f", "%M", "-o", str(peak_file), *cmd],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    return proc.returncode, int(peak_file.read_text().split()[-1]) / 1024  # kB


@pytest.mark.slow
def test_300mb_text_trains_in_bounded_memory(tmp_path):
    text = tmp_path / "big.txt"
    write_big_text(text, TEXT_BYTES)
    assert text.stat().st_size > 0.9 * TEXT_BYTES
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "rnn_lab.train",
        "data=text",
        f"data.path={text}",
        "steps=300",
        "val_interval=0",
        "val_max_chars=100000",
        "analyze=false",
        f"hydra.run.dir={run_dir}",
    ]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "RNN_LAB_CACHE": str(tmp_path / "c")}
    code, peak_mb = run_measured(cmd, tmp_path / "train.log", env)
    log = (tmp_path / "train.log").read_text(errors="replace")
    assert code == 0, log[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    print(
        f"\n{text.stat().st_size / 1e6:.0f} MB text: peak RSS {peak_mb:.0f} MB, "
        f"{summary['steps_per_s']:.0f} steps/s, status {summary['status']}"
    )
    assert summary["status"] == "ok"
    assert list((tmp_path / "c").glob("*.npy")), "the encoded text is cached"
    assert peak_mb < PEAK_RSS_LIMIT_MB, f"peak RSS {peak_mb:.0f} MB"
