"""Wall time of a study under two launchers, through the real CLI, in one invocation.

    python benchmarks/bench_launchers.py [--steps 20000] [--keep]
    python benchmarks/bench_launchers.py --stacked [--study init_activation] [--steps 20000]
        [--seeds 3] [--more-seeds 5] [--skip-same-seeds]

Default mode: runs the demo study with 2 seeds (init x activation x 2 seeds = 12 jobs,
analysis included) twice through the real CLI, once per launcher (basic, joblib), prints both
wall times and their ratio (target: joblib <= 0.6x basic on 2 cores), and checks that every
job's history.csv is byte-identical across them.

``--stacked`` (issue 11): runs `rnn-lab study STUDY` (init_activation by default: 4 inits x 3
activations x --seeds seeds, analysis and report included) with launcher=joblib, then
launcher=stacked, each into its own fresh sweep folder with the same steps; prints both wall
times and their ratio (target: stacked <= 0.35x joblib on 2 cores), the load average before and
after each (the machine may be shared), where each sweep's time went (from the jobs' train.log
and results.csv), and checks that the two results.csv tables agree (every numeric column but
the launcher-dependent ones within 1e-8 relative, NaN == NaN; every other column equal) and
that every run's checkpoint.npz arrays are byte-identical. Then times launcher=stacked with
--more-seeds seeds (0: skip) against joblib's --seeds seeds (target: no slower) and checks its
runs shared with the joblib sweep the same way. ``--skip-same-seeds`` leaves out the stacked
sweep with --seeds seeds (the studies ship with launcher=stacked and 5 seeds: the question is
then only whether 5 stacked seeds fit in the wall time of 3 joblib ones).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The demo study (init x activation) with 2 seeds: 12 runs, as `rnn-lab study demo` runs them.
GRID = ["study=demo", "seed=1,2"]


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


# --------------------------------------------------------------------------------------
# --stacked: rnn-lab study init_activation, launcher=joblib against launcher=stacked
# --------------------------------------------------------------------------------------

STUDY = "init_activation"  # the default --study: 4 inits x 3 activations x seeds
STACKED_TARGET = 0.35  # stacked / joblib, same grid (issue 11)
RTOL = 1e-8
# results.csv columns that say which launcher ran or how fast: never compared.
LAUNCHER_DEPENDENT = frozenset({"launcher", "wall_time_s", "steps_per_s"})
# checkpoint.npz entries that are timings, not results: never compared.
CHECKPOINT_TIMINGS = frozenset({"wall_time_s"})
_LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


def rnn_lab_cli() -> list[str]:
    """The installed `rnn-lab` script next to this interpreter (else the same entry point)."""
    script = Path(sys.executable).with_name("rnn-lab")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from rnn_lab.app.cli import main; sys.exit(main())"]


def seeds_override(n: int) -> str:
    return "seed=" + ",".join(str(i) for i in range(1, n + 1))


def study_arms(study: str) -> int:
    """Arms of a study's grid: the product of the value counts of its swept keys but seed."""
    import yaml

    path = ROOT / "experiments" / f"{study}.yaml"
    if not path.exists():
        sys.exit(f"--study: no study {study!r} (no {path.relative_to(ROOT)})")
    params = yaml.safe_load(path.read_text())["hydra"]["sweeper"]["params"]
    return math.prod(len(str(v).split(",")) for k, v in params.items() if k != "seed")


def study_command(study: str, sweep_dir: Path, launcher: str, steps: int, seeds: int) -> list[str]:
    return [
        *rnn_lab_cli(),
        "study",
        study,
        f"launcher={launcher}",
        f"steps={steps}",
        seeds_override(seeds),
        f"hydra.sweep.dir={sweep_dir}",
    ]


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_study(study: str, sweep_dir: Path, launcher: str, steps: int, seeds: int) -> dict:
    """One sweep through the CLI: its wall time, the load average around it, its log."""
    cmd = study_command(study, sweep_dir, launcher, steps, seeds)
    print(f"  $ {' '.join(cmd)}", flush=True)
    load_before = load()
    started = datetime.now()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    ended = datetime.now()
    load_after = load()
    if proc.returncode != 0:
        sys.exit(f"{launcher} study failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    units = next(
        (
            re.sub(r"^(\[[^\]]*\])+\s*", "", ln)  # without the log line's [time][HYDRA]
            for ln in (proc.stdout + proc.stderr).splitlines()
            if "Stacked launcher:" in ln
        ),
        "",
    )
    print(
        f"    {wall:7.1f} s   load average (1, 5, 15 min) before: {load_before}, "
        f"after: {load_after}",
        flush=True,
    )
    return {
        "launcher": launcher,
        "seeds": seeds,
        "dir": sweep_dir,
        "wall": wall,
        "started": started,
        "ended": ended,
        "load_before": load_before,
        "load_after": load_after,
        "units": units,
    }


def _log_times(path: Path) -> dict[str, datetime]:
    """The times of a job's train.log milestones: first line, training start (the corpus
    line), end of training (the done: line), end of the analysis."""
    marks: dict[str, datetime] = {}
    for line in path.read_text(errors="replace").splitlines():
        m = _LOG_TIME.match(line)
        if not m:
            continue
        t = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
        text = line[m.end() :].split(" - ", 1)[-1]
        marks.setdefault("first", t)
        if text.startswith("corpus ") or text.startswith("data "):
            marks.setdefault("train", t)
        elif text.startswith("done:"):
            marks["done"] = t
        elif text.startswith("analysis of "):
            marks["analysis"] = t
        marks["last"] = t
    return marks


def time_breakdown(run: dict) -> dict[str, float]:
    """Where a sweep's wall time went, from its jobs' train.log times and results.csv.

    A "unit" is what one worker ran at once: a stack (its arms share one wall_time_s) or a
    lone job. Per unit: setup (first line -> training starts), training (-> last done: line),
    finish (-> last analysis line); summed over units these are worker-seconds."""
    import pandas as pd

    table = pd.read_csv(run["dir"] / "results.csv")
    units: dict[float, list[dict[str, datetime]]] = {}
    for rel, wall in zip(table["path"], table["wall_time_s"]):
        log_file = run["dir"] / rel / "train.log"
        if log_file.exists():
            units.setdefault(float(wall), []).append(_log_times(log_file))
    marks = [m for unit in units.values() for m in unit]
    if not marks:
        return {}
    first = min(m["first"] for m in marks)
    last = max(m["last"] for m in marks)
    out = {
        "units": len(units),
        "before_jobs": (first - run["started"]).total_seconds(),
        "jobs": (last - first).total_seconds(),
        "after_jobs": (run["ended"] - last).total_seconds(),
        "training_recorded": sum(units),  # each unit's wall_time_s once
        "setup": 0.0,
        "training": 0.0,
        "finish": 0.0,
    }
    for unit in units.values():
        if not all(k in m for m in unit for k in ("train", "done", "analysis")):
            continue
        start = min(m["first"] for m in unit)
        train = min(m["train"] for m in unit)
        done = max(m["done"] for m in unit)
        end = max(m["analysis"] for m in unit)
        out["setup"] += (train - start).total_seconds()
        out["training"] += (done - train).total_seconds()
        out["finish"] += (end - done).total_seconds()
    return out


def _same(a, b) -> bool:
    return (a == b) or (a != a and b != b)  # NaN == NaN


def compare_tables(path_a: Path, path_b: Path) -> dict:
    """results.csv against results.csv, row by row on `path`: the numeric columns (bar the
    launcher-dependent ones) within RTOL relative, NaN == NaN; every other column equal."""
    import numpy as np
    import pandas as pd

    a = pd.read_csv(path_a).set_index("path")
    b = pd.read_csv(path_b).set_index("path")
    rows = a.index.intersection(b.index)
    a, b = a.loc[rows].sort_index(), b.loc[rows].sort_index()
    cols = [c for c in a.columns if c not in LAUNCHER_DEPENDENT]
    only = sorted(set(a.columns.symmetric_difference(b.columns)) - LAUNCHER_DEPENDENT)
    worst, worst_at, identical, text_diff = 0.0, "", not only, []
    for col in cols:
        if col not in b.columns:
            continue
        x, y = a[col], b[col]
        numeric = pd.api.types.is_numeric_dtype(x) or pd.api.types.is_numeric_dtype(y)
        if numeric and not (pd.api.types.is_bool_dtype(x) and pd.api.types.is_bool_dtype(y)):
            xv = pd.to_numeric(x, errors="coerce").to_numpy(dtype=float)
            yv = pd.to_numeric(y, errors="coerce").to_numpy(dtype=float)
            both_nan = np.isnan(xv) & np.isnan(yv)
            equal = (xv == yv) | both_nan
            identical &= bool(equal.all())
            with np.errstate(invalid="ignore", divide="ignore"):
                scale = np.maximum(np.abs(xv), np.abs(yv))
                rel = np.where(equal, 0.0, np.abs(xv - yv) / scale)
            rel = np.where(np.isnan(rel), np.inf, rel)  # a NaN against a number
            i = int(np.argmax(rel))
            if rel[i] > worst:
                worst, worst_at = float(rel[i]), f"{col} of {x.index[i]}"
        else:
            differ = [k for k, u, v in zip(x.index, x, y) if not _same(u, v)]
            if differ:
                identical = False
                text_diff.append(f"{col} ({len(differ)} runs, e.g. {differ[0]})")
    return {
        "runs": len(rows),
        "runs_a": len(pd.read_csv(path_a)),
        "runs_b": len(pd.read_csv(path_b)),
        "columns": len(cols),
        "columns_only_in_one": only,
        "max_rel": worst,
        "max_rel_at": worst_at,
        "text_diff": text_diff,
        "identical": identical,
        "within": worst <= RTOL and not text_diff and not only,
    }


def compare_checkpoints(dir_a: Path, dir_b: Path) -> dict:
    """Every run's checkpoint.npz in both sweeps, array by array, byte for byte (the
    timings excepted): dtype, shape and bytes."""
    import numpy as np

    runs = sorted(
        str(p.parent.relative_to(dir_a))
        for p in dir_a.rglob("checkpoint.npz")
        if (dir_b / p.relative_to(dir_a)).exists()
    )
    differ: dict[str, list[str]] = {}
    for rel in runs:
        with (
            np.load(dir_a / rel / "checkpoint.npz") as za,
            np.load(dir_b / rel / "checkpoint.npz") as zb,
        ):
            keys = sorted((set(za.files) | set(zb.files)) - CHECKPOINT_TIMINGS)
            for k in keys:
                if k not in za.files or k not in zb.files:
                    differ.setdefault(rel, []).append(k)
                    continue
                u, v = za[k], zb[k]
                if u.dtype != v.dtype or u.shape != v.shape or u.tobytes() != v.tobytes():
                    differ.setdefault(rel, []).append(k)
    return {"runs": len(runs), "differ": differ}


def report_comparison(label: str, table: dict, ckpt: dict) -> bool:
    print(f"\n{label}")
    print(
        f"  results.csv: {table['runs']} runs in both (of {table['runs_a']} and "
        f"{table['runs_b']}), {table['columns']} columns compared "
        f"(not {', '.join(sorted(LAUNCHER_DEPENDENT))})"
    )
    if table["columns_only_in_one"]:
        print(f"    columns in only one table: {', '.join(table['columns_only_in_one'])}")
    at = f" ({table['max_rel_at']})" if table["max_rel_at"] else ""
    print(
        f"    largest relative difference of a numeric value: {table['max_rel']:.3g}{at}; "
        f"within {RTOL:g}: {table['max_rel'] <= RTOL}"
    )
    for d in table["text_diff"]:
        print(f"    other column differs: {d}")
    print(f"    bit-identical tables: {table['identical']}")
    bad = ckpt["differ"]
    print(
        f"  checkpoint.npz: {ckpt['runs']} runs' arrays compared byte for byte (not "
        f"{', '.join(sorted(CHECKPOINT_TIMINGS))}): "
        + ("all identical" if not bad else f"{len(bad)} runs differ")
    )
    for rel, keys in list(bad.items())[:5]:
        print(f"    {rel}: {', '.join(keys)}")
    return table["within"] and not bad and table["runs"] > 0 and ckpt["runs"] > 0


def main_stacked(args: argparse.Namespace) -> int:
    seeds, more, study = args.seeds, args.more_seeds, args.study
    arms = study_arms(study)
    base = Path(tempfile.mkdtemp(prefix="bench_stacked_"))
    try:
        print(
            f"rnn-lab study {study} ({arms} arms x {seeds} seeds = {arms * seeds} "
            f"runs, {args.steps} steps a run, analysis and report included), "
            f"{os.cpu_count()} cores, through `{' '.join(rnn_lab_cli())}`"
        )
        print(
            "  NOTE: the machine may be shared: the load average before and after each sweep "
            "says how busy it was (at or above the core count, the wall times are inflated)"
        )
        runs = [run_study(study, base / "joblib", "joblib", args.steps, seeds)]
        if not args.skip_same_seeds:
            runs.append(run_study(study, base / "stacked", "stacked", args.steps, seeds))
        if more:
            runs.append(run_study(study, base / f"stacked_{more}", "stacked", args.steps, more))
        ref = runs[0]["wall"]
        print(
            "\n| launcher | seeds | runs | wall s | vs joblib "
            f"({seeds} seeds) | target | verdict | load before | load after |"
        )
        print("| --- | ---: | ---: | ---: | ---: | --- | --- | --- | --- |")
        for r in runs:
            ratio = r["wall"] / ref
            if r is runs[0]:
                target, verdict = "-", "-"
            elif r["seeds"] == seeds:
                target = f"<= {STACKED_TARGET}"
                verdict = "PASS" if ratio <= STACKED_TARGET else "FAIL"
            else:
                target = "<= 1.00"
                verdict = "PASS" if ratio <= 1.0 else "FAIL"
            print(
                f"| {r['launcher']} | {r['seeds']} | {arms * r['seeds']} | "
                f"{r['wall']:.1f} | {ratio:.2f} | {target} | {verdict} | "
                f"{r['load_before']} | {r['load_after']} |"
            )
        print(
            "\nWhere the time went (s; setup/training/finish are worker-seconds summed over "
            "units: a stack or a lone job; finish = final validation, files and analysis)"
        )
        print(
            "| sweep | wall | Hydra start -> first job | jobs | last job -> exit (report) "
            "| units | setup | training | finish | training (results.csv) |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in runs:
            b = time_breakdown(r)
            if not b:
                continue
            print(
                f"| {r['launcher']} x{r['seeds']} | {r['wall']:.1f} | {b['before_jobs']:.1f} | "
                f"{b['jobs']:.1f} | {b['after_jobs']:.1f} | {b['units']} | {b['setup']:.1f} | "
                f"{b['training']:.1f} | {b['finish']:.1f} | {b['training_recorded']:.1f} |"
            )
        for r in runs[1:]:
            if r["units"]:
                print(f"  {r['launcher']} x{r['seeds']}: {r['units']}")
        ok = True
        for r in runs[1:]:
            table = compare_tables(runs[0]["dir"] / "results.csv", r["dir"] / "results.csv")
            ckpt = compare_checkpoints(runs[0]["dir"], r["dir"])
            ok &= report_comparison(f"joblib x{seeds} against stacked x{r['seeds']}", table, ckpt)
        print(f"\nresults equal across launchers: {ok}")
        return 0 if ok else 1
    finally:
        if args.keep:
            print(f"  sweeps kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps", type=int, default=20000, help="steps per run (20,000: the shipped studies)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the sweep folders")
    parser.add_argument(
        "--stacked",
        action="store_true",
        help="rnn-lab study --study: launcher=joblib against launcher=stacked (issue 11)",
    )
    parser.add_argument("--study", default=STUDY, help=f"--stacked: the study to time ({STUDY})")
    parser.add_argument(
        "--skip-same-seeds",
        action="store_true",
        help="--stacked: time only joblib x --seeds against stacked x --more-seeds",
    )
    parser.add_argument("--seeds", type=int, default=3, help="--stacked: seeds per arm (3)")
    parser.add_argument(
        "--more-seeds",
        type=int,
        default=5,
        help="--stacked: also time launcher=stacked with this many seeds (5; 0 = skip)",
    )
    args = parser.parse_args(argv)
    if args.stacked:
        return main_stacked(args)
    base = Path(tempfile.mkdtemp(prefix="bench_launchers_"))
    try:
        print(
            f"12-run study (study=demo: init x activation x 2 seeds, {args.steps} steps "
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
