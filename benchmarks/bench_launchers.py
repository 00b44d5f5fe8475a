"""Wall time of a 12-run study with Hydra's basic launcher against the joblib preset.

    python benchmarks/bench_launchers.py [--steps 20000] [--keep]

Runs the demo study with 2 seeds (init x activation x 2 seeds = 12 jobs, analysis included)
twice through the real CLI, once per launcher, in one invocation, prints both wall times and
their ratio (target: joblib <= 0.6x basic on 2 cores), and checks that every job's
history.csv is byte-identical across them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The demo study (init x activation) with 2 seeds: 12 runs, as `rnn-lab study demo` runs them.
GRID = ["experiment=demo", "seed=1,2"]


def run_sweep(sweep_dir: Path, launcher: str, steps: int) -> float:
    cmd = [
        sys.executable,
        "-m",
        "rnn_lab.train",
        "-m",
        *GRID,
        f"steps={steps}",
        "log_interval=0",
        f"launcher={launcher}",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{launcher} sweep failed:\n{proc.stderr[-3000:]}")
    return wall


def histories(sweep_dir: Path) -> dict[str, bytes]:
    return {
        str(p.parent.relative_to(sweep_dir)): p.read_bytes() for p in sweep_dir.rglob("history.csv")
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, default=20000, help="steps per run (20,000: the shipped studies)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the sweep folders")
    args = parser.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="bench_launchers_"))
    try:
        print(
            f"12-run study (experiment=demo: init x activation x 2 seeds, {args.steps} steps "
            f"a run), {os.cpu_count()} cores"
        )
        walls = {}
        for launcher in ("basic", "joblib"):
            walls[launcher] = run_sweep(base / launcher, launcher, args.steps)
            print(f"  {launcher:7s} launcher: {walls[launcher]:7.1f} s")
        ratio = walls["joblib"] / walls["basic"]
        print(f"  joblib / basic = {ratio:.2f}  (target <= 0.60)")
        a, b = histories(base / "basic"), histories(base / "joblib")
        same = a.keys() == b.keys() and all(a[k] == b[k] for k in a)
        print(f"  results identical across launchers: {same} ({len(a)} jobs)")
        return 0 if same else 1
    finally:
        if args.keep:
            print(f"  sweeps kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
