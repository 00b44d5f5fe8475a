"""Optimisers on dicts of NumPy arrays, with torch.optim's update rules.

State is a dict of arrays per parameter so it can go into a checkpoint as it is. Each
optimiser updates the arrays in place. ``frozen`` names parameters that never change: they
are skipped entirely (no update, no state), so a frozen W_hh stays bit-identical whatever
momentum or Adam moments would have done.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SGD:
    """SGD with momentum, as torch.optim.SGD: buf = mu buf + (1 - dampening) g (buf = g at
    the first step); p -= lr buf.

    dampening = momentum makes buf an exponential moving average of the gradients, the walkthrough's
    form (v = m v + (1 - m) g; p -= lr v): the step size stays lr instead of lr / (1 - m).
    """

    momentum: float = 0.9
    dampening: float = 0.0
    nesterov: bool = False
    state: dict[str, np.ndarray] = field(default_factory=dict)

    def step(self, params: dict, grads: dict, lr: float, frozen: frozenset = frozenset()):
        for name, p in params.items():
            if name in frozen:
                continue
            g = grads[name]
            if self.momentum != 0.0:
                buf = self.state.get(f"{name}.momentum_buffer")
                if buf is None:
                    buf = g.copy()
                    self.state[f"{name}.momentum_buffer"] = buf
                else:
                    buf *= self.momentum
                    buf += (1.0 - self.dampening) * g if self.dampening else g
                d = g + self.momentum * buf if self.nesterov else buf
            else:
                d = g
            p -= lr * d


@dataclass
class Adagrad:
    """Adagrad as torch.optim.Adagrad (min-char-rnn): mem += g^2; p -= lr g / (sqrt(mem)+eps)."""

    eps: float = 1e-10
    initial_accumulator_value: float = 0.0
    state: dict[str, np.ndarray] = field(default_factory=dict)

    def step(self, params: dict, grads: dict, lr: float, frozen: frozenset = frozenset()):
        for name, p in params.items():
            if name in frozen:
                continue
            g = grads[name]
            mem = self.state.get(f"{name}.sum")
            if mem is None:
                mem = np.full_like(p, self.initial_accumulator_value)
                self.state[f"{name}.sum"] = mem
            mem += g * g
            p -= lr * g / (np.sqrt(mem) + self.eps)


@dataclass
class Adam:
    """Adam as torch.optim.Adam (bias-corrected moments, eps outside the sqrt)."""

    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    state: dict[str, np.ndarray] = field(default_factory=dict)

    def step(self, params: dict, grads: dict, lr: float, frozen: frozenset = frozenset()):
        t = int(self.state.get("step", np.zeros(())).item()) + 1
        self.state["step"] = np.array(t, dtype=np.int64)
        bc1 = 1.0 - self.beta1**t
        bc2 = 1.0 - self.beta2**t
        for name, p in params.items():
            if name in frozen:
                continue
            g = grads[name]
            m = self.state.setdefault(f"{name}.exp_avg", np.zeros_like(p))
            v = self.state.setdefault(f"{name}.exp_avg_sq", np.zeros_like(p))
            m *= self.beta1
            m += (1.0 - self.beta1) * g
            v *= self.beta2
            v += (1.0 - self.beta2) * g * g
            denom = np.sqrt(v) / np.sqrt(bc2) + self.eps
            p -= (lr / bc1) * m / denom


OPTIMIZERS = {"sgd": SGD, "adagrad": Adagrad, "adam": Adam}


def make_optimizer(name: str, **settings):
    try:
        cls = OPTIMIZERS[name]
    except KeyError:
        raise ValueError(
            f"optim.name: unknown {name!r}; valid: {', '.join(sorted(OPTIMIZERS))}"
        ) from None
    return cls(**settings)


def step_decay_lr(step: int, lr: float, decay_rate: float, decay_every: int) -> float:
    """lr * decay_rate ** floor((step - 1) / decay_every); step counts from 1.

    decay_rate 1.0 (or decay_every 0) keeps lr constant.
    """
    if decay_rate == 1.0 or decay_every <= 0:
        return lr
    return lr * decay_rate ** ((step - 1) // decay_every)
