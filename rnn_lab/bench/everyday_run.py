"""The everyday run: ``python -m rnn_lab.train`` with its defaults, the whole process against
its training.

    python benchmarks/bench_everyday_run.py               # writes docs/everyday_run.md
    python benchmarks/bench_everyday_run.py --repeats 2 --out /tmp/everyday.md   # a quick look

Each repeat runs the default command five times, in turn: as shipped (``analysis_workers=2``:
the analysis and the plots on two processes forked before training) and with
``analysis_workers=0`` (all of it in the training process after the last step, as before);
with its initial weights drawn before (rnn_lab.run.init_cache: no torch import) and with a
fresh cache (a first run: torch draws them, imported by the drawer forked at start,
rnn_lab.run.init_drawer, or with ``RNN_LAB_INIT_DRAWER=0`` by the run itself after its
start-up). The last mode is the run as it was before all three. For each process: its wall
time from launch to exit, its training time (summary.json's ``wall_time_s``: the training
loop), their ratio, and the time from the run's ``done:`` line to the exit (the analysis, the
plots and the interpreter's exit). The 1-minute load average is read before each run: the
ratio depends on whether a second core is free.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rnn_lab import PROJECT_ROOT
from rnn_lab.provenance import docs_page, write_generated_page
from rnn_lab.run.init_drawer import DISABLE_VAR
from rnn_lab.run.rundir import SUMMARY_FILE, read_json

TARGET_RATIO = 1.4  # issue 21: the whole process <= 1.4 x its training wall time
SHIPPED, SHIPPED_FIRST, NO_DRAWER, IN_PROCESS, BEFORE = (
    "analysis_workers=2 (default), weights drawn before",
    "analysis_workers=2 (default), first run (the drawer draws)",
    "analysis_workers=2 (default), first run, RNN_LAB_INIT_DRAWER=0",
    "analysis_workers=0, weights drawn before",
    "analysis_workers=0, first run, RNN_LAB_INIT_DRAWER=0: as before",
)
MODES = {  # name -> (the overrides of the default command, a fresh weights cache, environment)
    SHIPPED: ([], False, {}),
    SHIPPED_FIRST: ([], True, {}),
    NO_DRAWER: ([], True, {DISABLE_VAR: "0"}),
    IN_PROCESS: (["analysis_workers=0"], False, {}),
    BEFORE: (["analysis_workers=0"], True, {DISABLE_VAR: "0"}),
}
_DONE_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]\[rnn_lab\]\[\w+\] - done: ")


def run_once(run_dir: Path, overrides: list[str], env: dict) -> dict:
    """One default run in a fresh directory: its wall time, training time and tail."""
    cmd = [sys.executable, "-m", "rnn_lab.train", *overrides, f"hydra.run.dir={run_dir}"]
    load = os.getloadavg()[0]
    started, t0 = time.time(), time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = read_json(run_dir / SUMMARY_FILE)
    done = next(m for line in proc.stdout.splitlines() if (m := _DONE_LINE.match(line)))
    done_at = datetime.datetime.strptime(done.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return {
        "wall_s": wall,
        "train_s": summary["wall_time_s"],
        "ratio": wall / summary["wall_time_s"],
        "outside_s": wall - summary["wall_time_s"],
        "tail_s": started + wall - done_at,  # analysis, plots, exit
        "load": load,
        "status": summary["status"],
        "plots": len(list(run_dir.glob("*.png"))),
    }


def _spread(values: list[float], fmt: str) -> str:
    """median (lowest-highest)"""
    med = fmt.format(statistics.median(values))
    return f"{med} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def render(runs: dict[str, list[dict]], cpus: int, steps: int | None = None) -> list[str]:
    """The page's body: one row per mode, the verdict on the target."""
    run = "with its defaults (30,000 steps" if steps is None else f"steps={steps} (not the default"
    loads = [r["load"] for rs in runs.values() for r in rs]
    n = len(next(iter(runs.values())))
    lines = [
        f"The command: `python -m rnn_lab.train` {run} of the Elman corpus, then the "
        "analysis and nine plots), each mode run "
        f"{n} times in turn with the others, every run in a fresh directory. "
        "`analysis_workers=2`: the analysis and the plots on two processes forked before "
        "training; `=0`: in the training process after the last step. Weights drawn before: "
        "the initial weights read from the cache (rnn_lab.run.init_cache), torch not imported; "
        "first run: a fresh cache, torch draws them, imported by the drawer process the run "
        "forks at its start (rnn_lab.run.init_drawer) while the run starts up, or with "
        "`RNN_LAB_INIT_DRAWER=0` by the run itself once its config is composed. Wall: the "
        "process from launch "
        "to exit; training: its training loop (summary.json `wall_time_s`); outside training: "
        "the difference (start-up, the tail); after `done:`: from the run's last training line "
        "to the exit (analysis, plots, exit). Median (lowest-highest):",
        "",
        "| mode | wall / training | wall (s) | training (s) | outside training (s) | "
        "after `done:` (s) | 1-min load |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for mode, rs in runs.items():
        cells = [
            _spread([r["ratio"] for r in rs], "{:.2f}"),
            _spread([r["wall_s"] for r in rs], "{:.1f}"),
            _spread([r["train_s"] for r in rs], "{:.1f}"),
            _spread([r["outside_s"] for r in rs], "{:.1f}"),
            _spread([r["tail_s"] for r in rs], "{:.1f}"),
            _spread([r["load"] for r in rs], "{:.1f}"),
        ]
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    med = {mode: {k: statistics.median(r[k] for r in rs) for k in rs[0] if k != "status"}
           for mode, rs in runs.items()}  # fmt: skip
    shipped, shipped_first, no_drawer = med[SHIPPED], med[SHIPPED_FIRST], med[NO_DRAWER]
    in_process, before = med[IN_PROCESS], med[BEFORE]
    verdict = [f"**{'met' if m['ratio'] <= TARGET_RATIO else 'NOT met'}** ({m['ratio']:.2f}x "
               f"{when})" for m, when in ((shipped, "weights drawn before"),
                                          (shipped_first, "a first run"))]  # fmt: skip
    lines += [
        "",
        f"Target (issue 21): the whole process <= {TARGET_RATIO}x its training time at the "
        f"default settings: {verdict[0]}; {verdict[1]}; on this machine ({cpus} CPUs, "
        f"1-minute load {min(loads):.1f}-{max(loads):.1f} before the runs, this benchmark's own "
        "runs included).",
        "",
        f"Wall time, medians: as shipped {shipped['wall_s']:.1f} s with weights drawn before, "
        f"{shipped_first['wall_s']:.1f} s on a first run ({no_drawer['wall_s']:.1f} s without "
        f"the drawer: its start-up {no_drawer['outside_s'] - no_drawer['tail_s']:.1f} s against "
        f"{shipped_first['outside_s'] - shipped_first['tail_s']:.1f} s); the run as before "
        f"(`analysis_workers=0`, first run) {before['wall_s']:.1f} s. The workers against the "
        f"training process (weights drawn before): after `done:` {shipped['tail_s']:.1f} s vs "
        f"{in_process['tail_s']:.1f} s, training {shipped['train_s']:.1f} s vs "
        f"{in_process['train_s']:.1f} s, wall {shipped['wall_s']:.1f} s vs "
        f"{in_process['wall_s']:.1f} s. The first worker imports and warms up while the run "
        "trains: when no core is free, that CPU time comes out of the training's.",
        "",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_everyday_run", description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs of each mode")
    parser.add_argument("--out", type=Path, default=docs_page("everyday_run.md"))
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary one")
    parser.add_argument(
        "--steps", type=int, default=None, help="steps=N instead of the default (a quick look)"
    )
    args = parser.parse_args(argv)
    command = "python benchmarks/bench_everyday_run.py" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:])
    )
    env = {**os.environ, **({"PYTHONPATH": str(PROJECT_ROOT)} if PROJECT_ROOT else {})}
    runs: dict[str, list[dict]] = {mode: [] for mode in MODES}
    steps = [f"steps={args.steps}"] if args.steps else []
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="everyday_run.") as tmp:
        work = Path(tmp)
        warm = {**env, "RNN_LAB_CACHE": str(work / "cache")}
        run_once(work / "fill_cache", ["steps=1", "analyze=false"], warm)  # untimed
        for k in range(args.repeats):
            for i, (mode, (overrides, fresh, extra)) in enumerate(MODES.items()):
                cache = {**env, "RNN_LAB_CACHE": str(work / f"cache{k}_{i}")} if fresh else warm
                got = run_once(work / f"run{k}_{i}", [*steps, *overrides], {**cache, **extra})
                runs[mode].append(got)
                print(f"{mode}: " + ", ".join(f"{key}={_short(v)}" for key, v in got.items()))
    body = render(runs, os.cpu_count() or 1, args.steps)
    print("\n".join(body))
    path = write_generated_page(args.out, "The everyday run", body, command)
    print(f"wrote {path}")
    return 0


def _short(value) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


if __name__ == "__main__":
    raise SystemExit(main())
