"""The clocks of the benchmarks: interleaved best-of rounds (:func:`time_interleaved`), whole
trainer runs, the trainer's own clock of its engine inside a run, and a cProfile of a run.

The contenders run in rounds of about equal duration, interleaved, and each one's best round
counts: on a shared machine the best round is the one least disturbed by other work.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from rnn_lab.bench.contenders import BenchConfig, min_char_config, min_char_trainer_settings
from rnn_lab.run.settings import TrainSettings


@dataclass
class Timing:
    label: str
    steps_per_round: int
    rates: list[float] = field(default_factory=list)  # steps/s of each round
    cpu_rates: list[float] = field(default_factory=list)  # steps per CPU second of each round

    @property
    def best(self) -> float:
        return max(self.rates)

    @property
    def median(self) -> float:
        return statistics.median(self.rates)

    @property
    def cpu_best(self) -> float:
        return max(self.cpu_rates)


def run_for(contender, steps: int) -> tuple[float, float]:
    """(wall, CPU) seconds of ``steps`` steps of a contender in one go."""
    with _threads_of(contender):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            contender.step()
        return time.perf_counter() - t0, time.process_time() - c0


def time_interleaved(contenders: list, steps: int, rounds: int, warmup: int) -> list[Timing]:
    """Best-of-``rounds`` steps/s for each contender, rounds interleaved across contenders.

    The first contender runs ``steps`` steps per round; the others as many as fill about the
    same time (from their warm-up speed), so no contender's rounds are longer, and so more
    exposed to disturbance, than another's. Interleaving spreads a burst of load from other
    processes over every contender instead of one; the order rotates each round.
    """
    warm_rates = []
    for c in contenders:
        with _threads_of(c):
            t0 = time.perf_counter()
            for _ in range(warmup):
                c.step()
            warm_rates.append(warmup / max(time.perf_counter() - t0, 1e-12))
    n_steps = [max(2, round(steps * rate / warm_rates[0])) for rate in warm_rates]
    n_steps[0] = steps
    timings = [Timing(c.label, n) for c, n in zip(contenders, n_steps)]
    order = list(range(len(contenders)))
    for r in range(rounds):
        for i in order[r % len(order) :] + order[: r % len(order)]:
            c, n = contenders[i], n_steps[i]
            elapsed, cpu = run_for(c, n)
            timings[i].rates.append(n / max(elapsed, 1e-12))
            timings[i].cpu_rates.append(n / max(cpu, 1e-12))
    for c in contenders:
        if not math.isfinite(c.loss):
            raise RuntimeError(f"{c.label}: the loss became {c.loss} while timing")
    return timings


def _threads_of(contender):
    """The contender's thread setting while it runs (torch's loops), else nothing."""
    context = getattr(contender, "thread_context", None)
    return context() if context is not None else contextlib.nullcontext()


def time_trainer(steps: int, repeats: int, workdir: Path) -> dict[str, list[float]]:
    """Wall time of rnn_lab.run.trainer.train for the walkthrough's run, recording on and off."""
    from rnn_lab.run.trainer import train

    walls: dict[str, list[float]] = {"record": [], "no_record": []}
    for r in range(repeats):
        for key in ("record", "no_record") if r % 2 == 0 else ("no_record", "record"):
            settings = TrainSettings(steps=steps, record=(key == "record"))
            run_dir = workdir / f"{key}_{r}"
            t0 = time.perf_counter()
            summary = train(settings, run_dir)
            walls[key].append(time.perf_counter() - t0)
            if summary["status"] != "ok":
                raise RuntimeError(f"trainer run ended with status {summary['status']}")
    return walls


def time_min_char_trainer(
    cfg: BenchConfig, steps: int, workdir: Path, split: dict | None = None
) -> tuple[float, float]:
    """(wall, CPU) seconds of rnn_lab.run.trainer.train with min_char_trainer_settings.
    split: when given, filled with the run's own clock of its loop (see _engine_clock)."""
    from rnn_lab.run.trainer import train

    totals = {"train_step": 0.0, "bookkeeping": 0.0}
    with _engine_clock(totals) if split is not None else contextlib.nullcontext():
        t0, c0 = time.perf_counter(), time.process_time()
        summary = train(min_char_trainer_settings(cfg, steps), workdir)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if summary["status"] != "ok":
        raise RuntimeError(f"trainer run ended with status {summary['status']}")
    if split is not None:
        loop = steps / summary["steps_per_s"]
        engine = totals["train_step"] - totals["bookkeeping"]
        split.update(loop_s=loop, engine_s=engine, overhead=loop / engine - 1.0)
    return wall, cpu


def timed_calls(fn, totals: dict, key: str, timer=time.perf_counter):
    """fn, adding the time of each call (by ``timer``) to totals[key]."""

    def timed(*args, **kwargs):
        t0 = timer()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[key] = totals.get(key, 0.0) + timer() - t0

    return timed


@contextlib.contextmanager
def _engine_clock(totals: dict):
    """Inside the trainer's own run, the time of its engine: train_step less its bookkeeping
    (step.measure_step: the loss window, history rows with their eigenvalues, recording).
    The loop's time less this is the trainer's overhead, measured at the same instants as
    the engine, so a slow stretch of the machine weighs on both alike (two perf_counter
    calls around each, ~0.2 us a step, count as overhead)."""
    from rnn_lab.run import step as step_module
    from rnn_lab.run import trainer as trainer_module

    inner_step, inner_measure = trainer_module.train_step, step_module.measure_step
    train_step = timed_calls(inner_step, totals, "train_step")
    measure_step = timed_calls(inner_measure, totals, "bookkeeping")
    trainer_module.train_step, step_module.measure_step = train_step, measure_step
    try:
        yield
    finally:
        trainer_module.train_step, step_module.measure_step = inner_step, inner_measure


def profile_trainer(steps: int, hidden_size: int = 64, top: int = 30) -> int:
    """cProfile of rnn_lab.run.trainer.train (min-char-rnn settings, default recording),
    after an unprofiled warm-up run: the functions by cumulative time, in us per step."""
    import cProfile
    import pstats

    from rnn_lab.run.trainer import train

    settings = min_char_trainer_settings(min_char_config(hidden_size), steps)
    with tempfile.TemporaryDirectory(prefix="rnn_lab_bench_") as tmp:
        train(settings, Path(tmp) / "warm")
        t0 = time.perf_counter()
        train(settings, Path(tmp) / "plain")
        wall = time.perf_counter() - t0
        profiler = cProfile.Profile()
        profiler.runcall(train, settings, Path(tmp) / "profiled")
    print(
        f"trainer profile: H={hidden_size}, {steps} steps, Adagrad lr 0.1, clip_mode=value, "
        f"default recording; {wall:.2f} s without the profiler ({1e6 * wall / steps:.0f} "
        f"us/step); machine: {machine_and_load()}"
    )
    print("  (the profiler's per-call cost inflates functions called every step)")
    stats = pstats.Stats(profiler).stats
    rows = sorted(stats.items(), key=lambda kv: kv[1][3], reverse=True)[:top]
    print(f"  {'cumulative us/step':>18} {'own us/step':>12} {'calls':>8}  function")
    for (path, line, name), (_, ncalls, own, cumulative, _) in rows:
        where = f"{Path(path).name}:{line}" if line else path
        print(
            f"  {1e6 * cumulative / steps:>18.1f} {1e6 * own / steps:>12.1f} {ncalls:>8d}  "
            f"{name} ({where})"
        )
    return 0


def machine_and_load() -> str:
    """The processor, its logical CPUs and the load average: a benchmark's header line."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1/5/15 min)"
    )
