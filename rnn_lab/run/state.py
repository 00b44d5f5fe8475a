"""Everything a run carries from one step to the next, and its checkpoint form.

:class:`TrainState` holds the step, the parameters, the optimiser and its state, the hidden
state h, the data pointer (through the task), the sampling RNG, the loss window, the best and
last validation loss, the history rows and the diagnostics recorder. ``to_arrays()`` /
``from_arrays()`` are the checkpoint format: nothing else knows its keys.
"""

from __future__ import annotations

import json
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rnn_lab.core import cells
from rnn_lab.core.optim import make_optimizer

LOSS_WINDOW = 100  # final_loss is the mean over the last this-many steps

# diagnostics.npz groups: each step key and the arrays recorded with it.
DIAGNOSTIC_GROUPS = {
    "record_step": (
        "eigenvalues",
        "per_step_grad_norm",
        "last_loss_grad_norm",
        "position_accuracy",
    ),
    "jacobian_step": (
        "jacobian_step_norm",
        "jacobian_product_norm",
        "jacobian_product_radius",
        "jacobian_sigma_max",
    ),
    "sample_step": ("sample_text",),
    "weights_step": ("W_hh_snapshots",),
}


@dataclass
class Recorder:
    """Diagnostics kept in memory and written to diagnostics.npz with every checkpoint."""

    arrays: dict[str, list] = field(default_factory=dict)

    def add(self, **values):
        for k, v in values.items():
            self.arrays.setdefault(k, []).append(v)

    def truncate(self, max_step: int) -> None:
        """Drop entries recorded after max_step (resuming from an earlier checkpoint)."""
        for step_key, keys in DIAGNOSTIC_GROUPS.items():
            steps = self.arrays.get(step_key)
            if not steps:
                continue
            keep = [i for i, s in enumerate(steps) if s <= max_step]
            for k in (step_key, *keys):
                if k in self.arrays:
                    self.arrays[k] = [self.arrays[k][i] for i in keep]

    def to_npz_dict(self) -> dict[str, np.ndarray]:
        out = {}
        for k, v in self.arrays.items():
            out[k] = np.array(v, dtype=np.str_) if k == "sample_text" else np.asarray(v)
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Recorder:
        return cls({k: list(v) for k, v in arrays.items()})


@dataclass
class LossWindow:
    """Running sums between two history rows (the row's loss is their mean).

    ``n`` counts the steps with a loss; ``unscored`` the steps whose chunk had no counted
    position (a sequence task's chunk before its loss, e.g. the adding task's early chunks
    when seq_len cuts the sequence): they update the weights (the optimiser steps on a
    zero gradient) but have no loss to average."""

    loss_sum: float = 0.0
    n: int = 0
    clipped: int = 0
    unscored: int = 0

    def add(self, loss: float, clipped: bool) -> None:
        self.loss_sum += loss
        self.n += 1
        self.clipped += int(clipped)

    def add_unscored(self, clipped: bool) -> None:
        self.unscored += 1
        self.clipped += int(clipped)

    @property
    def steps(self) -> int:
        return self.n + self.unscored

    def to_dict(self) -> dict:
        out = {"loss_sum": self.loss_sum, "n": self.n, "clipped": self.clipped}
        if self.unscored:
            out["unscored"] = self.unscored
        return out


@dataclass
class TrainState:
    step: int  # steps done
    params: Any  # engine.Params or gated.GRUParams/LSTMParams, packed (arrays view .flat)
    optimizer: Any  # rnn_lab.core.optim.SGD | Adagrad | Adam (its .state is saved)
    h: np.ndarray  # (B, H) carried into the next chunk
    task: Any  # the data stream; its state_dict() is the pointer
    rng: np.random.Generator  # sampling during training
    recent_losses: deque = field(default_factory=lambda: deque(maxlen=LOSS_WINDOW))
    best_val_loss: float = math.inf
    val_loss: float = math.nan
    window: LossWindow = field(default_factory=LossWindow)
    wall_time_s: float = 0.0  # training time of earlier sessions of this run
    rows: list[dict] = field(default_factory=list)  # history.csv
    recorder: Recorder = field(default_factory=Recorder)  # diagnostics.npz
    c: np.ndarray | None = None  # (B, H) the LSTM's cell state carried along with h
    # The last recorded spectrum and the recurrent weight it was computed from (not saved:
    # run.step.spectrum reuses it while the weight is unchanged, e.g. with freeze_whh).
    spectrum_memo: Any = field(default=None, repr=False, compare=False)

    @property
    def recurrent_state(self) -> tuple[np.ndarray, ...]:
        """What the cell carries between chunks: (h,) or, for the LSTM, (h, c)."""
        return (self.h,) if self.c is None else (self.h, self.c)

    @recurrent_state.setter
    def recurrent_state(self, value: tuple[np.ndarray, ...]) -> None:
        self.h = value[0]
        self.c = value[1] if len(value) > 1 else None

    @classmethod
    def start(cls, params, optim: dict, task, batch_size: int, seed: int):
        """Step 0: packed parameters, a fresh optimiser, h = 0 (and c = 0), the sampling RNG
        from seed."""
        params = cells.pack(params)
        cell = cells.cell_of(params)
        zeros = cells.zero_state(cell, batch_size, params.hidden_size, params.dtype)
        state = cls(0, params, _optimizer(optim), zeros[0], task, np.random.default_rng(seed))
        state.recurrent_state = zeros
        return state

    def to_arrays(self, settings: dict, run_id: str) -> dict[str, np.ndarray]:
        """The checkpoint. The parameters keep their plain names (W_xh, W_hh, ... or torch's
        weight_ih_l0, ... for gated cells), so a checkpoint also works as ``init=file`` and a
        gated one loads into torch.nn.GRU / LSTM."""
        arrays: dict[str, np.ndarray] = dict(self.params.arrays())
        arrays.update({f"optim.{k}": np.asarray(v) for k, v in self.optimizer.state.items()})
        arrays["h"] = self.h
        if self.c is not None:
            arrays["c"] = self.c
        arrays["step"] = np.array(self.step)
        arrays["task_state"] = np.array(json.dumps(self.task.state_dict()))
        arrays["rng_state"] = np.array(json.dumps(self.rng.bit_generator.state))
        arrays["recent_losses"] = np.array(list(self.recent_losses), dtype=np.float64)
        arrays["best_val_loss"] = np.array(self.best_val_loss)
        arrays["val_loss"] = np.array(self.val_loss)
        arrays["acc"] = np.array(json.dumps(self.window.to_dict()))
        arrays["wall_time_s"] = np.array(self.wall_time_s)
        arrays["settings"] = np.array(json.dumps(settings, sort_keys=True))
        arrays["run_id"] = np.array(run_id)
        return arrays

    @classmethod
    def from_arrays(
        cls, arrays: dict[str, np.ndarray], optim: dict, task, cell: str = "rnn"
    ) -> TrainState:
        """The state a checkpoint holds; ``task`` is moved to the saved pointer."""
        task.load_state_dict(json.loads(str(arrays["task_state"])))
        opt = _optimizer(optim)
        opt.state = {k[len("optim.") :]: arrays[k].copy() for k in arrays if k.startswith("optim.")}
        rng = np.random.default_rng()
        rng.bit_generator.state = json.loads(str(arrays["rng_state"]))
        recent = deque((float(x) for x in arrays["recent_losses"]), maxlen=LOSS_WINDOW)
        return cls(
            step=int(arrays["step"]),
            params=cells.pack(cells.params_from_arrays(cell, arrays)),
            optimizer=opt,
            h=arrays["h"].copy(),
            task=task,
            rng=rng,
            recent_losses=recent,
            best_val_loss=float(arrays["best_val_loss"]),
            val_loss=float(arrays["val_loss"]),
            window=LossWindow(**json.loads(str(arrays["acc"]))),
            wall_time_s=float(arrays["wall_time_s"]),
            c=arrays["c"].copy() if "c" in arrays else None,
        )

    @property
    def final_loss(self) -> float | None:
        return float(np.mean(self.recent_losses)) if self.recent_losses else None


def saved_settings(arrays: dict[str, np.ndarray]) -> dict:
    return json.loads(str(arrays["settings"]))


def _optimizer(optim: dict):
    kwargs = {k: v for k, v in optim.items() if k != "name" and v is not None}
    return make_optimizer(optim.get("name", "sgd"), **kwargs)
