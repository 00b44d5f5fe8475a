"""Wall times of a study on real clusters on this machine; writes docs/clusters.md.

    python benchmarks/bench_clusters.py [--seeds 1,2,3] [--repeat 2] [--out docs/clusters.md]

As root (scripts/slurm-local installs and starts SLURM). In one invocation:

1. the demo study as shipped (3 inits x 2 activations x the seeds, 3,000 steps a run, analysis
   and report included) through launcher=joblib: the baseline (each study sweep --repeat
   times, into fresh folders);
2. a one-node SLURM (`scripts/slurm-local start`, timed; SLURM's own 120 s requeue hold): the
   same study through launcher=submitit_slurm; then one 20,000-step job preempted half-way
   (`scancel --signal=USR2`): its wall time, and how long SLURM held it before it resumed;
3. a two-node Ray cluster (`ray start --head`, then a node joining it, one CPU each, timed):
   the same study through launcher=ray with the cluster's address; then again into a fresh
   folder with the second node killed (SIGKILL to all its processes) once two jobs have a
   checkpoint.

Each cluster sweep's results.csv is compared with joblib's (every column but those that say how
a job ran): the page says whether they are equal. The load average is printed around each
sweep: the machine may be shared, and the figures move with it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import pandas as pd

from rnn_lab.provenance import page_header

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the clusters the tests use (tests/clusters.py)

from clusters import signal_session, start_ray, start_slurm, stop_ray, stop_slurm  # noqa: E402

HOW_IT_RAN = {"launcher", "resume", "checkpoint_interval", "wall_time_s", "steps_per_s"}
PREEMPT_STEPS = 20000


def load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def study(sweep: Path, seeds: str, *extra: str) -> list[str]:
    rnn_lab = Path(sys.executable).with_name("rnn-lab")
    return [str(rnn_lab), "study", "demo", f"seed={seeds}", f"hydra.sweep.dir={sweep}", *extra]


def timed(cmd: list[str], env: dict | None = None, during=None) -> dict:
    """Run a sweep; its wall time and the load average around it. during(proc): called while
    it runs (to preempt a job, to kill a node)."""
    print(f"  $ {' '.join(cmd[1:])}", flush=True)
    before, t0 = load(), time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    if during is not None:
        during()
    out, _ = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{out[-3000:]}")
    print(f"    {wall:6.1f} s, load {before} -> {load()}", flush=True)
    return {"wall": wall, "load": f"{before} -> {load()}"}


def repeated(name: str, tmp: Path, args, extra: list[str], env: dict | None) -> dict:
    """The study args.repeat times, each into a fresh folder: every wall time, the loads,
    and whether each sweep's numbers are the reference's (the first sweep is the reference
    when none is given)."""
    walls, loads, same = [], [], []
    for i in range(args.repeat):
        sweep = tmp / f"{name}-{i}"
        run = timed(study(sweep, args.seeds, *extra), env)
        walls.append(run["wall"])
        loads.append(run["load"])
        reference = args.reference or sweep
        same.append(same_numbers(sweep, reference))
        args.reference = reference
    return {
        "walls": walls,
        "wall": sum(walls) / len(walls),
        "load": "; ".join(loads),
        "same": all(same),
    }


def same_numbers(sweep: Path, reference: Path) -> bool:
    def table(path: Path) -> pd.DataFrame:
        df = pd.read_csv(path / "results.csv")
        df = df.drop(columns=[c for c in df.columns if c in HOW_IT_RAN])
        return df.sort_values("path").reset_index(drop=True)

    try:
        pd.testing.assert_frame_equal(table(sweep), table(reference), check_exact=True)
    except AssertionError:
        return False
    return True


def wait_for(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            sys.exit("timed out")
        time.sleep(0.2)


def log_time(log: str, pattern: str) -> datetime:
    found = re.search(r"^\[([\d-]+ [\d:,]+)\]\[[^\]]+\]\[\w+\] - .*" + pattern, log, re.M)
    if found is None:
        sys.exit(f"no line matching {pattern!r} in the job's train.log")
    return datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f")


def preempted_job(slurm, tmp: Path) -> dict:
    """One 20,000-step job through SLURM, SIGUSR2 half-way; its wall and SLURM's hold."""
    sweep = tmp / "preempted"
    cmd = study(sweep, "1", "launcher=submitit_slurm", f"steps={PREEMPT_STEPS}", "init=orthogonal")
    cmd += ["activation=tanh", "checkpoint_interval=0"]

    def preempt() -> None:
        wait_for(lambda: any(sweep.glob("*/seed=1/summary.json")), 120)
        time.sleep(2.0)
        subprocess.run(["scancel", "--signal=USR2", "--me"], env=slurm.env, check=True)

    out = timed(cmd, slurm.env, preempt)
    (log_file,) = sweep.glob("*/seed=1/train.log")
    log = log_file.read_text()
    stopped = log_time(log, r"stopped by SIGUSR2 at step (\d+)")
    resumed = log_time(log, r"resuming from the checkpoint at step")
    step = re.search(r"stopped by SIGUSR2 at step (\d+)", log).group(1)
    return {**out, "step": int(step), "held": (resumed - stopped).total_seconds()}


def slurm_part(args, tmp: Path) -> dict:
    t0 = time.perf_counter()
    slurm = start_slurm(tmp / "slurm", requeue_delay_s=120)
    up = time.perf_counter() - t0
    try:
        run = repeated("slurm", tmp, args, ["launcher=submitit_slurm"], slurm.env)
        alone = timed(
            study(tmp / "alone", "1", "launcher=submitit_slurm", f"steps={PREEMPT_STEPS}")
            + ["init=orthogonal", "activation=tanh"],
            slurm.env,
        )
        preempted = preempted_job(slurm, tmp)
    finally:
        stop_slurm(slurm)
    return {"up": up, "study": run, "alone": alone, "preempted": preempted}


def ray_part(args) -> dict:
    base = Path(tempfile.mkdtemp(prefix="rl", dir="/tmp"))  # short: Ray's socket paths
    try:
        t0 = time.perf_counter()
        cluster = start_ray(base / "c")
        up = time.perf_counter() - t0
        address = f"hydra.launcher.ray.init.address={cluster.address}"
        try:
            run = repeated("s", base, args, ["launcher=ray", address], cluster.env)
            lossy = base / "lost"

            def kill_node() -> None:
                wait_for(lambda: len(list(lossy.glob("*/seed=*/checkpoint.npz"))) >= 2, 300)
                signal_session(cluster.worker.session, signal.SIGKILL)

            cmd = study(lossy, args.seeds, "launcher=ray", address)
            lost = timed(cmd, cluster.env, kill_node)
            lost["same"] = same_numbers(lossy, args.reference)
            lost["retried"] = sum(
                "start 2 of this job" in p.read_text() for p in lossy.glob("*/seed=*/train.log")
            )
        finally:
            left = stop_ray(cluster)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return {"up": up, "study": run, "lost": lost, "left": left}


def page(args, base: dict, slurm: dict, ray: dict) -> str:
    seeds = len(args.seeds.split(","))
    jobs = 6 * seeds
    b = base["wall"]

    def row(what: str, run: dict, against: float, label: str) -> str:
        same = {True: "yes", False: "**no**"}[run["same"]]
        walls = ", ".join(f"{w:.1f}" for w in run.get("walls", [run["wall"]]))
        ratio = f"{run['wall'] / against:.2f}x {label}"
        return f"| {what} | {walls} s | {ratio} | {same} | {run['load']} |"

    p = slurm["preempted"]
    command = f"python benchmarks/bench_clusters.py --seeds {args.seeds} --repeat {args.repeat}"
    lines = [
        page_header("Studies on clusters: measured wall times", command),
        "The machine may be shared with other work: the load average (1, 5, 15 min) before "
        "and after each sweep is given; figures move with it.",
        "",
        f"The demo study as shipped: 3 inits x 2 activations x {seeds} seeds = {jobs} runs of "
        "3,000 steps, analysis and report included. Both clusters run on this one machine "
        "(2 cores): they show what the launchers cost and survive, not a speed-up.",
        "",
        f"Each study sweep ran {args.repeat} times, each into a fresh folder (the wall times "
        "in the order they ran; the ratio is of the means).",
        "",
        "| sweep | wall time | against | same results.csv numbers as joblib | load |",
        "| --- | ---: | --- | --- | --- |",
        row("launcher=joblib (2 workers)", base, b, "(baseline)"),
        row("launcher=submitit_slurm, one-node SLURM (2 CPUs)", slurm["study"], b, "joblib"),
        row("launcher=ray, two-node Ray (1 CPU each)", ray["study"], b, "joblib"),
        row(
            "launcher=ray, second node killed after two checkpoints",
            ray["lost"],
            ray["study"]["wall"],
            "the undisturbed Ray sweep",
        ),
        "",
        f"Node killed: {ray['lost']['retried']} job(s) ran again on the head node, resuming "
        "from their checkpoint; processes left after stopping the cluster: "
        f"{len(ray['left'])}.",
        "",
        f"Starting a cluster: `scripts/slurm-local start` (packages already installed) "
        f"{slurm['up']:.1f} s; `ray start --head` and a second node {ray['up']:.1f} s.",
        "",
        f"Preemption: one {PREEMPT_STEPS:,}-step job through SLURM took "
        f"{slurm['alone']['wall']:.1f} s undisturbed (load {slurm['alone']['load']}); sent "
        f"SIGUSR2 at step {p['step']:,}, it "
        f"wrote its checkpoint, was requeued, held by SLURM for {p['held']:.0f} s (its default "
        "credential lifetime, 120 s, then the next scheduling pass) and resumed: "
        f"{p['wall']:.1f} s in all (load {p['load']}).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="1,2,3", help="the study's seeds (default 1,2,3)")
    parser.add_argument("--repeat", type=int, default=2, help="times each study sweep runs")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "clusters.md")
    args = parser.parse_args(argv)
    args.reference = None  # the first joblib sweep, once it ran
    if os.geteuid() != 0:
        sys.exit("run as root: scripts/slurm-local installs and starts SLURM's daemons")
    tmp = Path(tempfile.mkdtemp(prefix="bench_clusters_"))
    try:
        print("joblib (baseline):", flush=True)
        base = repeated("joblib", tmp, args, ["launcher=joblib"], None)
        print("SLURM:", flush=True)
        slurm = slurm_part(args, tmp)
        print("Ray:", flush=True)
        ray = ray_part(args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    from rnn_lab.run.rundir import atomic_write_text

    atomic_write_text(args.out, page(args, base, slurm, ray))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
