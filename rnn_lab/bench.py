"""Speed: rnn_lab against a seed-style loop, a min-char-rnn-style loop and torch autograd.

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
      recording, and again with record=false;
  (e) the gated cells: rnn_lab's GRU and LSTM step (train_step with cell=gru/lstm once the
      trainer has a ``cell`` setting, else rnn_lab.core.gated's forward, loss, backward with
      clipping and SGD on the packed flat buffer, state carried) against torch.nn.GRU /
      nn.LSTM + nn.Linear with autograd, clip_grad_norm_ and torch.optim.SGD, at both
      configurations;
  (f) a min-char-rnn-style loop (Karpathy's min-char-rnn.py: dicts per time step, (V, 1)
      columns, element-wise clipping to [-5, 5], Adagrad lr 0.1; no eigenvalues) from the same
      weights on the same text, against rnn_lab's step and the whole trainer (the seed's run
      with default recording and optim=adagrad lr=0.1 clip_mode=value clip=5), at H=64 and
      H=100 (min-char-rnn's default): the trainer's speed-up and its overhead per step over
      the engine step, the trainer's whole run set against runs of the same duration of the
      engine and of the min-char loop, alternating with it.

``--profile-trainer`` instead prints a cProfile of a 5,000-step trainer run at H=64 (the
min-char-rnn settings of (f), default recording). ``--stacked`` hands the other arguments to
rnn_lab.bench_stacked (the stacked-layers benchmark).

The contenders run in rounds of about equal duration, interleaved, and each one's best round
counts: on a shared machine the best round is the one least disturbed by other work. The
median is printed too. torch runs with one thread (as rnn_lab, which pins one BLAS thread
per process); --torch-threads N adds a row with N.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rnn_lab import bench_memory as memory
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
TARGET_GATED_VS_TORCH = 1.0  # issue 12: the gated cells at least as fast as torch (seed config)
TARGET_TRAINER_VS_MIN_CHAR = 5.0  # issue 11: the whole trainer vs a min-char-rnn-style loop (H=64)
TARGET_TRAINER_OVERHEAD = 0.15  # issue 11: trainer time per step / engine step - 1
MIN_CHAR_SIZES = (64, 100)  # the seed's H and min-char-rnn's default hidden_size


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
    optim: str = "sgd"  # or "adagrad" (min-char-rnn's)
    clip_mode: str = "norm"  # or "value" (element-wise, min-char-rnn's)

    def describe(self) -> str:
        if self.optim == "adagrad":
            return (
                f"H={self.hidden_size}, seq_len={self.seq_len}, B={self.batch_size}, "
                f"{self.dtype}, Adagrad lr {self.lr}, clip {self.clip:g} ({self.clip_mode})"
            )
        return (
            f"H={self.hidden_size}, seq_len={self.seq_len}, B={self.batch_size}, {self.dtype}, "
            f"SGD momentum {self.momentum}, lr {self.lr}, clip {self.clip:g}"
        )

    def optim_settings(self) -> dict:
        """The trainer's ``optim`` setting for this configuration."""
        if self.optim == "adagrad":
            return {"name": "adagrad"}
        return {"name": "sgd", "momentum": self.momentum, "dampening": self.dampening}


SEED_CONFIG = BenchConfig("seed", hidden_size=64, seq_len=25, batch_size=1, dtype="float64")
LARGE_CONFIG = BenchConfig("large", hidden_size=256, seq_len=50, batch_size=32, dtype="float32")


def min_char_config(hidden_size: int) -> BenchConfig:
    """min-char-rnn's algorithm: Adagrad lr 0.1, every gradient entry clipped to [-5, 5]."""
    return BenchConfig(
        f"min-char H={hidden_size}", hidden_size=hidden_size, seq_len=25, batch_size=1,
        dtype="float64", lr=0.1, optim="adagrad", clip_mode="value",
    )  # fmt: skip


# --------------------------------------------------------------------------------------
# (a) rnn_lab: the trainer's inner step
# --------------------------------------------------------------------------------------


class RnnLabLoop:
    """Exactly the trainer's step: rnn_lab.run.step.train_step on a TrainState built the way
    the trainer builds it, with recording off (no history rows, which would add eigenvalues
    every 10-100 steps; the trainer with its recording is timed separately in (d))."""

    label = "rnn_lab engine"

    def __init__(self, cfg: BenchConfig, text: str, cell: str | None = None):
        self.cfg = cfg
        extra = {}
        if cell is not None:  # a gated cell through the trainer's own step (see GATED_PATH)
            extra["cell"] = {"name": cell}
            self.label = f"rnn_lab {cell.upper()}"
        self.settings = TrainSettings(
            steps=10**9,  # never the "last step" of the schedule
            hidden_size=cfg.hidden_size,
            seq_len=cfg.seq_len,
            batch_size=cfg.batch_size,
            dtype=cfg.dtype,
            lr=cfg.lr,
            clip=cfg.clip,
            clip_mode=cfg.clip_mode,
            optim=cfg.optim_settings(),
            # The step alone: no history rows (their eigenvalues) and no validation; the
            # trainer's recording is timed separately in (d).
            record=False,
            record_interval=0,
            record_dense_until=0,
            val_interval=0,
            **extra,
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


# --------------------------------------------------------------------------------------
# (e) the gated cells: rnn_lab.core.gated against torch.nn.GRU / nn.LSTM
# --------------------------------------------------------------------------------------


def trainer_runs_gated_cells() -> bool:
    """Whether the trainer's settings have a ``cell`` (the gated cells integrated into
    train_step): the gated rows then time train_step itself, as the vanilla row does."""
    return "cell" in getattr(TrainSettings, "__dataclass_fields__", {})


class GatedCoreLoop:
    """rnn_lab's gated engine step from its core calls, in the trainer's order: forward,
    loss, BPTT with global-norm clipping, SGD momentum on the packed flat buffer, the state
    (h, or (h, c)) carried. The weights are torch's own (init="torch", seed 42), so the
    torch contender starts from the same network."""

    def __init__(self, cell: str, cfg: BenchConfig, text: str):
        from rnn_lab.core import gated
        from rnn_lab.core.losses import get_loss
        from rnn_lab.core.optim import make_optimizer
        from rnn_lab.run.settings import DTYPES

        self.gated, self.cell, self.cfg = gated, cell, cfg
        self.label = f"rnn_lab {cell.upper()}"
        self.task = CharTextTask(text, seq_len=cfg.seq_len, batch_size=cfg.batch_size)
        V = self.task.vocab.size
        self.dtype = DTYPES[cfg.dtype]
        self.params = gated.pack(_torch_init(cell, V, cfg.hidden_size, self.dtype))
        optim = cfg.optim_settings()
        self.optimizer = make_optimizer(optim.pop("name"), **optim)
        self.loss_fn = get_loss(self.task.loss_name)
        self.state = gated.zero_state(cell, cfg.batch_size, cfg.hidden_size, self.dtype)
        self.step_count = 0
        self.loss = math.nan

    def step(self) -> None:
        gated, cfg, params = self.gated, self.cfg, self.params
        batch = self.task.next_batch()
        self.step_count += 1
        if batch.reset_h:
            self.state = gated.zero_state(self.cell, cfg.batch_size, cfg.hidden_size, self.dtype)
        lr = step_decay_lr(self.step_count, cfg.lr, 1.0, 1000)
        cache = gated.forward(params, batch.inputs, self.state)
        loss_sum, dlogits, n_counted = self.loss_fn(cache.logits, batch.targets, batch.mask)
        grads = gated.backward(params, cache, dlogits, clip=cfg.clip, clip_mode=cfg.clip_mode)
        self.optimizer.step({"flat": params.flat}, {"flat": grads.flat}, lr)
        self.state = cache.final_state  # carried forward; the gradient is truncated here
        self.loss = loss_sum / n_counted


def _torch_init(cell: str, V: int, H: int, dtype):
    """torch's own initial weights of nn.GRU/LSTM(V, H) + nn.Linear(H, V) after seed 42."""
    from rnn_lab.core import inits

    return inits.init_params(V, H, V, init="torch", seed=42, dtype=dtype, cell=cell)


def gated_contender(cell: str, cfg: BenchConfig, text: str):
    """The trainer's train_step with ``cell`` when the trainer runs gated cells, else the
    same sequence of core calls (GatedCoreLoop). ``.path`` says which."""
    if trainer_runs_gated_cells():
        try:
            loop = RnnLabLoop(cfg, text, cell=cell)
            loop.step()  # fails here, not mid-timing, if train_step cannot run this cell
        except Exception as e:  # noqa: BLE001 - reported, and the core calls timed instead
            print(f"  note: train_step with cell={cell} failed ({type(e).__name__}: {e}); "
                  "timing the core calls instead")  # fmt: skip
        else:
            loop.path = "train_step"
            return loop
    loop = GatedCoreLoop(cell, cfg, text)
    loop.path = "core calls"
    return loop


class TorchGatedLoop:
    """torch.nn.GRU / nn.LSTM + nn.Linear on one-hot inputs, autograd, clip_grad_norm_,
    torch.optim.SGD (the trainer's momentum and dampening), the state carried detached."""

    def __init__(self, cell: str, cfg: BenchConfig, text: str, threads: int = 1):
        import torch
        from torch import nn

        self.torch, self.F, self.cfg, self.threads = torch, torch.nn.functional, cfg, threads
        self.label = f"torch {cell.upper()}, {threads} thread{'s' if threads > 1 else ''}"
        self.task = CharTextTask(text, seq_len=cfg.seq_len, batch_size=cfg.batch_size)
        V = self.V = self.task.vocab.size
        self.dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
        module = nn.GRU if cell == "gru" else nn.LSTM
        with self._threads():
            torch.manual_seed(42)  # the same draws as inits.init_params(init="torch", seed=42)
            self.rnn = module(V, cfg.hidden_size).to(self.dtype)
            self.head = nn.Linear(cfg.hidden_size, V).to(self.dtype)
            self.parameters = list(self.rnn.parameters()) + list(self.head.parameters())
            self.opt = torch.optim.SGD(
                self.parameters, lr=cfg.lr, momentum=cfg.momentum, dampening=cfg.dampening
            )
        n_state = 2 if cell == "lstm" else 1
        shape = (1, cfg.batch_size, cfg.hidden_size)
        self.zero = tuple(torch.zeros(shape, dtype=self.dtype) for _ in range(n_state))
        self.state = self.zero
        self.loss = math.nan

    def _threads(self):
        return _TorchThreads(self.torch, self.threads)

    def step(self) -> None:
        torch, F, cfg = self.torch, self.F, self.cfg
        batch = self.task.next_batch()
        if batch.reset_h:
            self.state = self.zero
        x = F.one_hot(torch.from_numpy(batch.inputs.astype(np.int64)), self.V).to(self.dtype)
        y = torch.from_numpy(batch.targets.astype(np.int64)).reshape(-1)  # (T*B,)
        out, state = self.rnn(x, self.state if len(self.state) == 2 else self.state[0])
        logits = self.head(out).reshape(-1, self.V)
        loss = F.cross_entropy(logits, y, reduction="sum") / cfg.batch_size
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.parameters, cfg.clip)
        self.opt.step()
        state = state if isinstance(state, tuple) else (state,)
        self.state = tuple(s.detach() for s in state)  # truncated BPTT
        self.loss = float(loss.detach()) / cfg.seq_len


# --------------------------------------------------------------------------------------
# (f) a min-char-rnn-style loop (Karpathy's min-char-rnn.py)
# --------------------------------------------------------------------------------------


class MinCharRnnLoop:
    """min-char-rnn's lossFun and main loop: xs/hs/ys/ps dicts per time step, (V, 1) one-hot
    columns, tanh, every gradient entry clipped to [-5, 5] (np.clip out=), Adagrad
    (mem += d * d; p -= lr d / sqrt(mem + 1e-8)), inputs read from the text through a
    char-to-index dict each step, h carried; no eigenvalues. Its printing and the sample
    every 100 steps are left out (they would only slow it down). The weights start as a
    copy of ``params`` (an rnn_lab engine.Params: the rnn_lab row's initial weights)."""

    label = "min-char-rnn-style loop"

    def __init__(self, cfg: BenchConfig, text: str, params):
        if cfg.batch_size != 1:
            raise ValueError("min-char-rnn has no batch axis (B must be 1)")
        self.cfg = cfg
        task = CharTextTask(text, seq_len=cfg.seq_len)
        self.data = task.vocab.decode(task.train_ids)  # the rnn_lab row's training text
        self.char_to_ix = dict(task.vocab.index)
        self.vocab_size = task.vocab.size
        self.Wxh = np.array(params.W_xh, dtype=np.float64)  # (H, V)
        self.Whh = np.array(params.W_hh, dtype=np.float64)  # (H, H)
        self.Why = np.array(params.W_hy, dtype=np.float64)  # (V, H)
        self.bh = np.array(params.b_h, dtype=np.float64).reshape(-1, 1)  # (H, 1)
        self.by = np.array(params.b_y, dtype=np.float64).reshape(-1, 1)  # (V, 1)
        self.mem = [np.zeros_like(p) for p in (self.Wxh, self.Whh, self.Why, self.bh, self.by)]
        self.hprev = np.zeros((cfg.hidden_size, 1))
        self.p = 0
        self.n = 0
        self.smooth_loss = -np.log(1.0 / self.vocab_size) * cfg.seq_len
        self.loss = math.nan

    def loss_fun(self, inputs, targets, hprev):
        """min-char-rnn's lossFun: loss, gradients (clipped) and the last hidden state."""
        Wxh, Whh, Why, bh, by = self.Wxh, self.Whh, self.Why, self.bh, self.by
        xs, hs, ys, ps = {}, {}, {}, {}
        hs[-1] = np.copy(hprev)
        loss = 0
        for t in range(len(inputs)):
            xs[t] = np.zeros((self.vocab_size, 1))
            xs[t][inputs[t]] = 1
            hs[t] = np.tanh(np.dot(Wxh, xs[t]) + np.dot(Whh, hs[t - 1]) + bh)
            ys[t] = np.dot(Why, hs[t]) + by
            ps[t] = np.exp(ys[t]) / np.sum(np.exp(ys[t]))
            loss += -np.log(ps[t][targets[t], 0])
        dWxh, dWhh, dWhy = np.zeros_like(Wxh), np.zeros_like(Whh), np.zeros_like(Why)
        dbh, dby = np.zeros_like(bh), np.zeros_like(by)
        dhnext = np.zeros_like(hs[0])
        for t in reversed(range(len(inputs))):
            dy = np.copy(ps[t])
            dy[targets[t]] -= 1
            dWhy += np.dot(dy, hs[t].T)
            dby += dy
            dh = np.dot(Why.T, dy) + dhnext
            dhraw = (1 - hs[t] * hs[t]) * dh
            dbh += dhraw
            dWxh += np.dot(dhraw, xs[t].T)
            dWhh += np.dot(dhraw, hs[t - 1].T)
            dhnext = np.dot(Whh.T, dhraw)
        for dparam in [dWxh, dWhh, dWhy, dbh, dby]:
            np.clip(dparam, -5, 5, out=dparam)
        return loss, dWxh, dWhh, dWhy, dbh, dby, hs[len(inputs) - 1]

    def step(self) -> None:
        seq_length, data = self.cfg.seq_len, self.data
        if self.p + seq_length + 1 >= len(data) or self.n == 0:
            self.hprev = np.zeros_like(self.hprev)
            self.p = 0
        inputs = [self.char_to_ix[ch] for ch in data[self.p : self.p + seq_length]]
        targets = [self.char_to_ix[ch] for ch in data[self.p + 1 : self.p + seq_length + 1]]
        loss, dWxh, dWhh, dWhy, dbh, dby, self.hprev = self.loss_fun(inputs, targets, self.hprev)
        self.smooth_loss = self.smooth_loss * 0.999 + loss * 0.001
        lr = self.cfg.lr
        for param, dparam, mem in zip(
            [self.Wxh, self.Whh, self.Why, self.bh, self.by],
            [dWxh, dWhh, dWhy, dbh, dby],
            self.mem,
        ):
            mem += dparam * dparam
            param += -lr * dparam / np.sqrt(mem + 1e-8)
        self.p += seq_length
        self.n += 1
        self.loss = loss / seq_length


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


def _run_for(contender, steps: int) -> tuple[float, float]:
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
            elapsed, cpu = _run_for(c, n)
            timings[i].rates.append(n / max(elapsed, 1e-12))
            timings[i].cpu_rates.append(n / max(cpu, 1e-12))
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
    torch_loops = (TorchLoop, TorchGatedLoop)
    return contender._threads() if isinstance(contender, torch_loops) else _NoThreads()


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


def min_char_trainer_settings(cfg: BenchConfig, steps: int) -> TrainSettings:
    """The seed's run (default recording, validation, Jacobians, samples, checkpoints) with
    min-char-rnn's algorithm: Adagrad lr 0.1, element-wise clipping at 5, H from cfg."""
    return TrainSettings(
        steps=steps,
        hidden_size=cfg.hidden_size,
        lr=cfg.lr,
        clip=cfg.clip,
        clip_mode=cfg.clip_mode,
        optim=cfg.optim_settings(),
    )


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
        f"us/step); machine: {_machine_line()}"
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
        description="Speed of rnn_lab's engine and trainer against a seed-style loop, a "
        "min-char-rnn-style loop and torch autograd (RNN, GRU, LSTM).",
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
    parser.add_argument("--no-gated", action="store_true", help="skip the GRU / LSTM rows")
    parser.add_argument(
        "--gated-steps",
        type=int,
        help="rnn_lab GRU's steps per timed round at the seed configuration (default 300)",
    )
    parser.add_argument(
        "--no-min-char", action="store_true", help="skip the min-char-rnn-style comparison"
    )
    parser.add_argument(
        "--min-char-trainer-steps",
        type=int,
        help="steps of each trainer run in the min-char-rnn comparison (default 30000, the "
        "seed's run)",
    )
    parser.add_argument(
        "--stacked",
        action="store_true",
        help="the stacked-layers benchmark instead (rnn_lab.bench_stacked; the other "
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
    return parser


def main_bench(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--stacked" in argv:  # every other argument is the stacked benchmark's own
        from rnn_lab.bench_stacked import main as main_stacked

        return main_stacked([a for a in argv if a != "--stacked"])
    args = _parser().parse_args(argv)
    memory.reuse_freed_memory()  # every contender's loop, without fresh pages each step
    if args.profile_trainer:
        return profile_trainer(args.profile_trainer)
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
    results: dict = {"machine": _machine_line(), "numpy": np.__version__,
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
    results["seed"] = _bench_seed_config(text, plan)
    results["large"] = _bench_large_config(text, plan)
    if not args.no_gated:
        results["gated"] = {
            "seed": _bench_gated(SEED_CONFIG, text, plan["gated_steps"], plan),
            "large": _bench_gated(LARGE_CONFIG, text, plan["large_steps"], plan),
        }
    if not args.no_min_char:
        results["min_char"] = [_bench_min_char(H, text, plan) for H in MIN_CHAR_SIZES]
    if not args.no_trainer:
        trainer_steps = args.trainer_steps or (200 if quick else 30_000)
        results["trainer"] = _bench_trainer(trainer_steps, plan["trainer_repeats"])
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
        target = TARGET_GATED_VS_TORCH if cfg.name == "seed" else None
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
        f"  (trainer: rnn_lab.run.trainer.train, the seed's run with default recording, "
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
                wall, cpu = _run_for(contender, n)
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
