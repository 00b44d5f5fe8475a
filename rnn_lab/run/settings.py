"""Every hyperparameter of a run, written once.

:class:`TrainSettings` is the single source of defaults, of each key's one-line meaning and of
its allowed values. The Hydra schema (rnn_lab.app.schema) is derived from it, ``conf/config.yaml``
is checked against it by a test, and :func:`check_settings` turns any bad value into one
:class:`SettingsError` naming the key, the value and what is allowed.

Each field's metadata says:
- ``help``: the one-line meaning (``python -m rnn_lab.train --help`` lists them);
- ``check``: the allowed values (an :class:`Int`, :class:`Num` or :class:`OneOf`);
- ``kind``: ``result`` (changes what the run computes: part of the run identity),
  ``record`` (changes what is recorded: also part of the identity, since the files differ),
  ``book`` (bookkeeping: a resumed run may change it freely).
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

import numpy as np

from rnn_lab.core.data import VAL_MAX_CHARS, val_sample

DTYPES = {"float64": np.float64, "float32": np.float32}
CLIP_MODES = ("norm", "value")
OPTIMIZED_METRICS = ("val_loss", "best_val_loss", "final_loss")


class SettingsError(ValueError):
    """A bad setting: the message names the key, the value and what is allowed."""


def _bad(key: str, value, allowed: str) -> SettingsError:
    return SettingsError(f"{key}={value!r} is not valid: {allowed}.")


@dataclass(frozen=True)
class Int:
    """An integer >= minimum (bools are not integers here)."""

    minimum: int = 1
    note: str = ""

    def __call__(self, key: str, v):
        if not isinstance(v, int | np.integer) or isinstance(v, bool) or v < self.minimum:
            raise _bad(key, v, f"must be an integer >= {self.minimum}{self.note}")
        return int(v)

    def bad_examples(self) -> list:
        """Values this check must refuse (the refusal test generates them)."""
        return [self.minimum - 1, 1.5, "x", True, math.nan]


@dataclass(frozen=True)
class Num:
    """A finite number in a range; ``low_open``/``high_open`` exclude the bound itself."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    note: str = ""

    def __call__(self, key: str, v):
        if isinstance(v, bool) or not isinstance(v, int | float | np.number):
            raise _bad(key, v, f"must be a finite number{self.note}")
        if not math.isfinite(float(v)):
            raise _bad(key, v, f"must be a finite number{self.note}")
        lo, hi = self.low, self.high
        if lo is not None and (v < lo or (self.low_open and v == lo)):
            raise _bad(key, v, f"must be {'>' if self.low_open else '>='} {lo}{self.note}")
        if hi is not None and (v > hi or (self.high_open and v == hi)):
            raise _bad(key, v, f"must be {'<' if self.high_open else '<='} {hi}{self.note}")
        return float(v)

    def bad_examples(self) -> list:
        """Values this check must refuse (the refusal test generates them)."""
        out: list = [math.nan, math.inf, -math.inf, "x", True]
        if self.low is not None:
            out.append(self.low if self.low_open else self.low - 1.0)
        if self.high is not None:
            out.append(self.high if self.high_open else self.high + 1.0)
        return out


@dataclass(frozen=True)
class ZeroOrInt(Int):
    """0 (the feature is off) or an integer >= minimum."""

    def __call__(self, key: str, v):
        if isinstance(v, int | np.integer) and not isinstance(v, bool) and v == 0:
            return 0
        if not isinstance(v, int | np.integer) or isinstance(v, bool) or v < self.minimum:
            raise _bad(key, v, f"must be 0 (all of it) or an integer >= {self.minimum}")
        return int(v)


@dataclass(frozen=True)
class OneOf:
    choices: tuple

    def __call__(self, key: str, v):
        if v not in self.choices:
            raise _bad(key, v, f"choose one of {', '.join(map(str, self.choices))}")
        return v

    def bad_examples(self) -> list:
        return ["nonsense", 3]


@dataclass(frozen=True)
class Bool:
    def __call__(self, key: str, v):
        if not isinstance(v, bool | np.bool_):
            raise _bad(key, v, "must be true or false")
        return bool(v)

    def bad_examples(self) -> list:
        return ["yes", 2]


def _key(default, help: str, check=None, kind: str = "result", **kw) -> Any:
    meta = {"help": help, "check": check, "kind": kind}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


# The config groups: the option chosen and its own keys. Defaults are the walkthrough's run.
DEFAULT_INIT = {"name": "orthogonal", "scale": 1.0, "path": None}
# The walkthrough's SGD: momentum as a moving average of the gradients (v = 0.9 v + 0.1 g).
DEFAULT_OPTIM = {"name": "sgd", "momentum": 0.9, "dampening": 0.9, "nesterov": False}
DEFAULT_DATA = {"name": "elman", "seed": 42, "num_sentences": 600}
# The vanilla cell of the walkthrough; gru and lstm follow torch.nn's gate conventions.
DEFAULT_CELL = {"name": "rnn"}


@dataclass
class TrainSettings:
    """Every hyperparameter of a run as plain values (defaults: the walkthrough's run)."""

    # ---- training (the walkthrough's hyperparameters) ----
    steps: int = _key(
        30000, "optimisation steps (one chunk each); budget_chars > 0 replaces it", Int(1)
    )
    budget_chars: int = _key(
        0,
        "train on this many characters (time steps x streams) instead of `steps`: "
        "ceil(budget / (seq_len x batch_size)) steps; 0 = use steps",
        Int(0),
    )
    hidden_size: int = _key(64, "H, units in the hidden state", Int(1))
    seq_len: int = _key(25, "truncated-BPTT length: characters per chunk", Int(1))
    lr: float = _key(0.01, "learning rate", Num(0, low_open=True))
    clip: float = _key(5.0, "gradient clipping threshold; 0 disables", Num(0, note=" (0 disables)"))
    clip_mode: str = _key(
        "norm", "norm: global-norm rescale | value: element-wise", OneOf(CLIP_MODES)
    )
    seed: int = _key(42, "seeds torch.nn.init (weights) and the sampling RNG", Int(0))
    lr_decay_rate: float = _key(
        1.0, "lr *= rate every lr_decay_every steps; 1.0 = constant", Num(0, 1, low_open=True)
    )
    lr_decay_every: int = _key(1000, "steps between lr decays", Int(0))
    val_fraction: float = _key(
        0.1, "the last fraction of the text is the validation split", Num(0, 1, True, True)
    )
    val_interval: int = _key(500, "validation loss every N steps; 0 = only at the end", Int(0))
    val_max_chars: int = _key(
        VAL_MAX_CHARS,
        "validate on at most this many characters of the split: all of a shorter split, evenly "
        "spaced blocks of a longer one; 0 = all of it",
        ZeroOrInt(2),
    )
    temperature: float = _key(1.0, "sampling temperature; 0 = argmax", Num(0, note=" (0 = argmax)"))
    freeze_whh: bool = _key(False, "true: W_hh is never trained (reservoir / echo state)", Bool())
    use_embedding: bool = _key(False, "true: learned input embedding instead of one-hot", Bool())
    embed_dim: int = _key(16, "size of the embedding when use_embedding=true", Int(1))
    batch_size: int = _key(1, "B independent streams through the text; 1 = the walkthrough", Int(1))
    dtype: str = _key("float64", "float64 | float32", OneOf(tuple(DTYPES)))
    diverge_factor: float = _key(
        10.0,
        "a loss above this x ln(V) nats/char ends the run as diverged; 0 disables",
        Num(0, note=" (0 disables)"),
    )
    # ---- groups: the option's name and its own keys (checked by rnn_lab.app.schema) ----
    cell: dict = _key(DEFAULT_CELL, "recurrent cell: the cell group's option (rnn | gru | lstm)")
    init: dict = _key(DEFAULT_INIT, "W_hh init: the init group's option and its keys")
    activation: str = _key("tanh", "the activation f of h_t = f(a_t)")
    optim: dict = _key(DEFAULT_OPTIM, "optimiser: the optim group's option and its keys")
    data: dict = _key(DEFAULT_DATA, "data source: the data group's option and its keys")
    # ---- bookkeeping ----
    checkpoint_interval: int = _key(
        5000, "checkpoint.npz every N steps (and at the end); 0 = end only", Int(0), "book"
    )
    resume: bool = _key(
        False, "true: continue from checkpoint.npz in the output dir", Bool(), "book"
    )
    log_interval: int = _key(1000, "progress line every N steps; 0 = start and end", Int(0), "book")
    analyze: bool = _key(True, "analyse the trained network at the end", Bool(), "book")
    plots: bool = _key(True, "draw the run's plots at the end (with analyze)", Bool(), "book")
    analysis_workers: int = _key(
        2,
        "processes that analyse and plot a single run at its end, forked before training to "
        "import their libraries meanwhile (at most one per usable CPU, none on one CPU); 0 = the "
        "run's own process, after training (a sweep's jobs always do: they fill the cores)",
        Int(0),
        "book",
    )
    optimized_metric: str = _key(
        "val_loss",
        "the summary metric the task function returns to sweepers (+inf when not ok)",
        OneOf(OPTIMIZED_METRICS),
        "book",
    )
    # ---- recording the training dynamics ----
    record: bool = _key(True, "false: only the cheap history columns", Bool(), "record")
    record_interval: int = _key(100, "record every N steps after the dense phase", Int(0), "record")
    record_dense_interval: int = _key(
        10, "record every N steps during the dense phase", Int(0), "record"
    )
    record_dense_until: int = _key(500, "the dense phase lasts this many steps", Int(0), "record")
    jacobian_interval: int = _key(
        2000,
        "Jacobian products every N steps (and at the first and last); 0 disables",
        Int(0),
        "record",
    )
    jacobian_lags: int = _key(10, "steps back the Jacobian product spans", Int(1), "record")
    sample_interval: int = _key(5000, "sample text every N steps; 0 disables", Int(0), "record")
    sample_length: int = _key(200, "characters per sample", Int(1), "record")
    record_weights: bool = _key(
        False, "also keep W_hh snapshots at record points", Bool(), "record"
    )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def field_info(cls) -> dict[str, dict]:
        """key -> {default, help, check, kind}, in declaration order."""
        out = {}
        for f in fields(cls):
            has_factory = f.default_factory is not MISSING
            default = f.default_factory() if has_factory else f.default
            out[f.name] = {**f.metadata, "default": default}
        return out


GROUP_KEYS = ("cell", "init", "activation", "optim", "data")


def keys_of_kind(*kinds: str) -> tuple[str, ...]:
    return tuple(f.name for f in fields(TrainSettings) if f.metadata["kind"] in kinds)


BOOKKEEPING_KEYS = keys_of_kind("book")
# How long a run trains: not part of its identity (a run is extended by asking for more).
LENGTH_KEYS = ("steps", "budget_chars")


def identity_settings(s: TrainSettings | dict, n_val: int | None = None) -> dict:
    """The settings that decide a run's files (everything but bookkeeping), minus how long it
    trains (``steps``, ``budget_chars``): a run may be extended by asking for more steps
    (never fewer, see run.trainer).

    n_val: the characters of the run's validation split when known (0: a task without one).
    ``val_max_chars`` then enters as what validation reads: 0 when it reads the whole split,
    so a run keeps its identity whichever bound left its split whole (the default was 0)."""
    d = s.to_dict() if isinstance(s, TrainSettings) else dict(s)
    out = {k: d.get(k) for k in sorted(d) if k not in BOOKKEEPING_KEYS and k not in LENGTH_KEYS}
    if out.get("cell") in (None, DEFAULT_CELL):
        # The vanilla cell: left out, so runs written before `cell` existed keep their identity.
        out.pop("cell", None)
    if n_val is not None and isinstance(out.get("val_max_chars"), int):
        if n_val < 2 or val_sample(n_val, out["val_max_chars"]).whole:
            out["val_max_chars"] = 0
    return out


def check_settings(values: dict) -> dict:
    """Check every plain key of TrainSettings that has a check; return the values converted
    (ints as int, numbers as float). Raises SettingsError on the first bad value."""
    out = dict(values)
    for name, info in TrainSettings.field_info().items():
        check = info["check"]
        if check is not None and name in out:
            out[name] = check(name, out[name])
    return out
