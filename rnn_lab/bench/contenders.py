"""What ``rnn-lab bench`` times: each contender is a training loop with ``step()``, a ``label``
and the last ``loss`` (torch's loops also a ``thread_context()``, their thread count). See
rnn_lab.bench.speed for the benchmark they make up.

  RnnLabLoop        (a) the trainer's own step, rnn_lab.run.step.train_step (also a gated cell)
  WalkthroughStyleLoop  (b) the walkthrough's loop (seeds/train_walkthrough.txt)
  TorchLoop         (c) torch.nn.RNN + nn.Linear with autograd
  GatedCoreLoop     (e) rnn_lab.core.gated's calls in the trainer's order (gated_contender)
  TorchGatedLoop    (e) torch.nn.GRU / nn.LSTM with autograd
  MinCharRnnLoop    (f) Karpathy's min-char-rnn.py loop
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rnn_lab.core.data import CharTextTask
from rnn_lab.core.optim import step_decay_lr
from rnn_lab.run.lifecycle import build_params
from rnn_lab.run.settings import TrainSettings
from rnn_lab.run.state import TrainState
from rnn_lab.run.step import train_step

MIN_CHAR_SIZES = (64, 100)  # the walkthrough's H and min-char-rnn's default hidden_size


@dataclass(frozen=True)
class BenchConfig:
    name: str
    hidden_size: int
    seq_len: int
    batch_size: int
    dtype: str
    lr: float = 0.01
    momentum: float = 0.9
    dampening: float = 0.9  # the trainer's default SGD: the walkthrough's moving-average momentum
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


WALKTHROUGH_CONFIG = BenchConfig(
    "walkthrough", hidden_size=64, seq_len=25, batch_size=1, dtype="float64"
)
LARGE_CONFIG = BenchConfig("large", hidden_size=256, seq_len=50, batch_size=32, dtype="float32")


def min_char_config(hidden_size: int) -> BenchConfig:
    """min-char-rnn's algorithm: Adagrad lr 0.1, every gradient entry clipped to [-5, 5]."""
    return BenchConfig(
        f"min-char H={hidden_size}", hidden_size=hidden_size, seq_len=25, batch_size=1,
        dtype="float64", lr=0.1, optim="adagrad", clip_mode="value",
    )  # fmt: skip


def min_char_trainer_settings(cfg: BenchConfig, steps: int) -> TrainSettings:
    """The walkthrough's run (default recording, validation, Jacobians, samples, checkpoints) with
    min-char-rnn's algorithm: Adagrad lr 0.1, element-wise clipping at 5, H from cfg."""
    return TrainSettings(
        steps=steps,
        hidden_size=cfg.hidden_size,
        lr=cfg.lr,
        clip=cfg.clip,
        clip_mode=cfg.clip_mode,
        optim=cfg.optim_settings(),
    )


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
# (b) the walkthrough's loop, as in seeds/train_walkthrough.txt
# --------------------------------------------------------------------------------------


class WalkthroughStyleLoop:
    """The walkthrough's train.py inner loop: per-step dicts, (V, 1) columns, eigvals every step.

    Parameters live in torch nn.Parameters and are read with .data.numpy() at every call, as
    in the walkthrough. They are float64 here (the walkthrough's are float32 against a
    float64 h, which would add up-casting copies to its time): both loops then do float64
    arithmetic.
    """

    label = "walkthrough-style loop"

    def __init__(self, cfg: BenchConfig, text: str):
        import torch
        from torch import nn

        if cfg.batch_size != 1:
            raise ValueError("the walkthrough's loop has no batch axis (B must be 1)")
        self.torch = torch
        self.cfg = cfg
        task = CharTextTask(text, seq_len=cfg.seq_len)
        self.train_data = [int(i) for i in task.train_ids]  # the walkthrough encodes to a list
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
        with self.thread_context():
            torch.manual_seed(42)
            self.rnn = nn.RNN(V, cfg.hidden_size, nonlinearity="tanh").to(self.dtype)
            self.head = nn.Linear(cfg.hidden_size, V).to(self.dtype)
            self.parameters = list(self.rnn.parameters()) + list(self.head.parameters())
            self.opt = torch.optim.SGD(
                self.parameters, lr=cfg.lr, momentum=cfg.momentum, dampening=cfg.dampening
            )
        self.h = torch.zeros(1, cfg.batch_size, cfg.hidden_size, dtype=self.dtype)
        self.loss = math.nan

    def thread_context(self):
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
        with self.thread_context():
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

    def thread_context(self):
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
