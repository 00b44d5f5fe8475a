"""K vanilla RNNs trained as one: every array gets a leading "arm" axis (issue 11).

A sweep group (arms that share the data, seq_len, B, H, dtype, the optimiser type and the
input kind) runs through this engine as one stack. Per arm it computes exactly what
:mod:`rnn_lab.core.engine` computes for that arm alone:

    a_t[k] = W_xh[k] x_t + W_hh[k] h_{t-1}[k] + b_h[k]      (x_t shared by all arms)
    h_t[k] = f_k(a_t[k])                                     (f_k: the arm's activation)
    o_t[k] = W_hy[k] h_t[k] + b_y[k]

then the arm's loss, BPTT, its own clipping (clip, clip_mode, freeze_whh) and the arm's
optimiser step (its lr and hyperparameters). What differs per arm: activation, initial
weights (init, seed), lr and its decay, clip and clip_mode, freeze_whh, the optimiser's
hyperparameters (:class:`ArmSettings` and the optimisers' per-arm settings).

This module is the engine (parameters, forward, BPTT, clipping); the losses of a stack are
rnn_lab.core.losses' arm-axis forms (through :mod:`rnn_lab.core.stacked_losses`; a single run
is their K = 1 case) and its optimisers are in :mod:`rnn_lab.core.stacked_optim`.

Why: at the walkthrough's sizes (H=64, B=1) a training step is ~150 NumPy calls on tiny arrays, so
a run spends much of its time in call overhead. Stacked, each call does K arms' work for
about the overhead of one: per time step the recurrence is one batched matmul, one add and
one in-place activation call per run of arms with one activation (stack the arms in
:func:`activation_order` for one run per activation), whatever K is. What stacking cannot
remove is the arithmetic itself: K gemv per time step (np.matmul loops over the arm axis),
K gemm per parameter gradient, and float64 tanh at ~17 ns a value; rnn_lab/bench/stacked_speed.py
measures what is left.

Layout (shapes per call; T steps, B streams, H hidden, O outputs, P parameters per arm):

    flat:    (K, P)          row k = engine.pack(params_k).flat (FLAT_ORDER, W_hh last)
    W_xh (K, H, V|D), W_hh (K, H, H), W_hy (K, O, H), b_h (K, H), b_y (K, O), E (K, D, V):
                             views into flat
    xw, hs:  (T, K, B, H), (T+1, K, B, H)   time-major: each step is one contiguous slab
    logits:  (T, K, B, O)    a view of a (K, T, B, O) buffer: logits[:, k] is contiguous,
                             as the loss and the per-arm matmuls want it
    dh, da, dfa: (T, K, B, H) inside backward; grads: (K, P), laid out as flat

Same answers, bit for bit. Each batched call does per arm the BLAS call the single run makes,
with the same shapes and transpose flags: np.matmul over a stack loops over the arm axis and
calls gemv on a (K, 1, H) row stack (the single run's 1-D rows at B = 1) or gemm. At B = 1
an arm's rows of a time-major array are strided (by K H): BLAS takes that as its leading
dimension and packs the operand, so the bits do not change (tests/test_stacked_engine.py
checks every array's bytes against per-arm single runs). Elementwise ufuncs and activations
give the same bits on any slice. Norms: the single run's ``np.dot(gflat, gflat)`` is BLAS dot;
here ``(K, 1, P) @ (K, P, 1)`` makes the same dot per arm in one call (an einsum row norm
would sum in another order). Reductions over the last axis (softmax sums, each arm's loss
sum) run row by row with NumPy's pairwise sum, as on the single run's array. Scalars are cast
as NumPy casts a weak Python scalar (to the array's dtype); Adam's ``np.sqrt(bc2)`` is a
strong float64, so its denominator is float64 for a float32 run, here as there.

Independence: no call mixes arms, so an arm whose weights become NaN or inf leaves the
others' numbers untouched; :meth:`StackedParams.select` and the optimisers' ``select``
drop it from the stack.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rnn_lab.core import engine

_matmul, _add, _multiply = np.matmul, np.add, np.multiply


# --------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------


def _layout(shapes: dict[str, tuple]) -> tuple[tuple[str, int, int, tuple], ...]:
    """((name, start, stop, per-arm shape), ...) in engine.FLAT_ORDER (engine's cached
    layout of one arm's flat buffer: the stack's columns are laid out the same)."""
    named = tuple((n, tuple(shapes[n])) for n in engine.FLAT_ORDER if n in shapes)
    return engine._flat_layout(named)[0]


def _stacked_views(flat: np.ndarray, shapes: dict[str, tuple]) -> dict[str, np.ndarray]:
    """Named (K, *shape) views of the column blocks of a (K, P) buffer."""
    K = flat.shape[0]
    return {n: flat[:, a:b].reshape((K, *s)) for n, a, b, s in _layout(shapes)}


@dataclass
class StackedParams:
    """K arms' parameters in one (K, P) buffer; every named array is a view into it."""

    flat: np.ndarray  # (K, P): row k laid out exactly as engine.pack(params_k).flat
    W_xh: np.ndarray  # (K, H, V) or (K, H, D)
    W_hh: np.ndarray  # (K, H, H)
    W_hy: np.ndarray  # (K, O, H)
    b_h: np.ndarray  # (K, H)
    b_y: np.ndarray  # (K, O)
    E: np.ndarray | None = None  # (K, D, V)

    @classmethod
    def from_flat(cls, flat: np.ndarray, shapes: dict[str, tuple]) -> StackedParams:
        """Views of a (K, P) buffer (not copied), given each array's per-arm shape."""
        if flat.ndim != 2 or not flat.flags.c_contiguous:
            raise ValueError("StackedParams: flat must be a C-contiguous (K, P) array")
        return cls(flat=flat, **_stacked_views(flat, shapes))

    @classmethod
    def stack(cls, arms: Sequence[engine.Params]) -> StackedParams:
        """The arms' arrays copied into one new stack (arm k = arms[k])."""
        if not arms:
            raise ValueError("StackedParams.stack: no arms")
        shapes = {n: a.shape for n, a in arms[0].arrays().items()}
        dtype = arms[0].dtype
        for k, p in enumerate(arms):
            got = {n: a.shape for n, a in p.arrays().items()}
            if got != shapes or p.dtype != dtype:
                raise ValueError(
                    f"StackedParams.stack: arm {k} has shapes {got} ({p.dtype}), "
                    f"arm 0 {shapes} ({dtype}): a stack holds one architecture and dtype"
                )
        size = sum(math.prod(s) for s in shapes.values())
        sp = cls.from_flat(np.empty((len(arms), size), dtype=dtype), shapes)
        for k, p in enumerate(arms):
            for n, a in p.arrays().items():
                getattr(sp, n)[k] = a
        return sp

    @property
    def K(self) -> int:
        return self.flat.shape[0]

    @property
    def hidden_size(self) -> int:
        return self.W_hh.shape[1]

    @property
    def dtype(self) -> np.dtype:
        return self.flat.dtype

    def shapes(self) -> dict[str, tuple]:
        """Per-arm shape of each array, in FLAT_ORDER (made once: asked every step; do not
        modify the dict)."""
        shapes = self.__dict__.get("_shapes")
        if shapes is None:
            shapes = {n: getattr(self, n).shape[1:] for n in engine.FLAT_ORDER if self._has(n)}
            self.__dict__["_shapes"] = shapes
        return shapes

    def _has(self, name: str) -> bool:
        return getattr(self, name) is not None

    def arm(self, k: int) -> engine.Params:
        """Arm k as packed engine.Params: its arrays and .flat are views of row k."""
        row = self.flat[k]
        return engine.Params(**engine.flat_views(row, self.shapes()), flat=row)

    def select(self, keep: Sequence[int]) -> StackedParams:
        """A new, smaller stack (a copy) of the arms ``keep``, in that order."""
        return StackedParams.from_flat(self.flat[np.asarray(keep, dtype=np.intp)], self.shapes())

    def n_trainable(self, arms: Sequence[ArmSettings]) -> np.ndarray:
        """(K,) length of each row's leading slice that trains (a frozen W_hh is the tail)."""
        frozen = np.array([a.freeze_whh for a in arms], dtype=bool)
        return np.where(frozen, self.flat.shape[1] - self.W_hh[0].size, self.flat.shape[1])


# --------------------------------------------------------------------------------------
# Per-arm settings and the plan derived from them (cached: the hot loop asks every step)
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmSettings:
    """What differs per arm inside a group, for forward and backward."""

    activation: str = "tanh"
    freeze_whh: bool = False
    clip: float = 0.0
    clip_mode: str = "norm"


def activation_order(arms: Sequence[ArmSettings | str]) -> list[int]:
    """A stable permutation that makes each activation one contiguous run of arms (in order
    of first appearance) and, within it, puts the arms with a frozen W_hh last (given
    ArmSettings): stack the arms in this order for the fewest calls per time step, and so
    that the frozen arms' skipped W_hh work (its gradient, the optimiser on it) is one block.
    The engine accepts any order (each run of equal activations costs its own calls)."""
    names = [a if isinstance(a, str) else a.activation for a in arms]
    frozen = [False if isinstance(a, str) else a.freeze_whh for a in arms]
    first = {n: i for i, n in reversed(list(enumerate(names)))}
    return sorted(range(len(names)), key=lambda i: (first[names[i]], frozen[i]))


@dataclass(frozen=True)
class _Plan:
    K: int
    runs: tuple  # ((Activation, start, stop), ...): maximal runs of one activation
    frozen: tuple[int, ...]  # arms with freeze_whh
    trained_runs: tuple[tuple[int, int], ...]  # (start, stop): maximal runs of arms that train W_hh
    norm_clip: np.ndarray  # (K,) the arm's clip where it clips by norm, inf elsewhere
    value_clip: tuple[tuple[int, float], ...]  # (arm, clip) of the arms clipping by value


@functools.lru_cache(maxsize=128)
def _plan(arms: tuple[ArmSettings, ...]) -> _Plan:
    for a in arms:
        if a.clip > 0 and a.clip_mode not in ("norm", "value"):
            raise ValueError(f"clip_mode: unknown {a.clip_mode!r}; valid: norm, value")
    activations = [engine.get_activation(a.activation) for a in arms]
    norm_clip = np.array(
        [a.clip if a.clip > 0 and a.clip_mode == "norm" else math.inf for a in arms], float
    )
    norm_clip.flags.writeable = False
    return _Plan(
        K=len(arms),
        runs=tuple((act, a, b) for a, b, act in runs_of(activations)),
        frozen=tuple(k for k, a in enumerate(arms) if a.freeze_whh),
        trained_runs=_trained_runs([not a.freeze_whh for a in arms]),
        norm_clip=norm_clip,
        value_clip=tuple(
            (k, a.clip) for k, a in enumerate(arms) if a.clip > 0 and a.clip_mode == "value"
        ),
    )


def runs_of(values: Sequence) -> tuple[tuple[int, int, object], ...]:
    """(start, stop, value) of each maximal run of equal values: the stack's runs of one
    activation, of arms that train W_hh, of one trainable length (the optimisers' blocks)."""
    runs: list[list] = []
    for k, value in enumerate(values):
        if runs and runs[-1][2] == value:
            runs[-1][1] = k + 1
        else:
            runs.append([k, k + 1, value])
    return tuple((a, b, v) for a, b, v in runs)


def _trained_runs(trains: Sequence[bool]) -> tuple[tuple[int, int], ...]:
    """(start, stop) of each maximal run of arms that train W_hh."""
    return tuple((a, b) for a, b, v in runs_of(trains) if v)


_LAST_PLAN: list = [(), None]  # the last (arms, plan): hashing K dataclasses costs ~K us


def _plan_for(arms: Sequence[ArmSettings], K: int) -> _Plan:
    last_arms, plan = _LAST_PLAN
    if len(arms) != len(last_arms) or not all(map(operator.is_, arms, last_arms)):
        arms = tuple(arms)
        plan = _plan(arms)
        _LAST_PLAN[:] = [arms, plan]
    if plan.K != K:
        raise ValueError(f"{plan.K} ArmSettings for a stack of {K} arms")
    return plan


# --------------------------------------------------------------------------------------
# Forward
# --------------------------------------------------------------------------------------


@dataclass
class StackedCache:
    """What the backward pass needs, time-major with the arm axis second."""

    inputs: np.ndarray  # (T, B) int or (T, B, D) float, shared by every arm
    x_embedded: np.ndarray | None  # (T, K, B, D) = E[k][:, idx] when an embedding is used
    hs: np.ndarray  # (T+1, K, B, H): hs[0] = h_0 (carried in), hs[t] = h_t
    logits: np.ndarray  # (T, K, B, O) (a view: logits[:, k] is contiguous)

    @property
    def h_last(self) -> np.ndarray:
        return self.hs[-1]  # (K, B, H), contiguous

    def arm_cache(self, k: int) -> engine.ForwardCache:
        """Arm k's engine.ForwardCache (views; hs[:, k] is strided, logits[:, k] contiguous)."""
        x_emb = None if self.x_embedded is None else self.x_embedded[:, k]
        return engine.ForwardCache(self.inputs, x_emb, self.hs[:, k], self.logits[:, k])

    def select(self, keep: Sequence[int]) -> StackedCache:
        """The cache of the arms ``keep`` (copies), to go on with StackedParams.select(keep):
        e.g. drop an arm whose loss diverged before backward, as the single run stops there."""
        idx = np.asarray(keep, dtype=np.intp)
        x_emb = self.x_embedded
        return StackedCache(
            inputs=self.inputs,
            x_embedded=None if x_emb is None else x_emb.swapaxes(0, 1)[idx].swapaxes(0, 1),
            hs=np.ascontiguousarray(self.hs[:, idx]),
            logits=self.logits.swapaxes(0, 1)[idx].swapaxes(0, 1),
        )


def _per_arm(x: np.ndarray) -> np.ndarray:
    """(T, K, B, X) time-major -> (K, T, B, X) whose (T, B) merge into rows without a copy:
    a view at B = 1 (arm k's rows are strided by K X: BLAS takes that as its leading
    dimension, same bits), a copy otherwise."""
    if x.shape[2] == 1:
        return x.swapaxes(0, 1)
    return np.ascontiguousarray(x.swapaxes(0, 1))


def _rows(x: np.ndarray) -> np.ndarray:
    """(K, T, B, X) -> (K, T*B, X), the rows each arm's single-run matmul takes."""
    K, T, B, X = x.shape
    return x.reshape(K, T * B, X)


def _matmul_time_major(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """out (T, K, B, X) = a @ b per arm, a: (K, T*B, ·): one batched matmul written straight
    into the time-major buffer at B = 1 (strided rows), through an arm-major result else."""
    T, K, B, X = out.shape
    if B == 1:
        _matmul(a, b, out=out[:, :, 0].swapaxes(0, 1))
    else:
        out[...] = _matmul(a, b).reshape(K, T, B, X).swapaxes(0, 1)


def input_projection(sp: StackedParams, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """W_xh x_t + b_h for every t and arm: (T, K, B, H), a fresh contiguous array, and
    x_embedded (K, T, B, D) or None. Integer inputs are one-hot by lookup, as in the engine."""
    K, H = sp.K, sp.hidden_size
    T, B = inputs.shape[:2]
    x_emb = None
    if engine._is_index_input(inputs) and sp.E is None:
        if B == 1:  # (T, 1, K, H) is (T, K, 1, H): W_xh[k][:, idx] for every arm at once
            xw = sp.W_xh.transpose(2, 0, 1)[inputs].reshape(T, K, 1, H)
        else:  # xw[t, k, b] = W_xh[k][:, inputs[t, b]]
            arm = np.arange(K)[None, :, None]
            xw = sp.W_xh.transpose(0, 2, 1)[arm, inputs[:, None, :]]
    else:
        if engine._is_index_input(inputs):
            x_emb = np.ascontiguousarray(sp.E.transpose(0, 2, 1)[:, inputs])  # (K, T, B, D)
            x_rows = _rows(x_emb)
        else:
            x_rows = inputs.reshape(T * B, -1)  # shared by every arm (broadcast)
        xw = np.empty((T, K, B, H), dtype=sp.dtype)
        _matmul_time_major(x_rows, sp.W_xh.transpose(0, 2, 1), xw)
    xw += sp.b_h[:, None, :]  # bias folded in once, outside the time loop
    return xw, x_emb


def recur(xw: np.ndarray, hs: np.ndarray, W_hh: np.ndarray, runs: tuple) -> None:
    """hs[t+1, k] = f_k(xw[t, k] + hs[t, k] @ W_hh[k]^T) for every t, in place.

    xw: (T, K, B, H); hs: (T+1, K, B, H) with hs[0] = h_0; W_hh: (K, H, H). Per time step,
    on contiguous (K, B, H) slabs: one matmul (a gemv per arm at B = 1, as the single run's
    1-D rows), one add and, per run of one activation, its in-place call on that run's slice.
    """
    W_hh_T = W_hh.transpose(0, 2, 1)
    matmul, add = _matmul, _add
    if len(runs) == 1:
        ufunc = _INPLACE_UFUNC.get(runs[0][0].name)
        f_ = runs[0][0].fn_inplace
        for x_t, h_prev, h_t in zip(xw, hs, hs[1:]):
            matmul(h_prev, W_hh_T, out=h_t)  # W_hh h_{t-1}
            add(h_t, x_t, out=h_t)  # + W_xh x_t + b_h = a_t
            if ufunc is not None:
                ufunc(h_t, out=h_t)
            elif f_ is not engine._linear_:
                f_(h_t)
        return
    # Several activations: each run's slices of the h_t, made once per chunk.
    slices = [(r[0].fn_inplace, list(hs[1:, r[1] : r[2]])) for r in runs if r[0].name != "linear"]
    for t, (x_t, h_prev, h_t) in enumerate(zip(xw, hs, hs[1:])):
        matmul(h_prev, W_hh_T, out=h_t)
        add(h_t, x_t, out=h_t)
        for f_, run_h in slices:
            f_(run_h[t])


def _relu_(h: np.ndarray, out: np.ndarray) -> np.ndarray:
    return np.maximum(h, 0.0, out=out)  # engine._relu_'s argument order (-0.0 stays -0.0)


# tanh and relu in place as one call each, as engine._recur does.
_INPLACE_UFUNC = {"tanh": np.tanh, "relu": _relu_}


def output_logits(sp: StackedParams, hs: np.ndarray) -> np.ndarray:
    """o_t = W_hy h_t + b_y for every arm and t: (K, T, B, O) (arm-major, as the loss wants
    it) from hs (T+1, K, B, H)."""
    h_rows = _rows(_per_arm(hs[1:]))
    logits = _matmul(h_rows, sp.W_hy.transpose(0, 2, 1))
    T, K, B = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
    logits = logits.reshape(K, T, B, -1)
    logits += sp.b_y[:, None, None, :]
    return logits


def forward(
    sp: StackedParams, inputs: np.ndarray, h0: np.ndarray, arms: Sequence[ArmSettings]
) -> StackedCache:
    """Run every arm's recurrence over one chunk.

    inputs: (T, B) int or (T, B, D) float, shared; h0: (K, B, H), carried in.
    """
    plan = _plan_for(arms, sp.K)
    xw, x_emb = input_projection(sp, inputs)  # (T, K, B, H), fresh
    hs = np.empty((xw.shape[0] + 1,) + h0.shape, dtype=sp.dtype)
    hs[0] = h0
    recur(xw, hs, sp.W_hh, plan.runs)
    logits = output_logits(sp, hs)
    return StackedCache(
        inputs=inputs,
        x_embedded=None if x_emb is None else x_emb.swapaxes(0, 1),
        hs=hs,
        logits=logits.swapaxes(0, 1),
    )


# --------------------------------------------------------------------------------------
# Arm-axis helpers (the backward's and rnn_lab.core.losses')
# --------------------------------------------------------------------------------------


def arm_major(x: np.ndarray) -> np.ndarray:
    """(T, K, ...) -> (K, T, ...) contiguous (a free view when x came from this module)."""
    return np.ascontiguousarray(x.swapaxes(0, 1))


def row_dots(x: np.ndarray) -> np.ndarray:
    """x[k] . x[k] for each row of (K, N), each by BLAS dot as np.dot(x[k], x[k]) is, all in
    one call: (K, 1, N) @ (K, N, 1) is K inner products (an einsum would sum differently)."""
    return _matmul(x[:, None, :], x[:, :, None]).reshape(x.shape[0])


@functools.lru_cache(maxsize=16)
def shared_arange(n: int) -> np.ndarray:
    """np.arange(n), made once per size (read-only: shared by every call)."""
    out = np.arange(n)
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=16)
def _ones(n: int, dtype: np.dtype) -> np.ndarray:
    """np.ones(n, dtype), made once per size and dtype (read-only: shared)."""
    out = np.ones(n, dtype=dtype)
    out.flags.writeable = False
    return out


# --------------------------------------------------------------------------------------
# Backward (BPTT)
# --------------------------------------------------------------------------------------


@dataclass
class StackedGradients:
    """Every arm's engine.Gradients, stacked; ``arm(k)`` gives arm k's (views)."""

    flat: np.ndarray  # (K, P) laid out as StackedParams.flat; clipped per arm
    shapes: dict[str, tuple]  # per-arm shape of each array (FLAT_ORDER)
    total_norm: np.ndarray  # (K,) float64, before clipping (W_hh excluded when frozen)
    clipped: np.ndarray  # (K,) bool
    clip_ratio: np.ndarray  # (K,) float64: norm after clipping / before (1.0 if not)
    per_step_grad_norm: np.ndarray  # (K, T) ||dL/dh_t||
    last_loss_grad_norm: np.ndarray | None = None  # (K, T), with profile=True
    param_grad_norms: list[dict[str, float]] | None = None  # per arm, with profile=True

    @property
    def grads(self) -> dict[str, np.ndarray]:
        """(K, *shape) views of flat, by name."""
        return _stacked_views(self.flat, self.shapes)

    def arm(self, k: int) -> engine.Gradients:
        last = self.last_loss_grad_norm
        return engine.Gradients(
            grads=engine.flat_views(self.flat[k], self.shapes),
            flat=self.flat[k],
            total_norm=float(self.total_norm[k]),
            clipped=bool(self.clipped[k]),
            clip_ratio=float(self.clip_ratio[k]),
            per_step_grad_norm=self.per_step_grad_norm[k],
            last_loss_grad_norm=None if last is None else last[k],
            param_grad_norms=None if self.param_grad_norms is None else self.param_grad_norms[k],
        )


def backward(
    sp: StackedParams,
    cache: StackedCache,
    dlogits: np.ndarray,
    arms: Sequence[ArmSettings],
    *,
    profile: bool = False,
) -> StackedGradients:
    """BPTT through one chunk for every arm, given dL/do_t: (T, K, B, O).

    Per arm what engine.backward(arm params, arm cache, dlogits[:, k], activation,
    freeze_whh=, clip=, clip_mode=, profile=) returns, with that arm's settings. Inside,
    dh, da and f'(a) are time-major (T, K, B, H): the BPTT loop works on contiguous slabs.
    """
    plan = _plan_for(arms, sp.K)
    hs = cache.hs  # (T+1, K, B, H)
    do = arm_major(dlogits)  # (K, T, B, O)
    K, T, B, O = do.shape
    H = hs.shape[-1]
    dfa = activation_derivatives(hs, plan.runs)  # (T, K, B, H) f'(a_t) from h_t
    # dh starts as W_hy^T do_t (one batched matmul) and becomes dL/dh_t in bptt.
    dh = np.empty((T, K, B, H), dtype=do.dtype)
    _matmul_time_major(_rows(do), sp.W_hy, dh)
    dh_out_last = dh[-1].copy() if profile else None
    da = np.empty_like(dh)
    bptt(dh, da, dfa, sp.W_hh)
    gflat = parameter_gradients(sp, cache, do, da, plan.frozen, plan.trained_runs)
    shapes = sp.shapes()
    param_grad_norms = None
    if profile:  # before clipping, as the single run
        param_grad_norms = [
            {n: float(np.sqrt(np.vdot(g, g))) for n, g in engine.flat_views(row, shapes).items()}
            for row in gflat
        ]
    total_norm, clipped, clip_ratio = clip_gradients(gflat, plan)
    # ||dL/dh_t|| over (B, H) per arm: the engine's row norms, rows of B*H contiguous values
    per_step = np.ascontiguousarray(_row_norms(dh.reshape(T, K, B * H)).T)
    last = None
    if profile:
        last = np.stack(
            [engine._last_loss_profile(dh_out_last[k], dfa[:, k], sp.W_hh[k]) for k in range(K)]
        )
    return StackedGradients(
        flat=gflat,
        shapes=shapes,
        total_norm=total_norm,
        clipped=clipped,
        clip_ratio=clip_ratio,
        per_step_grad_norm=per_step,
        last_loss_grad_norm=last,
        param_grad_norms=param_grad_norms,
    )


def activation_derivatives(hs: np.ndarray, runs: tuple) -> np.ndarray:
    """f'(a_t) from h_t for every arm: (T, K, B, H) from hs (T+1, K, B, H), run by run, with
    the same operations as each Activation.deriv_from_output."""
    dfa = np.empty(hs[1:].shape, dtype=hs.dtype)
    for act, a, b in runs:
        h, d = hs[1:, a:b], dfa[:, a:b]
        deriv = act.deriv_from_output
        if deriv is engine._tanh_deriv:  # 1 - h^2
            np.multiply(h, h, out=d)
            np.subtract(1.0, d, out=d)
        elif deriv is engine._sigmoid_deriv:  # h * (1 - h)
            np.subtract(1.0, h, out=d)
            np.multiply(h, d, out=d)
        elif deriv is engine._relu_deriv:  # 1 where h > 0
            np.greater(h, 0.0, out=d)
        elif deriv is engine._linear_deriv:
            d.fill(1.0)
        else:
            d[...] = deriv(h)
    return dfa


def bptt(dh: np.ndarray, da: np.ndarray, dfa: np.ndarray, W_hh: np.ndarray) -> None:
    """The sequential part of BPTT for every arm, in place (engine._backprop_through_time
    with an arm axis): on entry dh[t, k] = W_hy[k]^T do_t, on return dh = dL/dh_t and
    da = dL/da_t. Arrays (T, K, B, H); three calls per time step for the whole stack."""
    matmul, add, multiply = _matmul, _add, _multiply
    dh_next = np.empty_like(dh[0])  # (K, B, H): what arrives at step t from step t+1
    multiply(dh[-1], dfa[-1], out=da[-1])  # the last step has no future
    for dh_t, da_t, dfa_t, da_next in zip(dh[-2::-1], da[-2::-1], dfa[-2::-1], da[:0:-1]):
        matmul(da_next, W_hh, out=dh_next)  # W_hh^T da_{t+1} per arm (gemv at B = 1)
        add(dh_t, dh_next, out=dh_t)
        multiply(dh_t, dfa_t, out=da_t)


def _row_norms(x: np.ndarray) -> np.ndarray:
    """engine._row_norms over the last axis of (T, K, N): the same gufunc, row by row."""
    if engine._vecdot is not None:
        return np.sqrt(engine._vecdot(x, x))
    return np.sqrt(np.einsum("tkj,tkj->tk", x, x))


def _one_hot(index: np.ndarray, n_cols: int, dtype) -> np.ndarray:
    """(N, n_cols) with a 1 at (i, index[i]): engine._scatter_columns' matrix (shared)."""
    one_hot = np.zeros((index.shape[0], n_cols), dtype=dtype)
    one_hot[shared_arange(index.shape[0]), index] = 1.0
    return one_hot


def parameter_gradients(
    sp: StackedParams,
    cache: StackedCache,
    do: np.ndarray,
    da: np.ndarray,
    frozen: tuple = (),
    trained_runs: tuple | None = None,
) -> np.ndarray:
    """Every parameter gradient as one batched matmul each, into a (K, P) buffer laid out as
    sp.flat: per arm the single run's matmul, on its rows (strided at B = 1: same bits).
    do: (K, T, B, O) arm-major; da: (T, K, B, H) time-major; frozen: arms whose W_hh
    gradient is exactly 0 (reservoir: not trained, and not in the norm); trained_runs: the
    (start, stop) runs of the other arms (default: computed from frozen), whose W_hh
    gradient is one matmul per run (a frozen arm's is never computed, as in the single run)."""
    T, K, B, H = da.shape
    if trained_runs is None:
        trained_runs = _trained_runs([k not in frozen for k in range(K)])
    gflat = np.empty(sp.flat.shape, dtype=da.dtype)
    g = _stacked_views(gflat, sp.shapes())
    da2 = _rows(_per_arm(da))  # (K, T*B, H)
    da2_T = da2.transpose(0, 2, 1)  # (K, H, T*B)
    hs = _per_arm(cache.hs)  # (K, T+1, B, H)
    do2 = _rows(do)
    hs_prev = _rows(hs[:, :-1])
    for a, b in trained_runs:  # sum_t da_t h_{t-1}^T
        _matmul(da2_T[a:b], hs_prev[a:b], out=g["W_hh"][a:b])
    for k in frozen:
        g["W_hh"][k].fill(0.0)
    ones = _ones(T * B, da.dtype)
    _matmul(ones, da2, out=g["b_h"])  # column sums as a gemv, as the engine
    _matmul(do2.transpose(0, 2, 1), _rows(hs[:, 1:]), out=g["W_hy"])  # sum_t do_t h_t^T
    _matmul(ones, do2, out=g["b_y"])
    inputs = cache.inputs
    if engine._is_index_input(inputs):
        one_hot = _one_hot(inputs.reshape(-1), inputs_size(sp), da.dtype)
        if sp.E is None:
            _matmul(da2_T, one_hot, out=g["W_xh"])  # dW_xh[:, v] = sum of da_t with x_t = v
        else:
            x_emb = _rows(cache.x_embedded.swapaxes(0, 1))
            _matmul(da2_T, x_emb, out=g["W_xh"])
            dx = _matmul(da2, sp.W_xh)  # (K, T*B, D) dL/dx_t
            _matmul(dx.transpose(0, 2, 1), one_hot, out=g["E"])
    else:
        _matmul(da2_T, inputs.reshape(T * B, -1), out=g["W_xh"])
    return gflat


def inputs_size(sp: StackedParams) -> int:
    """V for index inputs (the embedding's or W_xh's columns), D for real-valued ones."""
    return (sp.W_xh if sp.E is None else sp.E).shape[-1]


def clip_gradients(gflat: np.ndarray, plan: _Plan) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each arm's norm and clipping, in place: (total_norm, clipped, clip_ratio), all (K,).

    Norms as the single run's float(np.sqrt(np.dot(g, g))) (BLAS dot per arm, in one call);
    "norm" arms rescaled in one multiply (unclipped rows by exactly 1.0); "value" arms one
    by one, as the engine.
    """
    K = gflat.shape[0]
    total_norm = np.sqrt(row_dots(gflat)).astype(np.float64)
    clipped = total_norm > plan.norm_clip  # NaN > clip is False, as in the single run
    clip_ratio = np.ones(K)
    if clipped.any():
        np.divide(plan.norm_clip, total_norm, out=clip_ratio, where=clipped)
        gflat *= clip_ratio.astype(gflat.dtype)[:, None]
    for k, clip in plan.value_clip:
        g = gflat[k]
        if float(np.abs(g).max()) > clip:
            clipped[k] = True
            np.clip(g, -clip, clip, out=g)
            after = float(np.sqrt(np.dot(g, g)))
            norm = float(total_norm[k])
            clip_ratio[k] = after / norm if norm > 0 else 1.0
    return total_norm, clipped, clip_ratio
