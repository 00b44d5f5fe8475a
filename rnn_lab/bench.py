"""Speed: rnn_lab's engine against a seed-style NumPy loop and torch autograd.

``rnn-lab bench`` (and ``python benchmarks/bench_speed.py``) times, in one process:

  (a) rnn_lab: the trainer's own step, rnn_lab.run.step.train_step (forward, loss, BPTT
      with clipping, SGD momentum on the packed flat parameters, h carried);
  (b) the seed's loop: dicts per time step, (V, 1) one-hot columns, hs/ps dicts, the seed's
      forward/backward/_apply_update, and np.linalg.eigvals of W_hh every step, as in
      seeds/train_walkthrough.txt;
  (c) torch.nn.RNN + nn.Linear with autograd, clip_grad_norm_ and torch.optim.SGD;

at the seed's configuration (Elman corpus, H=64, seq_len=25, B=1, float64, SGD momentum
0.9, lr 0.01, clip 5) and at a large one (H=256, seq_len=50, B=32, float32), and
  (d) the whole trainer (rnn_lab.run.trainer.train) for the seed's 30,000-step run with default
      recording, and again with record=false.

The contenders run in rounds of about equal duration, interleaved, and each one's best round
counts: on a shared machine the best round is the one least disturbed by other work. The
median is printed too. torch runs with one thread (as rnn_lab, which pins one BLAS thread
per process); --torch-threads N adds a row with N.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rnn_lab.core.data import CharTextTask, generate_elman_corpus
from rnn_lab.core.optim import step_decay_lr
from rnn_lab.run.settings import TrainSettings
from rnn_lab.run.state import TrainState
from rnn_lab.run.step import train_step
from rnn_lab.run.trainer import build_params

# The targets (speed-up of rnn_lab over each contender, and trainer wall time).
TARGET_VS_SEED_LOOP = 8.0
TARGET_VS_TORCH = 5.0
TARGET_VS_TORCH_LARGE = 1.0
TARGET_TRAINER_WALL_S = 15.0


@dataclass(frozen=True)
class BenchConfig:
    name: str
    hidden_size: int
    seq_len: int
    batch_size: int
    dtype: str
    lr: float = 0.01
    momentum: float = 0.9
    dampening: float = 0.9  # the trainer's default SGD: the seed's moving-average momentum
    clip: float = 5.0

    def describe(self) -> str:
        return (
            f"H={self.hidden_size}, seq_len={self.seq_len}, B={self.batch_size}, {self.dtype}, "
            f"SGD momentum {self.momentum}, lr {self.lr}, clip {self.clip:g}"
        )


SEED_CONFIG = BenchConfig("seed", hidden_size=64, seq_len=25, batch_size=1, dtype="float64")
LARGE_CONFIG = BenchConfig("large", hidden_size=256, seq_len=50, batch_size=32, dtype="float32")


# --------------------------------------------------------------------------------------
# (a) rnn_lab: the trainer's inner step
# --------------------------------------------------------------------------------------


class RnnLabLoop:
    """Exactly the trainer's step: rnn_lab.run.step.train_step on a TrainState built the way
    the trainer builds it, with recording off (no history rows, which would add eigenvalues
    every 10-100 steps; the trainer with its recording is timed separately in (d))."""

    label = "rnn_lab engine"

    def __init__(self, cfg: BenchConfig, text: str):
        self.cfg = cfg
        self.settings = TrainSettings(
            steps=10**9,  # never the "last step" of the schedule
            hidden_size=cfg.hidden_size,
            seq_len=cfg.seq_len,
            batch_size=cfg.batch_size,
            dtype=cfg.dtype,
            lr=cfg.lr,
            clip=cfg.clip,
            optim={"name": "sgd", "momentum": cfg.momentum, "dampening": cfg.dampening},
            # The step alone: no history rows (their eigenvalues) and no validation; the
            # trainer's recording is timed separately in (d).
            record=False,
            record_interval=0,
            record_dense_until=0,
            val_interval=0,
        )
        task = CharTextTask(text, seq_len=cfg.seq_len, batch_size=cfg.batch_size)
        params = build_params(self.settings, task)
        self.state = TrainState.start(params, self.settings.optim, task, cfg.batch_size, seed=42)
        self.loss = math.nan

    def step(self) -> None:
        result = train_step(self.state, self.state.task.next_batch(), self.settings)
        self.loss = result.loss


# --------------------------------------------------------------------------------------
# (b) the seed's loop, as in seeds/train_walkthrough.txt
# --------------------------------------------------------------------------------------


class SeedStyleLoop:
    """The seed's train.py inner loop: per-step dicts, (V, 1) columns, eigvals every step.

    Parameters live in torch nn.Parameters and are read with .data.numpy() at every call, as
    in the seed. They are float64 here (the seed's are float32 against a float64 h, which
    would add up-casting copies to its time): both loops then do float64 arithmetic.
    """

    label = "seed-style loop"

    def __init__(self, cfg: BenchConfig, text: str):
        import torch
        from torch import nn

        if cfg.batch_size != 1:
            raise ValueError("the seed's loop has no batch axis (B must be 1)")
        self.torch = torch
        self.cfg = cfg
        task = CharTextTask(text, seq_len=cfg.seq_len)
        self.train_data = [int(i) for i in task.train_ids]  # the seed encodes to a list
        V, H = task.vocab.size, cfg.hidden_size
        self.V, self.H = V, H
        dt = torch.float64
        torch.manual_seed(42)
        self.W_xh = nn.Parameter(torch.empty(H, V, dtype=dt))
        self.W_hh = nn.Parameter(torch.empty(H, H, dtype=dt))
        self.W_hy = nn.Parameter(torch.empty(V, H, dtype=dt))
        self.b_h = nn.Parameter(torch.zeros(H, 1, dtype=dt))
        self.b_y = nn.Parameter(torch.zeros(V, 1, dtype=dt))
        nn.init.uniform_(self.W_xh, -math.sqrt(6.0 / (V + H)), math.sqrt(6.0 / (V + H)))
        nn.init.orthogonal_(self.W_hh)
        nn.init.uniform_(self.W_hy, -math.sqrt(6.0 / (H + V)), math.sqrt(6.0 / (H + V)))
        self.names = ["W_xh", "W_hh", "W_hy", "b_h", "b_y"]
        self.velocity = {n: np.zeros_like(getattr(self, n).data.numpy()) for n in self.names}
        self.h = np.zeros((H, 1))
        self.pointer = 0
        self.step_count = 0
        self.loss_curve: list[dict] = []
        self.loss = math.nan

    def _forward(self, inputs: list[int], h_prev: np.ndarray) -> dict:
        W_xh = self.W_xh.data.numpy()
        W_hh = self.W_hh.data.numpy()
        W_hy = self.W_hy.data.numpy()
        b_h = self.b_h.data.numpy()
        b_y = self.b_y.data.numpy()
        xs, xs_indices, hs, os_, ps = {}, {}, {}, {}, {}
        hs[-1] = h_prev.copy()
        loss = 0.0
        seq_len = len(inputs) - 1
        for t in range(seq_len):
            xs_indices[t] = inputs[t]
            xs[t] = np.zeros((self.V, 1))
            xs[t][inputs[t]] = 1.0
            pre_act = W_xh @ xs[t] + W_hh @ hs[t - 1] + b_h
            hs[t] = np.tanh(pre_act)
            os_[t] = W_hy @ hs[t] + b_y
            exp_o = np.exp(os_[t] - np.max(os_[t]))
            ps[t] = exp_o / np.sum(exp_o)
            loss += -np.log(ps[t][inputs[t + 1], 0] + 1e-12)
        return {"xs": xs, "xs_indices": xs_indices, "hs": hs, "os": os_, "ps": ps,
                "targets": inputs[1:], "loss": loss}  # fmt: skip

    def _backward(self, fwd: dict, clip: float) -> dict:
        xs, hs, ps, targets = fwd["xs"], fwd["hs"], fwd["ps"], fwd["targets"]
        W_hh = self.W_hh.data.numpy()
        W_hy = self.W_hy.data.numpy()
        dW_xh = np.zeros_like(self.W_xh.data.numpy())
        dW_hh = np.zeros_like(self.W_hh.data.numpy())
        dW_hy = np.zeros_like(self.W_hy.data.numpy())
        db_h = np.zeros_like(self.b_h.data.numpy())
        db_y = np.zeros_like(self.b_y.data.numpy())
        dh_next = np.zeros((self.H, 1))
        per_step_grad_norm = []
        for t in reversed(range(len(targets))):
            do = ps[t].copy()
            do[targets[t]] -= 1.0
            dW_hy += do @ hs[t].T
            db_y += do
            dh = W_hy.T @ do + dh_next
            dh_raw = (1.0 - hs[t] ** 2) * dh
            dW_xh += dh_raw @ xs[t].T
            dW_hh += dh_raw @ hs[t - 1].T
            db_h += dh_raw
            dh_next = W_hh.T @ dh_raw
            per_step_grad_norm.append(float(np.linalg.norm(dh_next)))
        per_step_grad_norm.reverse()
        grads = [dW_xh, dW_hh, dW_hy, db_h, db_y]
        total_grad_norm = float(np.sqrt(sum(np.sum(g**2) for g in grads)))
        clipped = (clip > 0) and (total_grad_norm > clip)
        clip_ratio = 1.0
        if clipped:
            clip_ratio = clip / total_grad_norm
            for g in grads:
                g *= clip_ratio
        grad_norms = {n: float(np.linalg.norm(g)) for n, g in zip(self.names, grads)}
        return {"dW_xh": dW_xh, "dW_hh": dW_hh, "dW_hy": dW_hy, "db_h": db_h, "db_y": db_y,
                "grad_norms": grad_norms, "total_grad_norm": total_grad_norm,
                "clipped": clipped, "clip_ratio": clip_ratio,
                "per_step_grad_norm": per_step_grad_norm}  # fmt: skip

    def _apply_update(self, grads: dict, lr: float) -> None:
        torch = self.torch
        for name in self.names:
            param = getattr(self, name)
            v = self.cfg.momentum * self.velocity[name] - lr * grads[f"d{name}"]
            self.velocity[name] = v
            delta = torch.from_numpy(v).to(param.dtype)
            with torch.no_grad():
                param.data.add_(delta)

    def step(self) -> None:
        cfg = self.cfg
        self.step_count += 1
        if self.pointer + cfg.seq_len + 1 >= len(self.train_data):
            self.pointer = 0
            self.h = np.zeros((self.H, 1))
        inputs = self.train_data[self.pointer : self.pointer + cfg.seq_len + 1]
        self.pointer += cfg.seq_len
        lr = step_decay_lr(self.step_count, cfg.lr, 1.0, 1000)
        fwd = self._forward(inputs, self.h)
        self.h = fwd["hs"][cfg.seq_len - 1].copy()
        grads = self._backward(fwd, cfg.clip)
        self._apply_update(grads, lr)
        avg_loss = float(fwd["loss"] / cfg.seq_len)
        self.loss_curve.append({"step": self.step_count, "loss": round(avg_loss, 6)})
        W_hh_eigs = np.linalg.eigvals(self.W_hh.data.numpy())
        self.spectral_radius = float(np.max(np.abs(W_hh_eigs)))
        self.loss = avg_loss


# --------------------------------------------------------------------------------------
# (c) torch autograd
# --------------------------------------------------------------------------------------


class TorchLoop:
    """torch.nn.RNN(tanh) + nn.Linear on one-hot inputs, autograd, clip, torch.optim.SGD."""

    def __init__(self, cfg: BenchConfig, text: str, threads: int = 1):
        import torch
        from torch import nn

        self.torch = torch
        self.F = torch.nn.functional
        self.cfg = cfg
        self.threads = threads
        self.label = f"torch autograd, {threads} thread{'s' if threads > 1 else ''}"
        self.task = CharTextTask(text, seq_len=cfg.seq_len, batch_size=cfg.batch_size)
        V = self.task.vocab.size
        self.V = V
        self.dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
        with self._threads():
            torch.manual_seed(42)
            self.rnn = nn.RNN(V, cfg.hidden_size, nonlinearity="tanh").to(self.dtype)
            self.head = nn.Linear(cfg.hidden_size, V).to(self.dtype)
            self.parameters = list(self.rnn.parameters()) + list(self.head.parameters())
            self.opt = torch.optim.SGD(
                self.parameters, lr=cfg.lr, momentum=cfg.momentum, dampening=cfg.dampening
            )
        self.h = torch.zeros(1, cfg.batch_size, cfg.hidden_size, dtype=self.dtype)
        self.loss = math.nan

    def _threads(self):
        return _TorchThreads(self.torch, self.threads)

    def step(self) -> None:
        torch, F, cfg = self.torch, self.F, self.cfg
        batch = self.task.next_batch()
        if batch.reset_h:
            self.h = torch.zeros_like(self.h)
        # torch wants int64 indices; the task keeps compact unsigned ids
        x = F.one_hot(torch.from_numpy(batch.inputs.astype(np.int64)), self.V).to(self.dtype)
        y = torch.from_numpy(batch.targets.astype(np.int64)).reshape(-1)  # (T*B,)
        out, h_last = self.rnn(x, self.h)
        logits = self.head(out).reshape(-1, self.V)
        loss = F.cross_entropy(logits, y, reduction="sum") / cfg.batch_size
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.parameters, cfg.clip)
        self.opt.step()
        self.h = h_last.detach()  # truncated BPTT
        self.loss = float(loss.detach()) / cfg.seq_len


class _TorchThreads:
    """Run with torch.set_num_threads(n), restoring the previous count after."""

    def __init__(self, torch, n: int):
        self.torch, self.n = torch, n

    def __enter__(self):
        self.previous = self.torch.get_num_threads()
        self.torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        self.torch.set_num_threads(self.previous)


# --------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------


@dataclass
class Timing:
    label: str
    steps_per_round: int
    rates: list[float] = field(default_factory=list)  # steps/s of each round

    @property
    def best(self) -> float:
        return max(self.rates)

    @property
    def median(self) -> float:
        return statistics.median(self.rates)


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
            with _threads_of(c):
                t0 = time.perf_counter()
                for _ in range(n):
                    c.step()
                elapsed = time.perf_counter() - t0
            timings[i].rates.append(n / max(elapsed, 1e-12))
    for c in contenders:
        if not math.isfinite(c.loss):
            raise RuntimeError(f"{c.label}: the loss became {c.loss} while timing")
    return timings


class _NoThreads:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None


def _threads_of(contender):
    return contender._threads() if isinstance(contender, TorchLoop) else _NoThreads()


def time_trainer(steps: int, repeats: int, workdir: Path) -> dict[str, list[float]]:
    """Wall time of rnn_lab.run.trainer.train for the seed's run, recording on and off."""
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


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def _machine_line() -> str:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1/5/15 min)"
    )


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
        description="Speed of rnn_lab's engine against a seed-style loop and torch autograd.",
    )
    parser.add_argument("--quick", action="store_true", help="few steps: a smoke run for CI")
    parser.add_argument(
        "--steps",
        type=int,
        help="rnn_lab's steps per timed round at the seed configuration (default 1000); the "
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
    parser.add_argument("--json", type=Path, help="also write the numbers to this file")
    return parser


def main_bench(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    quick = args.quick
    plan = {
        "steps": args.steps or (20 if quick else 1000),
        "large_steps": args.large_steps or (2 if quick else 60),
        "rounds": args.rounds or (2 if quick else 5),
        "warmup": 2 if quick else 20,
        "torch_threads": args.torch_threads,
    }
    import torch

    text = generate_elman_corpus()
    results: dict = {"machine": _machine_line(), "numpy": np.__version__,
                     "torch": torch.__version__}  # fmt: skip
    print("rnn_lab speed benchmark")
    print(f"  machine: {results['machine']}")
    print(
        f"  numpy {np.__version__}, OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}"
        f"; torch {torch.__version__}, torch.set_num_threads(1) unless a row says otherwise "
        "(rnn_lab pins one BLAS/OpenMP thread per process, so 1 is also this process's default)"
    )
    print(
        f"  timing: best of {plan['rounds']} interleaved rounds after {plan['warmup']} warm-up "
        "steps, wall clock"
    )
    results["seed"] = _bench_seed_config(text, plan)
    results["large"] = _bench_large_config(text, plan)
    if not args.no_trainer:
        trainer_steps = args.trainer_steps or (200 if quick else 30_000)
        results["trainer"] = _bench_trainer(
            trainer_steps, args.trainer_repeats or (1 if quick else 2)
        )
    print()
    print(f"  load average at the end: {_machine_line().split('load average ')[1]}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def _bench_seed_config(text: str, plan: dict) -> list[dict]:
    cfg = SEED_CONFIG
    ours = RnnLabLoop(cfg, text)
    contenders = [ours, SeedStyleLoop(cfg, text), TorchLoop(cfg, text, threads=1)]
    if plan["torch_threads"] > 1:
        contenders.append(TorchLoop(cfg, text, threads=plan["torch_threads"]))
    print()
    print(f"seed configuration: Elman corpus V={ours.state.task.vocab.size}, {cfg.describe()}")
    timings = time_interleaved(contenders, plan["steps"], plan["rounds"], plan["warmup"])
    for line in _table(timings, timings[0]):
        print(line)
    for other, target, name in (
        (1, TARGET_VS_SEED_LOOP, "seed-style loop"),
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
    print(f"large configuration: {cfg.describe()} (seed-style loop: n/a, it has no batch axis)")
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
        f"trainer: rnn_lab.run.trainer.train, the seed's run (default settings), "
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


def _timings_json(timings: list[Timing]) -> list[dict]:
    return [
        {
            "label": t.label,
            "steps_per_round": t.steps_per_round,
            "rates": t.rates,
            "best": t.best,
            "median": t.median,
        }  # fmt: skip
        for t in timings
    ]
