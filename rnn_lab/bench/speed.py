"""Speed: rnn_lab against a walkthrough-style loop, a min-char-rnn-style loop and torch autograd.

``rnn-lab bench`` (and ``python benchmarks/bench_speed.py``) times, in one process:

  (a) rnn_lab: the trainer's own step, rnn_lab.run.step.train_step (forward, loss, BPTT
      with clipping, SGD momentum on the packed flat parameters, h carried);
  (b) the walkthrough's loop: dicts per time step, (V, 1) one-hot columns, hs/ps dicts, its
      forward/backward/_apply_update, and np.linalg.eigvals of W_hh every step, as in
      seeds/train_walkthrough.txt;
  (c) torch.nn.RNN + nn.Linear with autograd, clip_grad_norm_ and torch.optim.SGD;

at the walkthrough's configuration (Elman corpus, H=64, seq_len=25, B=1, float64, SGD momentum
0.9, lr 0.01, clip 5) and at a large one (H=256, seq_len=50, B=32, float32), and
  (d) the whole trainer (rnn_lab.run.trainer.train) for the walkthrough's 30,000-step run with
      default recording, and again with record=false;
  (e) the gated cells: rnn_lab's GRU and LSTM step (train_step with cell=gru/lstm once the
      trainer has a ``cell`` setting, else rnn_lab.core.gated's forward, loss, backward with
      clipping and SGD on the packed flat buffer, state carried) against torch.nn.GRU /
      nn.LSTM + nn.Linear with autograd, clip_grad_norm_ and torch.optim.SGD, at both
      configurations;
  (f) a min-char-rnn-style loop (Karpathy's min-char-rnn.py: dicts per time step, (V, 1)
      columns, element-wise clipping to [-5, 5], Adagrad lr 0.1; no eigenvalues) from the same
      weights on the same text, against rnn_lab's step and the whole trainer (the walkthrough's run
      with default recording and optim=adagrad lr=0.1 clip_mode=value clip=5), at H=64 and
      H=100 (min-char-rnn's default): the trainer's speed-up and its overhead per step over
      the engine step, the trainer's whole run set against runs of the same duration of the
      engine and of the min-char loop, alternating with it.

``--profile-trainer`` instead prints a cProfile of a 5,000-step trainer run at H=64 (the
min-char-rnn settings of (f), default recording). ``--stacked`` hands the other arguments to
rnn_lab.bench.stacked_speed (the stacked-engine benchmark).

The contenders run in rounds of about equal duration, interleaved, and each one's best round
counts: on a shared machine the best round is the one least disturbed by other work. The
median is printed too. torch runs with one thread (as rnn_lab, which pins one BLAS thread
per process); --torch-threads N adds a row with N.

The printed report is also written to docs/benchmarks.md (``--page``), a page that names
the command, date, commit and machine; a ``--quick`` smoke run writes no page unless asked.
The contenders are in rnn_lab.bench.contenders, the clocks in rnn_lab.bench.timing.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from rnn_lab import PROJECT_ROOT
from rnn_lab.bench import memory_reuse as memory
from rnn_lab.bench.contenders import (
    LARGE_CONFIG,
    MIN_CHAR_SIZES,
    WALKTHROUGH_CONFIG,
    BenchConfig,
    MinCharRnnLoop,
    RnnLabLoop,
    TorchGatedLoop,
    TorchLoop,
    WalkthroughStyleLoop,
    gated_contender,
    min_char_config,
)
from rnn_lab.bench.timing import (
    Timing,
    machine_and_load,
    profile_trainer,
    run_for,
    time_interleaved,
    time_min_char_trainer,
    time_trainer,
)
from rnn_lab.core.data import generate_elman_corpus
from rnn_lab.provenance import write_generated_page

# The checkout's page; an installed package has no docs/ folder (a page only with --page).
DEFAULT_PAGE = PROJECT_ROOT / "docs" / "benchmarks.md" if PROJECT_ROOT is not None else None

# The targets (speed-up of rnn_lab over each contender, and trainer wall time).
TARGET_VS_WALKTHROUGH_LOOP = 8.0
TARGET_VS_TORCH = 5.0
TARGET_VS_TORCH_LARGE = 1.0
TARGET_TRAINER_WALL_S = 15.0
TARGET_GATED_VS_TORCH = 1.0  # issue 12: gated cells >= torch's speed (walkthrough config.)
TARGET_TRAINER_VS_MIN_CHAR = 5.0  # issue 11: the whole trainer vs a min-char-rnn-style loop (H=64)
TARGET_TRAINER_OVERHEAD = 0.15  # issue 11: trainer time per step / engine step - 1


def _table(timings: list[Timing], reference: Timing) -> list[str]:
    lines = [
        f"  {'contender':<28} {'steps/round':>11} {'best steps/s':>13} {'median':>9} "
        f"{'ms/step':>8} {'rnn_lab is':>11}"
    ]
    for t in timings:
        ratio = reference.best / t.best
        lines.append(
            f"  {t.label:<28} {t.steps_per_round:>11d} {t.best:>13.0f} {t.median:>9.0f} "
            f"{1000.0 / t.best:>8.3f} {ratio:>10.2f}x"
        )
    return lines


def _verdict(value: float, target: float, more_is_better: bool = True) -> str:
    ok = value >= target if more_is_better else value <= target
    return "meets" if ok else "MISSES"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnn-lab bench",
        description="Speed of rnn_lab's engine and trainer against a walkthrough-style loop, a "
        "min-char-rnn-style loop and torch autograd (RNN, GRU, LSTM).",
    )
    parser.add_argument("--quick", action="store_true", help="few steps: a smoke run for CI")
    parser.add_argument(
        "--steps",
        type=int,
        help="rnn_lab's steps per timed round at the walkthrough configuration (default 1000); the "
        "other contenders run as many as take about as long",
    )
    parser.add_argument("--large-steps", type=int, help="the same at the large configuration")
    parser.add_argument("--rounds", type=int, help="timed rounds per contender (best counts)")
    parser.add_argument("--trainer-steps", type=int, help="steps of the trainer run (30000)")
    parser.add_argument("--trainer-repeats", type=int, help="trainer runs per setting")
    parser.add_argument("--no-trainer", action="store_true", help="skip (d), the trainer runs")
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=0,
        help="also time torch with this many threads (on a busy machine OpenMP's spinning "
        "can make it far slower than 1 thread)",
    )
    parser.add_argument("--no-gated", action="store_true", help="skip the GRU / LSTM rows")
    parser.add_argument(
        "--gated-steps",
        type=int,
        help="rnn_lab GRU's steps per timed round at the walkthrough configuration (default 300)",
    )
    parser.add_argument(
        "--no-min-char", action="store_true", help="skip the min-char-rnn-style comparison"
    )
    parser.add_argument(
        "--min-char-trainer-steps",
        type=int,
        help="steps of each trainer run in the min-char-rnn comparison (default 30000, the "
        "walkthrough's run)",
    )
    parser.add_argument(
        "--stacked",
        action="store_true",
        help="the stacked-engine benchmark instead (rnn_lab.bench.stacked_speed; the other "
        "arguments go to it)",
    )
    parser.add_argument(
        "--profile-trainer",
        type=int,
        nargs="?",
        const=5000,
        metavar="STEPS",
        help="only profile (cProfile) a trainer run of STEPS steps (5000) at H=64 with the "
        "min-char-rnn settings and default recording, and print where its time goes",
    )
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    parser.add_argument(
        "--page",
        type=Path,
        help="write the printed report to this Markdown page (default docs/benchmarks.md of "
        "the checkout; a --quick run, or an installed package, writes one only when given)",
    )
    parser.add_argument("--no-page", action="store_true", help="write no page")
    return parser


def main_bench(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--stacked" in argv:  # every other argument is the stacked benchmark's own
        from rnn_lab.bench.stacked_speed import main as main_stacked

        return main_stacked([a for a in argv if a != "--stacked"])
    args = _parser().parse_args(argv)
    memory.reuse_freed_memory()  # every contender's loop, without fresh pages each step
    if args.profile_trainer:
        return profile_trainer(args.profile_trainer)
    page = args.page if args.page is not None else (None if args.quick else DEFAULT_PAGE)
    printed = io.StringIO()
    with contextlib.redirect_stdout(_Tee(sys.stdout, printed)):
        results = _bench(args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    if page is not None and not args.no_page:
        command = " ".join(["rnn-lab bench", *argv])
        print(f"  wrote {write_benchmark_page(page, printed.getvalue(), command)}")
    return 0


def _bench(args: argparse.Namespace) -> dict:
    """Every section of the benchmark, printed as it goes; the numbers for --json."""
    quick = args.quick
    plan = {
        "steps": args.steps or (20 if quick else 1000),
        "large_steps": args.large_steps or (2 if quick else 60),
        "gated_steps": args.gated_steps or args.steps or (5 if quick else 300),
        "rounds": args.rounds or (2 if quick else 5),
        "warmup": 2 if quick else 20,
        "torch_threads": args.torch_threads,
        "min_char_trainer_steps": args.min_char_trainer_steps or (200 if quick else 30_000),
        "trainer_repeats": args.trainer_repeats or (1 if quick else 2),
    }
    import torch

    text = generate_elman_corpus()
    results: dict = {"machine": machine_and_load(), "numpy": np.__version__,
                     "torch": torch.__version__}  # fmt: skip
    print("rnn_lab speed benchmark")
    print(f"  machine: {results['machine']}")
    print(f"  memory: {memory.describe()}")
    print(
        f"  numpy {np.__version__}, OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}"
        f"; torch {torch.__version__}, torch.set_num_threads(1) unless a row says otherwise "
        "(rnn_lab pins one BLAS/OpenMP thread per process, so 1 is also this process's default)"
    )
    print(
        f"  timing: best of {plan['rounds']} interleaved rounds after {plan['warmup']} warm-up "
        "steps, wall clock"
    )
    results["seed"] = _bench_walkthrough_config(text, plan)  # key kept: bench.json's format
    results["large"] = _bench_large_config(text, plan)
    if not args.no_gated:
        results["gated"] = {
            "seed": _bench_gated(WALKTHROUGH_CONFIG, text, plan["gated_steps"], plan),
            "large": _bench_gated(LARGE_CONFIG, text, plan["large_steps"], plan),
        }
    if not args.no_min_char:
        results["min_char"] = [_bench_min_char(H, text, plan) for H in MIN_CHAR_SIZES]
    if not args.no_trainer:
        trainer_steps = args.trainer_steps or (200 if quick else 30_000)
        results["trainer"] = _bench_trainer(trainer_steps, plan["trainer_repeats"])
    print()
    print(f"  load average at the end: {machine_and_load().split('load average ')[1]}")
    return results


class _Tee(io.TextIOBase):
    """Writes to every stream it holds: the terminal and the page's copy of the report."""

    def __init__(self, *streams) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


def write_benchmark_page(path: Path, printed: str, command: str) -> Path:
    """docs/benchmarks.md: the report as the benchmark printed it, under the command, date,
    commit and machine that made it (rnn_lab.provenance). The page holds this run only."""
    body = [
        "The figures of the speed benchmark as it printed them: steps per second by the best "
        "of interleaved rounds (the median beside it), and rnn_lab's speed over each "
        "contender's. The contenders are described in `rnn_lab/bench/speed.py`; "
        "`rnn-lab bench` measures again and replaces this page (`--quick`, a smoke run, "
        "writes none).",
        "",
        "```text",
        *printed.rstrip("\n").splitlines(),
        "```",
    ]
    return write_generated_page(path, "Speed benchmark", body, command=command)


def _bench_walkthrough_config(text: str, plan: dict) -> list[dict]:
    cfg = WALKTHROUGH_CONFIG
    ours = RnnLabLoop(cfg, text)
    contenders = [ours, WalkthroughStyleLoop(cfg, text), TorchLoop(cfg, text, threads=1)]
    if plan["torch_threads"] > 1:
        contenders.append(TorchLoop(cfg, text, threads=plan["torch_threads"]))
    print()
    vocab = ours.state.task.vocab.size
    print(f"walkthrough configuration: Elman corpus V={vocab}, {cfg.describe()}")
    timings = time_interleaved(contenders, plan["steps"], plan["rounds"], plan["warmup"])
    for line in _table(timings, timings[0]):
        print(line)
    for other, target, name in (
        (1, TARGET_VS_WALKTHROUGH_LOOP, "walkthrough-style loop"),
        (2, TARGET_VS_TORCH, "torch (1 thread)"),
    ):
        best = timings[0].best / timings[other].best
        med = timings[0].median / timings[other].median
        print(
            f"  rnn_lab / {name} = {best:.1f}x by best rounds, {med:.1f}x by medians "
            f"(target >= {target:g}x: {_verdict(best, target)})"
        )
    return _timings_json(timings)


def _bench_large_config(text: str, plan: dict) -> list[dict]:
    cfg = LARGE_CONFIG
    contenders = [RnnLabLoop(cfg, text), TorchLoop(cfg, text, threads=1)]
    if plan["torch_threads"] > 1:
        contenders.append(TorchLoop(cfg, text, threads=plan["torch_threads"]))
    print()
    print(
        f"large configuration: {cfg.describe()} (walkthrough-style loop: n/a, it has no batch axis)"
    )
    timings = time_interleaved(
        contenders, plan["large_steps"], plan["rounds"], min(plan["warmup"], 5)
    )
    for line in _table(timings, timings[0]):
        print(line)
    best = timings[0].best / timings[1].best
    med = timings[0].median / timings[1].median
    print(
        f"  rnn_lab / torch (1 thread) = {best:.2f}x by best rounds, {med:.2f}x by medians "
        f"(target >= {TARGET_VS_TORCH_LARGE:g}x: {_verdict(best, TARGET_VS_TORCH_LARGE)})"
    )
    return _timings_json(timings)


def _bench_trainer(trainer_steps: int, trainer_repeats: int) -> dict:
    print()
    print(
        f"trainer: rnn_lab.run.trainer.train, the walkthrough's run (default settings), "
        f"{trainer_steps} steps, best of {trainer_repeats}"
    )
    with tempfile.TemporaryDirectory(prefix="rnn_lab_bench_") as tmp:
        walls = time_trainer(trainer_steps, trainer_repeats, Path(tmp))
    rec, norec = min(walls["record"]), min(walls["no_record"])
    overhead = 100.0 * (rec - norec) / norec
    print(f"  {'record=true (default)':<28} {rec:>8.2f} s  {trainer_steps / rec:>8.0f} steps/s")
    print(f"  {'record=false':<28} {norec:>8.2f} s  {trainer_steps / norec:>8.0f} steps/s")
    print(f"  recording overhead: {overhead:+.1f}%")
    if trainer_steps == 30_000:
        print(
            f"  30,000 steps with default recording: {rec:.1f} s (target < "
            f"{TARGET_TRAINER_WALL_S:g} s: {_verdict(rec, TARGET_TRAINER_WALL_S, False)})"
        )
    return {"steps": trainer_steps, **walls, "overhead_pct": overhead}


def _bench_gated(cfg: BenchConfig, text: str, steps: int, plan: dict) -> dict:
    """rnn_lab's GRU and LSTM against torch.nn.GRU / nn.LSTM, interleaved, at cfg."""
    contenders = []
    for cell in ("gru", "lstm"):
        contenders += [gated_contender(cell, cfg, text), TorchGatedLoop(cell, cfg, text)]
    path = contenders[0].path
    print()
    print(f"gated cells, {cfg.name} configuration: {cfg.describe()}")
    ours = (
        "rnn_lab.run.step.train_step with cell=gru/lstm (recording off)"
        if path == "train_step"
        else "rnn_lab.core.gated forward, loss, backward (clip), SGD on the flat buffer, "
        "state carried"
    )
    print(f"  rnn_lab: {ours}")
    print("  torch: nn.GRU/nn.LSTM + nn.Linear, autograd, clip_grad_norm_, optim.SGD")
    warmup = plan["warmup"] if cfg.batch_size == 1 else min(plan["warmup"], 5)
    timings = time_interleaved(contenders, steps, plan["rounds"], warmup)
    lines = [
        f"  {'contender':<28} {'steps/round':>11} {'best steps/s':>13} {'median':>9} "
        f"{'ms/step':>8} {'rnn_lab/torch':>14}"
    ]
    ratios = {}
    for k, cell in enumerate(("gru", "lstm")):
        ours, torch_t = timings[2 * k], timings[2 * k + 1]
        best, med = ours.best / torch_t.best, ours.median / torch_t.median
        ratios[cell] = {"best": best, "median": med}
        for t, ratio in ((ours, f"{best:>13.2f}x"), (torch_t, "")):
            lines.append(
                f"  {t.label:<28} {t.steps_per_round:>11d} {t.best:>13.0f} {t.median:>9.0f} "
                f"{1000.0 / t.best:>8.3f} {ratio:>14}"
            )
    for line in lines:
        print(line)
    for cell, r in ratios.items():
        target = TARGET_GATED_VS_TORCH if cfg.name == "walkthrough" else None
        verdict = f"target >= {target:g}x: {_verdict(r['best'], target)}" if target else "reported"
        print(
            f"  rnn_lab {cell.upper()} / torch {cell.upper()} = {r['best']:.2f}x by best rounds, "
            f"{r['median']:.2f}x by medians ({verdict})"
        )
    return {"rnn_lab_path": path, "timings": _timings_json(timings), "ratios": ratios}


def _bench_min_char(H: int, text: str, plan: dict) -> dict:
    """rnn_lab's engine step and whole trainer against a min-char-rnn-style loop at H.

    Two comparisons. The table: the engine step and the min-char loop in short interleaved
    rounds (best round). The trainer: one whole run of ``min_char_trainer_steps`` steps, so
    it is set against runs of the same duration, alternating with it: the engine for as many
    steps, the min-char loop for as many as take as long. A best-of-many short round against
    a best-of-two long run flatters the short side on a shared machine (a quiet second is
    easier to find than a quiet ten), which earlier versions of this benchmark did; the
    overhead from the short rounds is still printed, labelled."""
    cfg = min_char_config(H)
    ours = RnnLabLoop(cfg, text)
    theirs = MinCharRnnLoop(cfg, text, ours.state.params)  # before any step: the same weights
    print()
    print(f"min-char-rnn comparison: Elman corpus V={ours.state.task.vocab.size}, {cfg.describe()}")
    trainer_steps = plan["min_char_trainer_steps"]
    timings, runs, long_runs = _alternate_with_trainer([ours, theirs], cfg, plan)
    trainer_rate = trainer_steps / min(runs["wall"])
    trainer_cpu_rate = trainer_steps / min(runs["cpu"])
    engine_long, loop_long = (long_runs[c.label] for c in (ours, theirs))
    for line in _table(timings, timings[0]):
        print(line)
    print(
        f"  whole runs of about {trainer_steps / max(timings[0].best, 1e-9):.0f} s each, "
        f"alternating (best of {len(runs['wall'])}; steps/s, median, ms/step):"
    )
    for label, rates in (
        (f"{ours.label} ({trainer_steps} steps)", engine_long["rates"]),
        (f"{theirs.label} ({loop_long['steps'][0]} steps)", loop_long["rates"]),
        (f"rnn_lab trainer ({trainer_steps} steps)", [trainer_steps / w for w in runs["wall"]]),
    ):
        best = max(rates)
        print(
            f"    {label:<44} {best:>8.0f} {statistics.median(rates):>8.0f} {1000.0 / best:>8.3f}"
        )
    print(
        f"  (trainer: rnn_lab.run.trainer.train, the walkthrough's run with default recording, "
        f"validation, Jacobians and checkpoints, optim=adagrad lr={cfg.lr:g} "
        f"clip_mode={cfg.clip_mode} clip={cfg.clip:g})"
    )
    engine, loop = timings[0].best, timings[1].best
    out = {
        "hidden_size": H,
        "timings": _timings_json(timings),
        "trainer": {
            "steps": trainer_steps,
            "walls": runs["wall"],
            "cpu_s": runs["cpu"],
            "steps_per_s": trainer_rate,
            "steps_per_cpu_s": trainer_cpu_rate,
        },
        "long_runs": long_runs,
        "engine_vs_min_char": engine / loop,
        # the trainer against runs of its own duration (the comparison the targets use)
        "trainer_vs_min_char": trainer_rate / max(loop_long["rates"]),
        # a second measure of the overhead (no verdict): the whole runs against each other
        "trainer_overhead": max(engine_long["rates"]) / trainer_rate - 1.0,
        "trainer_vs_min_char_cpu": trainer_cpu_rate / max(loop_long["cpu_rates"]),
        "trainer_overhead_cpu": max(engine_long["cpu_rates"]) / trainer_cpu_rate - 1.0,
        # inside the trainer's own runs: its loop against its engine's share (median of runs),
        # the steadiest measure and the one the overhead target is judged by
        "trainer_overhead_in_run": statistics.median(x["overhead"] for x in runs["in_run"]),
        "trainer_overhead_in_run_all": [x["overhead"] for x in runs["in_run"]],
        # the same against the best short round (earlier versions' figures)
        "trainer_vs_min_char_short_rounds": trainer_rate / loop,
        "trainer_overhead_short_rounds": engine / trainer_rate - 1.0,
    }
    _print_min_char_ratios(out, check=H == MIN_CHAR_SIZES[0])
    return out


def _print_min_char_ratios(out: dict, check: bool) -> None:
    """The min-char comparison's ratios, with the targets' verdicts when ``check``."""
    print(f"  rnn_lab engine / min-char loop = {out['engine_vs_min_char']:.1f}x (short rounds)")
    vs = out["trainer_vs_min_char"]
    print(
        f"  rnn_lab trainer / min-char loop = {vs:.1f}x"
        + (f" (target >= {TARGET_TRAINER_VS_MIN_CHAR:g}x: "
           f"{_verdict(vs, TARGET_TRAINER_VS_MIN_CHAR)})" if check else "")
    )  # fmt: skip
    over = out["trainer_overhead_in_run"]
    in_run = ", ".join(f"{100 * x:+.1f}%" for x in out["trainer_overhead_in_run_all"])
    print(
        f"  trainer overhead per step, inside its runs = {100 * over:+.1f}% of the engine step"
        + (f" (target < {100 * TARGET_TRAINER_OVERHEAD:g}%, judged by this in-run measure: "
           f"{_verdict(over, TARGET_TRAINER_OVERHEAD, False)})" if check else "")
    )  # fmt: skip
    print(
        f"    (the median of its runs' {in_run}: the trainer's loop against the engine part "
        "of its steps, timed at the same instants)"
    )
    print(
        f"  trainer overhead per step, whole runs = {100 * out['trainer_overhead']:+.1f}% of "
        "the engine step (a second measure, no verdict: the trainer's best run against the "
        "engine's best run of as many steps)"
    )
    print(
        f"  by CPU time (process_time, less exposed to other processes' load): trainer / "
        f"min-char loop = {out['trainer_vs_min_char_cpu']:.1f}x, trainer overhead "
        f"{100 * out['trainer_overhead_cpu']:+.1f}%"
    )
    print(
        f"  against the best short round instead (earlier versions' method, flatters the "
        f"short side): trainer / min-char loop = {out['trainer_vs_min_char_short_rounds']:.1f}x"
        f", trainer overhead {100 * out['trainer_overhead_short_rounds']:+.1f}%"
    )


def _alternate_with_trainer(contenders: list, cfg: BenchConfig, plan: dict):
    """The contenders' interleaved short rounds in one block per trainer run; after each
    block, the trainer run and one whole run of each contender of about the trainer's
    duration, in an order that rotates, so that a stretch of load from other processes does
    not fall on one side of a ratio only. Returns (timings, the trainer's wall and CPU
    seconds, the contenders' whole runs by label: steps, rates, cpu_rates)."""
    repeats = plan["trainer_repeats"]
    per_block = max(1, math.ceil(plan["rounds"] / repeats))
    steps = plan["min_char_trainer_steps"]
    timings: list[Timing] = []
    runs: dict[str, list] = {"wall": [], "cpu": [], "in_run": []}
    long_runs = {c.label: {"steps": [], "rates": [], "cpu_rates": []} for c in contenders}
    with tempfile.TemporaryDirectory(prefix="rnn_lab_bench_") as tmp:
        for r in range(repeats):
            block = time_interleaved(contenders, plan["steps"], per_block, plan["warmup"])
            if not timings:
                timings = block
            else:
                for t, b in zip(timings, block):
                    t.rates.extend(b.rates)
                    t.cpu_rates.extend(b.cpu_rates)
            # as many steps as the trainer's run takes at each contender's short-round speed
            lengths = [max(2, round(steps * t.best / timings[0].best)) for t in timings]
            jobs: list = [*zip(contenders, lengths), (None, steps)]
            for contender, n in jobs[r % len(jobs) :] + jobs[: r % len(jobs)]:
                if contender is None:
                    split: dict = {}
                    wall, cpu = time_min_char_trainer(cfg, steps, Path(tmp) / f"run_{r}", split)
                    runs["wall"].append(wall)
                    runs["cpu"].append(cpu)
                    runs["in_run"].append(split)
                    continue
                wall, cpu = run_for(contender, n)
                record = long_runs[contender.label]
                record["steps"].append(n)
                record["rates"].append(n / max(wall, 1e-12))
                record["cpu_rates"].append(n / max(cpu, 1e-12))
    for c in contenders:
        if not math.isfinite(c.loss):
            raise RuntimeError(f"{c.label}: the loss became {c.loss} while timing")
    return timings, runs, long_runs


def _timings_json(timings: list[Timing]) -> list[dict]:
    return [
        {
            "label": t.label,
            "steps_per_round": t.steps_per_round,
            "rates": t.rates,
            "best": t.best,
            "median": t.median,
            "cpu_rates": t.cpu_rates,
        }  # fmt: skip
        for t in timings
    ]


if __name__ == "__main__":
    raise SystemExit(main_bench())
