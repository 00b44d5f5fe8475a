"""Speed: the stacked engine (rnn_lab.core.stacked_engine, issue 11) against the single-run path.

``python -m rnn_lab.bench.stacked_speed`` (or ``rnn-lab bench --stacked``) times, in one
process with one BLAS thread (rnn_lab pins it on import, as for ``rnn-lab bench``), the arms of
the init_activation grid (W_hh init orthogonal / xavier / random / identity x activation tanh /
relu / sigmoid) at the walkthrough's configuration (Elman corpus, H=64, seq_len=25, B=1, SGD
momentum 0.9 dampening 0.9, lr 0.01, clip 5), for K = 1, 6, 12 and 36 arms (36: the 12 arms
with seeds 42, 43, 44), in float64 and float32:

  (a) single-run path: the K arms one after another, each through the trainer's own step
      (rnn_lab.run.step.train_step on its TrainState, recording off, as
      rnn_lab.bench.contenders.RnnLabLoop);
  (b) stacked engine: the K arms as one stack: forward + stacked_loss + backward (per-arm
      clipping) + the stacked optimiser step + h carried, one shared batch per step.

Speed is in arm-steps per second (one arm advanced by one chunk). Rounds are interleaved and
each contender's best round counts (rnn_lab.bench.timing.time_interleaved, which records wall
and CPU time; ``--clock cpu`` makes the table use CPU time, steadier when other jobs share the
machine). Then a K=36 float64 stacked step is taken apart: each phase (the forward recurrence
loop, the BPTT loop, the parameter-gradient matmuls, clipping, the optimiser, ...) is timed
inside real steps. Last, the floor (``stacked_floor``): what each arm still pays in a
bit-identical stack (its own 2T gemv calls inside the batched matmuls, its T x H activation
values), measured on this machine, and the most stacking could gain over a lone run if
everything else were free.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np

from rnn_lab.bench import memory_reuse as memory
from rnn_lab.bench.timing import Timing, machine_and_load, time_interleaved, timed_calls
from rnn_lab.core import engine, stacked_losses, stacked_optim
from rnn_lab.core import stacked_engine as st
from rnn_lab.core.data import CharTextTask, EncodedText, generate_elman_corpus
from rnn_lab.core.optim import step_decay_lr
from rnn_lab.run.lifecycle import build_params
from rnn_lab.run.settings import TrainSettings
from rnn_lab.run.state import TrainState
from rnn_lab.run.step import train_step

INITS = ("orthogonal", "xavier", "random", "identity")
ACTIVATIONS = ("tanh", "relu", "sigmoid")
SEEDS = (42, 43, 44)
K_VALUES = (1, 6, 12, 36)
DTYPES = ("float64", "float32")
TARGET_K36 = 4.0  # issue 11: stacked / single-run >= 4x at K=36, float64
K1_TOLERANCE = 0.10  # issue 11: say so when K=1 through the stacked path costs more than this


def grid_arms(K: int) -> list[tuple[str, str, int]]:
    """(init, activation, seed) of K arms: the grid in init-major order (K=1: the walkthrough's run,
    orthogonal + tanh), then again with the next seed."""
    grid = [(i, a, s) for s in SEEDS for i in INITS for a in ACTIVATIONS]
    if K > len(grid):
        raise ValueError(f"at most {len(grid)} arms")
    return grid[:K]


def arm_settings(init: str, activation: str, seed: int, dtype: str) -> TrainSettings:
    """The walkthrough's run with this init, activation and seed; recording off (the step alone)."""
    return TrainSettings(
        steps=10**9,
        hidden_size=64,
        seq_len=25,
        batch_size=1,
        dtype=dtype,
        lr=0.01,
        clip=5.0,
        optim={"name": "sgd", "momentum": 0.9, "dampening": 0.9, "nesterov": False},
        init={"name": init, "scale": 1.0, "path": None},
        activation=activation,
        seed=seed,
        record=False,
        record_interval=0,
        record_dense_until=0,
        val_interval=0,
    )


class SingleRunsLoop:
    """The K arms one after another through rnn_lab.run.step.train_step (one step = K
    arm-steps), each with its own TrainState and data pointer, as K single runs."""

    def __init__(self, arms: list[tuple[str, str, int]], dtype: str, corpus: EncodedText):
        self.K = len(arms)
        self.label = f"single-run path, K={self.K} {dtype}"
        self.runs = []
        for init, act, seed in arms:
            s = arm_settings(init, act, seed, dtype)
            task = CharTextTask(corpus, seq_len=s.seq_len, batch_size=s.batch_size)
            state = TrainState.start(build_params(s, task), s.optim, task, s.batch_size, seed)
            self.runs.append((state, s))
        self.loss = math.nan

    def step(self) -> None:
        losses = [train_step(state, state.task.next_batch(), s).loss for state, s in self.runs]
        self.loss = float(np.mean(losses))


class StackedLoop:
    """The K arms as one stack (stacked in activation order): one batch, forward,
    stacked_loss, backward, the stacked SGD step and h carried (one step = K arm-steps)."""

    def __init__(self, arms: list[tuple[str, str, int]], dtype: str, corpus: EncodedText):
        self.K = len(arms)
        self.label = f"stacked engine, K={self.K} {dtype}"
        settings = [arm_settings(i, a, s, dtype) for i, a, s in arms]
        settings = [settings[k] for k in st.activation_order([s.activation for s in settings])]
        self.settings = settings
        s0 = settings[0]
        self.task = CharTextTask(corpus, seq_len=s0.seq_len, batch_size=s0.batch_size)
        params = [engine.pack(build_params(s, self.task)) for s in settings]
        self.sp = st.StackedParams.stack(params)
        self.arms = [
            st.ArmSettings(s.activation, s.freeze_whh, s.clip, s.clip_mode) for s in settings
        ]
        self.opt = stacked_optim.make_stacked_optimizer("sgd", [s.optim for s in settings])
        self.n_train = self.sp.n_trainable(self.arms)
        self.h = np.zeros((self.K, s0.batch_size, s0.hidden_size), dtype=self.sp.dtype)
        self.step_count = 0
        self.loss = math.nan

    def step(self) -> None:
        batch = self.task.next_batch()
        if batch.reset_h:
            self.h = np.zeros_like(self.h)
        step = self.step_count + 1
        lr = np.array(
            [step_decay_lr(step, s.lr, s.lr_decay_rate, s.lr_decay_every) for s in self.settings]
        )
        cache = st.forward(self.sp, batch.inputs, self.h, self.arms)
        loss_sum, dlogits, n_counted = stacked_losses.stacked_loss(
            self.task.loss_name, cache.logits, batch.targets, batch.mask
        )
        grads = st.backward(self.sp, cache, dlogits, self.arms)
        self.opt.step(self.sp.flat, grads.flat, lr, self.n_train)
        self.h = cache.h_last
        self.step_count = step
        self.loss = float(np.mean(loss_sum)) / n_counted


# --------------------------------------------------------------------------------------
# Where a stacked step's time goes
# --------------------------------------------------------------------------------------

# The phases, as the stacked modules' functions they are timed through (module globals, so
# forward and backward call the timed wrappers); the optimiser's step is timed on its class.
PHASES = (
    ("input_projection", "forward: input projection (W_xh x_t, one-hot lookup)"),
    ("recur", "forward: the recurrence loop (T steps)"),
    ("output_logits", "forward: output matmul (W_hy h_t)"),
    ("stacked_loss", "loss: softmax cross-entropy and dL/do"),
    ("activation_derivatives", "backward: f'(a_t) from h_t"),
    ("bptt", "backward: the BPTT loop (T steps)"),
    ("parameter_gradients", "backward: parameter-gradient matmuls"),
    ("clip_gradients", "backward: norms and clipping"),
)


@contextlib.contextmanager
def _timed_phases(totals: dict[str, float], timer):
    """Wrap the phase functions of rnn_lab.core.stacked_engine and stacked_losses (and
    StackedSGD.step) to add their time (by ``timer``) to ``totals``; restored on exit."""

    owners = {name: stacked_losses if name == "stacked_loss" else st for name, _ in PHASES}
    saved = {name: getattr(owner, name) for name, owner in owners.items()}
    saved_step = stacked_optim.StackedSGD.step
    try:
        for name, fn in saved.items():
            setattr(owners[name], name, timed_calls(fn, totals, name, timer))
        stacked_optim.StackedSGD.step = timed_calls(saved_step, totals, "optimizer", timer)
        yield
    finally:
        for name, fn in saved.items():
            setattr(owners[name], name, fn)
        stacked_optim.StackedSGD.step = saved_step


def phase_breakdown(
    K: int, dtype: str, corpus: EncodedText, steps: int, rounds: int, timer=time.perf_counter
) -> dict:
    """Per phase, ms per stacked step inside real steps (the round with the fastest total)."""
    loop = StackedLoop(grid_arms(K), dtype, corpus)
    for _ in range(max(2, steps // 5)):
        loop.step()
    best: dict | None = None
    for _ in range(rounds):
        totals: dict[str, float] = {}
        with _timed_phases(totals, timer):
            t0 = timer()
            for _ in range(steps):
                loop.step()
            totals["total"] = timer() - t0
        if best is None or totals["total"] < best["total"]:
            best = totals
    return {k: 1000.0 * v / steps for k, v in best.items()}


def _print_breakdown(ms: dict, K: int, dtype: str, clock: str) -> None:
    total = ms["total"]
    print()
    print(
        f"where a stacked step's time goes (K={K}, {dtype}, {clock} time measured inside "
        "real steps, best of the rounds):"
    )
    labels = dict(PHASES) | {"optimizer": "optimiser: StackedSGD.step"}
    accounted = 0.0
    for key, label in labels.items():
        v = ms.get(key, 0.0)
        accounted += v
        print(f"  {label:<58} {v:>7.3f} ms  {100 * v / total:>5.1f}%")
    rest = total - accounted
    print(f"  {'the rest (step glue, lr, h carry, timing wrappers)':<58} {rest:>7.3f} ms  "
          f"{100 * rest / total:>5.1f}%")  # fmt: skip
    print(f"  {'total':<58} {total:>7.3f} ms  ({1000 * K / total:.0f} arm-steps/s)")


# --------------------------------------------------------------------------------------
# The floor: what a bit-identical stack cannot batch away
# --------------------------------------------------------------------------------------


def _per_call_s(fn, reps: int, rounds: int, timer) -> float:
    """Best-of-rounds seconds per call of fn()."""
    best = math.inf
    for _ in range(rounds):
        t0 = timer()
        for _ in range(reps):
            fn()
        best = min(best, (timer() - t0) / reps)
    return best


def stacked_floor(
    K: int = 36, dtype: str = "float64", T: int = 25, H: int = 64, timer=time.perf_counter
) -> dict:
    """The per-arm cost no bit-identical stack avoids, measured on this machine.

    Each arm must make its own BLAS gemv per time step, forward (h W_hh^T) and backward
    (da W_hh), with the single run's shapes: 2T calls per arm-step, timed here inside the
    batched matmul of a K-arm stack exactly as core/stacked_engine.py makes it. Each arm must also
    apply its activation to T x H values: timed per value as stacked.recur applies it to a run
    of K/3 arms, averaged over the grid's tanh / relu / sigmoid. Everything else (loss,
    parameter gradients, optimiser, bookkeeping) is left out, so the true floor is higher."""
    rng = np.random.default_rng(0)
    dt = np.dtype(dtype)
    W = (rng.standard_normal((K, H, H)) / math.sqrt(H)).astype(dt)
    h = rng.standard_normal((K, 1, H)).astype(dt)
    out = np.empty_like(h)
    reps, rounds = 400, 5
    fwd = _per_call_s(lambda: np.matmul(h, W.transpose(0, 2, 1), out=out), reps, rounds, timer)
    bwd = _per_call_s(lambda: np.matmul(h, W, out=out), reps, rounds, timer)
    run = max(1, K // len(ACTIVATIONS))
    a = np.tanh(rng.standard_normal((run, 1, H))).astype(dt)
    act_s = {}
    for name in ACTIVATIONS:
        act = engine.get_activation(name)
        ufunc = st._INPLACE_UFUNC.get(name)
        if ufunc is not None:
            call = functools.partial(ufunc, a, out=a)
        else:
            call = functools.partial(act.fn_inplace, a)
        act_s[name] = _per_call_s(call, reps, rounds, timer) / a.size
        np.tanh(rng.standard_normal(a.shape), out=a)  # keep the values in range
    gemv_us = 1e6 * (fwd + bwd) / (2 * K)
    act_ns = 1e9 * statistics.mean(act_s.values())
    floor_us = 1e6 * T * (fwd + bwd) / K + 1e-3 * T * H * act_ns
    return {
        "K": K,
        "dtype": dtype,
        "T": T,
        "H": H,
        "gemv_us_per_arm": gemv_us,
        "activation_ns_per_value": {n: 1e9 * v for n, v in act_s.items()},
        "activation_ns_mean": act_ns,
        "floor_us_per_arm_step": floor_us,
    }


def _print_floor(floor: dict, single_arm_steps_per_s: float, stacked_arm_steps_per_s: float):
    single_us = 1e6 / single_arm_steps_per_s
    stacked_us = 1e6 / stacked_arm_steps_per_s
    bound = single_us / floor["floor_us_per_arm_step"]
    acts = ", ".join(f"{n} {v:.1f}" for n, v in floor["activation_ns_per_value"].items())
    print()
    print(
        f"the floor of a bit-identical stack (K={floor['K']}, {floor['dtype']}): per arm-step "
        f"2 x {floor['T']} gemv at {floor['gemv_us_per_arm']:.2f} us each (inside the batched "
        f"matmul) + {floor['T']} x {floor['H']} activation values at "
        f"{floor['activation_ns_mean']:.1f} ns ({acts}) = "
        f"{floor['floor_us_per_arm_step']:.0f} us"
    )
    print(
        f"  a lone run's arm-step: {single_us:.0f} us; the stacked step's: {stacked_us:.0f} us "
        f"per arm, {stacked_us - floor['floor_us_per_arm_step']:.0f} us of it above the floor"
    )
    print(
        f"  => even with everything else free, stacking bit-identically gains at most "
        f"{bound:.2f}x here (target {TARGET_K36:g}x: "
        f"{'within reach' if bound >= TARGET_K36 else 'out of reach'})"
    )
    return bound


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rnn_lab.bench.stacked_speed",
        description="Speed of the stacked engine (issue 11) against the single-run path.",
    )
    p.add_argument("--quick", action="store_true", help="few steps: a smoke run")
    p.add_argument(
        "--steps",
        type=int,
        help="arm-steps per timed round of the stacked engine (default 3000; the stacked "
        "engine runs steps/K of its steps, the single-run path as many as take as long)",
    )
    p.add_argument("--rounds", type=int, help="timed rounds per contender (best counts)")
    p.add_argument("--ks", type=str, help="comma-separated K values (default 1,6,12,36)")
    p.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="the clock the table and the verdicts use: wall (as rnn-lab bench, default) or "
        "cpu (this process's CPU time, steadier on a machine other jobs share); both are "
        "recorded in --json",
    )
    p.add_argument(
        "--malloc-defaults",
        action="store_true",
        help="leave glibc's malloc thresholds as they are (rnn_lab.bench.memory_reuse): the bare "
        "stacked loop then takes fresh pages every step, which the trainers do not",
    )
    p.add_argument("--json", type=Path, help="also write the numbers to this file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    quick = args.quick
    arm_steps = args.steps or (72 if quick else 3000)
    rounds = args.rounds or (1 if quick else 5)
    ks = tuple(int(k) for k in args.ks.split(",")) if args.ks else K_VALUES
    corpus = EncodedText.from_text(generate_elman_corpus())
    print("stacked engine (issue 11) vs the single-run path, init_activation grid arms")
    if not args.malloc_defaults:
        memory.reuse_freed_memory()  # the engine, not malloc's reaction to a bare loop
    print(f"  machine: {machine_and_load()}; numpy {np.__version__}, one BLAS thread")
    print(f"  memory: {memory.describe() if not args.malloc_defaults else 'malloc defaults'}")
    print(
        "  walkthrough configuration: Elman corpus, H=64, seq_len=25, B=1, SGD momentum 0.9 "
        "dampening 0.9, lr 0.01, clip 5 (norm)"
    )
    print(f"  timing: best of {rounds} interleaved rounds, ~{arm_steps} arm-steps per round")
    clock = args.clock
    print(f"  clock: {clock} ({'time.process_time' if clock == 'cpu' else 'time.perf_counter'})")
    rows = []
    for dtype in DTYPES:
        for K in ks:
            rows.append(_bench_k(K, dtype, corpus, arm_steps, rounds))
    _print_table(rows, clock)
    verdicts = _verdicts(rows, clock)
    steps36 = max(2, arm_steps // 36 // (4 if quick else 1))
    timer = time.process_time if clock == "cpu" else time.perf_counter
    ms = phase_breakdown(36, "float64", corpus, steps36, 1 if quick else 3, timer)
    _print_breakdown(ms, 36, "float64", clock)
    floors = {}
    for r in rows:
        if r["K"] == max(ks):
            c = r[clock]
            floors[r["dtype"]] = floor = stacked_floor(r["K"], r["dtype"], timer=timer)
            floor["bound"] = _print_floor(floor, c["single_best"], c["stacked_best"])
    print(f"\n  load average at the end: {machine_and_load().split('load average ')[1]}")
    if args.json:
        out = {
            "machine": machine_and_load(),
            "clock": args.clock,
            "rows": rows,
            "verdicts": verdicts,
            "k36_ms": ms,
            "floor": floors,
        }
        args.json.write_text(json.dumps(out, indent=2))
    return 0


def _bench_k(K: int, dtype: str, corpus: EncodedText, arm_steps: int, rounds: int) -> dict:
    stacked = StackedLoop(grid_arms(K), dtype, corpus)
    single = SingleRunsLoop(grid_arms(K), dtype, corpus)
    steps = max(2, arm_steps // K)
    timings: list[Timing] = time_interleaved([stacked, single], steps, rounds, warmup=2)
    row = {"K": K, "dtype": dtype}
    for clock in ("wall", "cpu"):
        ts, t1 = (_rates(t, clock) for t in timings)
        if not ts:  # bench.Timing without CPU rates
            continue
        row[clock] = {
            "stacked_arm_steps_per_s": [K * r for r in ts],
            "single_arm_steps_per_s": [K * r for r in t1],
            "stacked_best": K * max(ts),
            "single_best": K * max(t1),
            "ratio_best": max(ts) / max(t1),
            "ratio_median": statistics.median(ts) / statistics.median(t1),
        }
    row["steps_per_round"] = [t.steps_per_round for t in timings]
    return row


def _rates(t: Timing, clock: str) -> list[float]:
    return list(t.rates if clock == "wall" else getattr(t, "cpu_rates", []))


def _print_table(rows: list[dict], clock: str) -> None:
    other = "cpu" if clock == "wall" else "wall"
    print()
    print(
        f"  {'dtype':<8} {'K':>3} {'single-run arm-steps/s':>23} {'stacked arm-steps/s':>20} "
        f"{'stacked/single':>15} {'(medians)':>10} {f'({other} clock)':>12} "
        f"{'ms/stacked step':>16}"
    )
    for r in rows:
        c, o = r.get(clock), r.get(other)
        if c is None:
            raise RuntimeError(f"no {clock} timings: bench.Timing has no CPU rates")
        other_ratio = f"{o['ratio_best']:>11.2f}x" if o else f"{'n/a':>12}"
        print(
            f"  {r['dtype']:<8} {r['K']:>3} {c['single_best']:>23.0f} {c['stacked_best']:>20.0f} "
            f"{c['ratio_best']:>14.2f}x {c['ratio_median']:>9.2f}x {other_ratio} "
            f"{1000 * r['K'] / c['stacked_best']:>16.3f}"
        )


def _verdicts(rows: list[dict], clock: str) -> dict:
    out = {}
    for r in rows:
        c = r[clock]
        if r["K"] == 36 and r["dtype"] == "float64":
            ok = c["ratio_best"] >= TARGET_K36
            out["k36_float64"] = {"ratio": c["ratio_best"], "meets": ok}
            print(
                f"  K=36 float64: stacked / single-run = {c['ratio_best']:.2f}x by best rounds "
                f"({clock} clock; target >= {TARGET_K36:g}x: {'meets' if ok else 'MISSES'})"
            )
    for r in rows:
        if r["K"] == 1:
            c = r[clock]
            cost = c["single_best"] / c["stacked_best"] - 1.0  # extra time per arm-step
            over = cost > K1_TOLERANCE
            out[f"k1_{r['dtype']}"] = {"extra_cost": cost, "over_tolerance": over}
            verdict = (
                f"MORE than {100 * K1_TOLERANCE:.0f}%: lone runs keep the single-run path"
                if over
                else f"within {100 * K1_TOLERANCE:.0f}%"
            )
            print(
                f"  K=1 {r['dtype']}: the stacked path takes {100 * cost:+.1f}% time per step "
                f"against the single-run path ({verdict})"
            )
    return out


if __name__ == "__main__":
    raise SystemExit(main())
