"""The optimisers of a stack: rnn_lab.core.optim's update rules (torch.optim's) with an arm axis.

Each arm keeps its own hyperparameters (validated and defaulted by the single-run optimiser
itself) and (K, P) state rows; ``arm_state(k)`` / ``load_arm_state(k, ...)`` give and take
exactly the single run's optimizer state, so a stacked arm checkpoints and resumes as a single
run does. The update is elementwise per arm: the same bits on any block of arms.

Why the single run's optimisers are not these at K = 1: they step any cell's named
parameters (rnn_lab.core.optim, checked against torch.optim in tests/test_optim.py), and
at K = 1 these cost more per step (2026-12-07, walkthrough sizes, P = 8,030, CPU time):
SGD 8.8 -> 15.8 us (1.8x), Adagrad 21.2 -> 24.9 us (1.17x), Adam 42 -> 44 us (1.04x);
SGD (the default) would add ~5% to the single run's ~145 us step. tests/test_stacked_engine.py
and tests/test_stacked_launcher.py hold the two to the same bits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rnn_lab.core.optim import make_optimizer
from rnn_lab.core.stacked_engine import runs_of


def _clean(settings: dict) -> dict:
    """The keyword arguments the single run gives its optimiser (run.state._optimizer)."""
    return {k: v for k, v in settings.items() if k != "name" and v is not None}


class _StackedOptimizer:
    """Per-arm hyperparameters (validated and defaulted by the single-run optimiser itself),
    (K, P) state arrays, the trainable length of each arm, and state loaded for resuming.

    The single run steps {"flat": flat[:n_trainable]}, so its state keys are "flat.<name>"
    and its buffers have length n_trainable; ``arm_state(k)`` gives exactly that (views into
    the (K, P) arrays). A frozen arm's W_hh tail is never updated; its state there is unused.
    """

    name = ""
    ARRAYS: tuple[str, ...] = ()  # (K, P) state arrays
    FLAGS: tuple[str, ...] = ()  # (K,) per-arm state (bool "has state" or the step count)

    def __init__(self, per_arm_settings: Sequence[dict]):
        self.settings = [_clean(s) for s in per_arm_settings]
        # The single-run optimisers, for their defaults, checks and hyperparameters only.
        self.singles = [make_optimizer(self.name, **s) for s in self.settings]
        self.K = len(self.singles)
        self.n_train: np.ndarray | None = None  # (K,) from the last step or a loaded state
        self._pending: dict[int, dict] = {}  # states loaded before the arrays exist
        self._columns: dict = {}  # dtype -> per-arm constants as (K, 1) columns
        # Scratch (K, P) buffers kept from step to step: at K=36, H=64 a (K, P) array is 2 MB,
        # and allocating such temporaries every step cost ~1,400 page faults per step.
        self._scratch: dict = {}
        self._block_cache: dict = {}
        for name in self.ARRAYS:
            setattr(self, name, None)
        for name in self.FLAGS:
            dtype = np.int64 if name == "steps" else bool
            setattr(self, name, np.zeros(self.K, dtype=dtype))

    def _hyper(self, attr: str) -> list:
        return [getattr(o, attr) for o in self.singles]

    def _start(self, flat: np.ndarray, grads: np.ndarray, n_trainable) -> None:
        K, P = flat.shape
        if K != self.K or grads.shape != flat.shape:
            raise ValueError(f"{type(self).__name__}: {self.K} arms, got flat {flat.shape}")
        if getattr(self, self.ARRAYS[0]) is None:
            for name in self.ARRAYS:
                setattr(self, name, np.zeros((K, P), dtype=flat.dtype))
            pending, self._pending = self._pending, {}
            for k, state in pending.items():
                self._load(k, state)
        self.n_train = np.array(n_trainable, dtype=np.int64).reshape(K)

    def _tmp(self, name: str, like: np.ndarray, dtype=None) -> np.ndarray:
        """A scratch array shaped like ``like`` (one per name, shape and dtype, kept across
        steps)."""
        dtype = like.dtype if dtype is None else np.dtype(dtype)
        key = (name, like.shape, dtype)
        buf = self._scratch.get(key)
        if buf is None:
            buf = self._scratch[key] = np.empty(like.shape, dtype=dtype)
        return buf

    def _blocks(self) -> tuple[tuple[slice, int], ...]:
        """(rows, n): maximal runs of arms with the same trainable length n. The update runs
        on flat[rows, :n] block by block, so a frozen arm's W_hh tail (n < P) is never read
        or written (the single run steps flat[:n_trainable] only); without frozen arms one
        block is the whole stack. Elementwise work: the same bits on any block."""
        key = tuple(self.n_train.tolist())
        blocks = self._block_cache.get(key)
        if blocks is None:
            blocks = tuple((slice(a, b), n) for a, b, n in runs_of(key))
            self._block_cache[key] = blocks
        return blocks

    def arm_state(self, k: int) -> dict[str, np.ndarray]:
        """Arm k's state with the single run's keys and shapes (views where possible)."""
        if getattr(self, self.ARRAYS[0]) is None:
            return dict(self._pending.get(k, {}))
        return self._arm_state(k, int(self.n_train[k]))

    def load_arm_state(self, k: int, state: dict[str, np.ndarray]) -> None:
        """Set arm k's state from a single run's optimizer.state (a checkpoint's optim.*)."""
        state = {key: np.array(v) for key, v in state.items()}
        if getattr(self, self.ARRAYS[0]) is None:
            self._pending[k] = state
        else:
            self._load(k, state)

    def _load_row(self, name: str, k: int, value: np.ndarray | None) -> None:
        row = getattr(self, name)[k]
        row.fill(0.0)
        if value is not None:
            row[: value.shape[0]] = value
            if self.n_train is not None:
                self.n_train[k] = value.shape[0]

    def select(self, keep: Sequence[int]):
        """A new optimiser for the arms ``keep`` (their state copied), as StackedParams.select."""
        keep = [int(k) for k in keep]
        new = type(self)([self.settings[k] for k in keep])
        idx = np.asarray(keep, dtype=np.intp)
        for name in self.ARRAYS:
            arr = getattr(self, name)
            setattr(new, name, None if arr is None else arr[idx])
        for name in self.FLAGS:
            setattr(new, name, getattr(self, name)[idx])
        new.n_train = None if self.n_train is None else self.n_train[idx]
        new._pending = {i: self._pending[k] for i, k in enumerate(keep) if k in self._pending}
        return new

    def _cols(self, dtype: np.dtype, names: tuple[str, ...]) -> tuple[np.ndarray, ...]:
        """Per-arm hyperparameters as (K, 1) columns of ``dtype`` (a Python float meeting an
        array of that dtype is cast to it: NumPy's weak scalars, as in the single run)."""
        key = (np.dtype(dtype), names)
        if key not in self._columns:
            self._columns[key] = tuple(
                np.array(self._hyper(n), dtype=dtype).reshape(self.K, 1) for n in names
            )
        return self._columns[key]


class StackedSGD(_StackedOptimizer):
    """optim.SGD per arm: buf = mu buf + (1 - dampening) g (buf = g at the first step);
    d = g + mu buf (nesterov) or buf; p -= lr d. momentum 0: p -= lr g, no state."""

    name = "sgd"
    ARRAYS = ("buf",)
    FLAGS = ("has_buf",)

    def __init__(self, per_arm_settings: Sequence[dict]):
        super().__init__(per_arm_settings)
        mom = np.array(self._hyper("momentum"), dtype=float) != 0.0
        self._mom = mom
        self._nesterov = mom & np.array(self._hyper("nesterov"), dtype=bool)
        self._damped = any(d != 0 for d in self._hyper("dampening"))
        # (1 - dampening) where dampened; 1.0 (exact: 1.0 * g == g) where not, as "buf += g"
        self._coef = [1.0 - d if d else 1.0 for d in self._hyper("dampening")]

    def _hyper(self, attr: str) -> list:
        if attr == "coef":
            return self._coef
        return super()._hyper(attr)

    def step(self, flat, grads, lr, n_trainable) -> None:
        """Update flat (K, P) in place; lr (K,); n_trainable (K,) (see StackedParams)."""
        self._start(flat, grads, n_trainable)
        mu, coef = self._cols(flat.dtype, ("momentum", "coef"))
        lr_col = np.asarray(lr, dtype=np.float64).astype(flat.dtype).reshape(-1, 1)
        for rows, n in self._blocks():
            g = grads[rows, :n]
            tmp = self._tmp("tmp", g)
            mom, mu_b = self._mom[rows], mu[rows]
            buf = self.buf[rows, :n]
            if not mom.any():
                d = g
            elif mom.all() and self.has_buf[rows].all():  # every step after the first
                buf *= mu_b
                if self._damped:
                    buf += np.multiply(coef[rows], g, out=tmp)  # (1 - dampening) g
                else:
                    buf += g
                d = buf
            else:
                d = self._first_or_mixed(g, buf, rows, mu_b, coef[rows])
            nesterov = self._nesterov[rows]
            if nesterov.all():
                d = np.add(g, np.multiply(mu_b, buf, out=tmp), out=tmp)  # g + mu buf
            elif nesterov.any():
                d = np.where(nesterov[:, None], g + mu_b * buf, d)
            flat[rows, :n] -= np.multiply(lr_col[rows], d, out=tmp)

    def _first_or_mixed(self, g, buf, rows: slice, mu, coef) -> np.ndarray:
        """The block's step when some arms have no momentum or no buffer yet (block-local)."""
        mom, has_buf = self._mom[rows], self.has_buf[rows]  # views: |= writes through
        new = np.flatnonzero(mom & ~has_buf)
        old = np.flatnonzero(mom & has_buf)
        if old.size:
            b = buf[old]
            b *= mu[old]
            b += coef[old] * g[old]
            buf[old] = b
        buf[new] = g[new]  # torch: the buffer starts as the first gradient
        has_buf |= mom
        return np.where(mom[:, None], buf, g)

    def _arm_state(self, k: int, n: int) -> dict:
        if not (self._mom[k] and self.has_buf[k]):
            return {}
        return {"flat.momentum_buffer": self.buf[k, :n]}

    def _load(self, k: int, state: dict) -> None:
        value = state.get("flat.momentum_buffer")
        self._load_row("buf", k, value)
        self.has_buf[k] = value is not None


class StackedAdagrad(_StackedOptimizer):
    """optim.Adagrad per arm: mem += g^2; p -= lr g / (sqrt(mem) + eps)."""

    name = "adagrad"
    ARRAYS = ("sum",)
    FLAGS = ("has_sum",)

    def step(self, flat, grads, lr, n_trainable) -> None:
        self._start(flat, grads, n_trainable)
        if not self.has_sum.all():
            for k in np.flatnonzero(~self.has_sum):
                self.sum[k] = self.singles[k].initial_accumulator_value
            self.has_sum[:] = True
        (eps,) = self._cols(flat.dtype, ("eps",))
        lr_col = np.asarray(lr, dtype=np.float64).astype(flat.dtype).reshape(-1, 1)
        for rows, n in self._blocks():
            g, mem = grads[rows, :n], self.sum[rows, :n]
            update, denom = self._tmp("tmp", g), self._tmp("denom", g)
            mem += np.multiply(g, g, out=update)
            np.multiply(lr_col[rows], g, out=update)  # lr g
            np.sqrt(mem, out=denom)
            denom += eps[rows]
            update /= denom
            flat[rows, :n] -= update

    def _arm_state(self, k: int, n: int) -> dict:
        return {"flat.sum": self.sum[k, :n]} if self.has_sum[k] else {}

    def _load(self, k: int, state: dict) -> None:
        value = state.get("flat.sum")
        self._load_row("sum", k, value)
        self.has_sum[k] = value is not None


class StackedAdam(_StackedOptimizer):
    """optim.Adam per arm (bias-corrected moments, eps outside the sqrt), each arm with its
    own step count t: bc1 = 1 - beta1^t, bc2 = 1 - beta2^t (Python floats, as the single
    run); denom = sqrt(v) / sqrt(bc2) + eps in float64 (np.sqrt(bc2) is a float64 scalar)."""

    name = "adam"
    ARRAYS = ("exp_avg", "exp_avg_sq")
    FLAGS = ("steps",)

    def step(self, flat, grads, lr, n_trainable) -> None:
        self._start(flat, grads, n_trainable)
        self.steps += 1
        b1s, b2s = self._hyper("beta1"), self._hyper("beta2")
        steps = self.steps.tolist()
        bc1 = np.array([1.0 - b1**t for b1, t in zip(b1s, steps)])
        bc2 = np.array([1.0 - b2**t for b2, t in zip(b2s, steps)])
        beta1, one_m_b1, beta2, one_m_b2 = self._cols(
            flat.dtype, ("beta1", "one_minus_beta1", "beta2", "one_minus_beta2")
        )
        (eps,) = self._cols(np.float64, ("eps",))
        sqrt_bc2 = np.sqrt(bc2)[:, None]
        step_size = (np.asarray(lr, dtype=np.float64) / bc1).astype(flat.dtype)[:, None]
        for rows, n in self._blocks():
            g, m, v = grads[rows, :n], self.exp_avg[rows, :n], self.exp_avg_sq[rows, :n]
            tmp = self._tmp("tmp", g)
            denom = self._tmp("denom", g, np.result_type(flat.dtype, np.float64))
            m *= beta1[rows]
            m += np.multiply(one_m_b1[rows], g, out=tmp)
            v *= beta2[rows]
            v += np.multiply(np.multiply(one_m_b2[rows], g, out=tmp), g, out=tmp)  # (1-b2) g g
            # sqrt(v) in the parameters' dtype, then / np.sqrt(bc2) (float64) + eps: float64
            np.divide(np.sqrt(v, out=tmp), sqrt_bc2[rows], out=denom)
            denom += eps[rows]
            np.multiply(step_size[rows], m, out=tmp)
            flat[rows, :n] -= np.divide(tmp, denom, out=denom)

    def _hyper(self, attr: str) -> list:
        if attr.startswith("one_minus_"):
            return [1.0 - b for b in super()._hyper(attr[len("one_minus_") :])]
        return super()._hyper(attr)

    def _arm_state(self, k: int, n: int) -> dict:
        if self.steps[k] == 0:
            return {}
        return {
            "step": self.steps[k : k + 1].reshape(()),
            "flat.exp_avg": self.exp_avg[k, :n],
            "flat.exp_avg_sq": self.exp_avg_sq[k, :n],
        }

    def _load(self, k: int, state: dict) -> None:
        self.steps[k] = int(state["step"]) if "step" in state else 0
        self._load_row("exp_avg", k, state.get("flat.exp_avg"))
        self._load_row("exp_avg_sq", k, state.get("flat.exp_avg_sq"))


STACKED_OPTIMIZERS = {"sgd": StackedSGD, "adagrad": StackedAdagrad, "adam": StackedAdam}


def make_stacked_optimizer(name: str, per_arm_settings: Sequence[dict]):
    """One optimiser for a stack, with each arm's settings (the single run's optim dicts:
    "name" and None values are ignored, as run.state does)."""
    try:
        cls = STACKED_OPTIMIZERS[name]
    except KeyError:
        raise ValueError(
            f"optim.name: unknown {name!r}; valid: {', '.join(sorted(STACKED_OPTIMIZERS))}"
        ) from None
    return cls(per_arm_settings)
