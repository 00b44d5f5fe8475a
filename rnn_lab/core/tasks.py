"""Synthetic sequence tasks: copy, adding and memory capacity.

The tasks where init, activation, truncation, clipping and a frozen W_hh decide whether a
vanilla RNN can learn at all. Each is a ``data=`` option with the interface the trainer
consumes (the same as :class:`rnn_lab.core.data.CharTextTask`): ``next_batch()``,
``validation_batches()``, ``state_dict()`` / ``load_state_dict()``, ``loss_name``,
``input_size``, ``output_size`` and ``data_sha1``.

- ``copy`` (Hochreiter & Schmidhuber 1997; Arjovsky, Shah & Bengio 2016): ``length`` L
  symbols drawn uniformly from ``symbols`` S, then ``delay`` T steps: T - 1 blanks and the
  delimiter; then L more blanks, during which the network must output the L symbols in
  order. A sequence is T + 2L steps; the targets are blanks except the last L steps (the
  recall positions). Inputs are indices (0 blank, 1..S the symbols, S + 1 the delimiter; one
  hot by lookup); outputs S + 1 classes (0 blank, 1..S). The loss is the cross-entropy of
  every step (the papers' measure). The memoryless baseline, which outputs blank with
  certainty before the recall window and a uniform guess in it, costs
  ``L ln S / (T + 2L)`` nats per step: 0.520 at L = 10, S = 8, T = 20.
- ``adding`` (Hochreiter & Schmidhuber 1997; Le, Jaitly & Hinton 2015): ``length`` T steps
  of (value ~ U[0, 1), marker); exactly two markers, one in each half (the first in steps
  [0, T // 2), the second in [T // 2, T)); the target, at the last step only, is the sum of
  the two marked values; a linear readout with the mean squared error there. Answering 1
  whatever the input costs Var(u1 + u2) = 1/6 (the baseline).
- ``memory_capacity`` (Jaeger 2002): an i.i.d. input stream u(t) ~ U[-0.5, 0.5]; the
  network is trained (unless W_hh is frozen) to output u(t - k) for k = 1 .. ``max_delay``
  K, squared error on every step t >= K of a sequence of ``length`` steps (the first K steps
  have no full set of targets). The measured memory capacity (rnn_lab.inspect.task_metrics) uses
  ridge readouts on the hidden states, not the trained W_hy.

Every sequence starts from h = 0 (``reset_h`` on its first chunk). With ``seq_len`` shorter
than the sequence, a sequence is cut into ceil(N / seq_len) chunks, one training step each,
h carried from chunk to chunk and the gradient cut between them, as on text; the last
chunk may be shorter. A fresh batch of B sequences is drawn when the previous one is used up.

Determinism: training batches come from ``np.random.default_rng([data.seed, 0])``, the
validation set from ``[data.seed, 1]`` (fixed: generated once), analysis fits from
``[data.seed, 2]``. ``state_dict()`` holds the generator's state before the current batch
and the chunk reached, so a resumed run regenerates the same batch and continues
bit-identically.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from rnn_lab.core.batch import Batch

GENERATOR_VERSION = 1  # part of data_sha1: bump it when a generator's output changes
VAL_BLOCK_STEPS = 100_000  # time steps x sequences per validation batch (bounds its states)
TRAIN_STREAM, VALIDATION_STREAM, FIT_STREAM = 0, 1, 2  # the spawn keys next to data.seed

# Each task's own keys and their defaults (conf/data/<name>.yaml says the same, commented).
TASK_DEFAULTS: dict[str, dict] = {
    "copy": {"seed": 42, "length": 10, "symbols": 8, "delay": 20, "val_sequences": 1000},
    "adding": {"seed": 42, "length": 100, "val_sequences": 1000},
    "memory_capacity": {"seed": 42, "length": 200, "max_delay": 100, "val_sequences": 50},
}
SEQUENCE_TASKS = tuple(TASK_DEFAULTS)  # data=<name> options (rnn_lab.core.data.DATA_NAMES)


def _bad(key: str, value, allowed: str) -> ValueError:
    return ValueError(f"data.{key}={value!r} is not valid: {allowed}.")


def task_keys(data: dict) -> dict:
    """The task's own keys (defaults filled in) as ints, checked; ValueError naming the key."""
    name = data.get("name")
    if name not in TASK_DEFAULTS:
        raise ValueError(f"data.name: {name!r} is not a sequence task ({', '.join(TASK_DEFAULTS)})")
    keys = {k: v if data.get(k) is None else data[k] for k, v in TASK_DEFAULTS[name].items()}
    minimum = {"seed": 0, "symbols": 2, "length": 1, "delay": 1, "max_delay": 1, "val_sequences": 1}
    if name == "adding":
        minimum["length"] = 2  # one marker in each half
    for k, v in keys.items():
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < minimum[k]:
            raise _bad(k, v, f"must be an integer >= {minimum[k]}")
        keys[k] = int(v)
    if name == "memory_capacity" and keys["length"] <= keys["max_delay"]:
        raise _bad(
            "length",
            keys["length"],
            f"must be greater than data.max_delay={keys['max_delay']} (the first max_delay "
            "steps of a sequence carry no loss)",
        )
    return {"name": name, **keys}


def sequence_length(data: dict) -> int | None:
    """N, the steps of one sequence of a sequence task; None for a text task."""
    if data.get("name") not in TASK_DEFAULTS:
        return None
    keys = task_keys(data)
    if keys["name"] == "copy":
        return keys["delay"] + 2 * keys["length"]
    return keys["length"]


# --------------------------------------------------------------------------------------
# Budgets: steps from characters (time steps x streams) and back
# --------------------------------------------------------------------------------------


def time_steps_seen(data: dict, seq_len: int, batch_size: int, steps: int) -> int:
    """Time steps x streams the first ``steps`` training steps read (characters on text)."""
    N = sequence_length(data)
    if N is None:
        return steps * seq_len * batch_size
    per_sequence = math.ceil(N / seq_len)  # chunks (steps) per sequence
    full, partial = divmod(steps, per_sequence)
    return batch_size * (full * N + min(partial * seq_len, N))


def budget_steps(data: dict, seq_len: int, batch_size: int, budget: int) -> int:
    """The fewest steps that read at least ``budget`` time steps x streams: on text
    ceil(budget / (seq_len x B)); on a sequence task the chunks as they fall (the last chunk
    of a sequence may be shorter than seq_len)."""
    N = sequence_length(data)
    if N is None:
        return math.ceil(budget / (seq_len * batch_size))
    per_sequence = math.ceil(N / seq_len)
    full, rest = divmod(budget, batch_size * N)
    return full * per_sequence + math.ceil(rest / (batch_size * seq_len))


def sequences_seen(data: dict, seq_len: int, batch_size: int, steps: int) -> int | None:
    """Whole sequences (all B streams counted) the first ``steps`` steps trained on."""
    N = sequence_length(data)
    if N is None:
        return None
    return batch_size * (steps // math.ceil(N / seq_len))


# --------------------------------------------------------------------------------------
# The tasks
# --------------------------------------------------------------------------------------


@dataclass
class Sequences:
    """n whole sequences, time-major."""

    inputs: np.ndarray  # (N, n) int indices or (N, n, D) float
    targets: np.ndarray  # (N, n) int classes or (N, n, O) float
    mask: np.ndarray | None  # (N, n) 0/1 positions that count; None = every position

    def block(self, start: int, stop: int) -> Sequences:
        """Sequences start .. stop - 1 (views)."""
        mask = None if self.mask is None else self.mask[:, start:stop]
        return Sequences(self.inputs[:, start:stop], self.targets[:, start:stop], mask)

    @property
    def n(self) -> int:
        return self.inputs.shape[1]


class SequenceTask:
    """A fresh batch of B sequences, walked in chunks of seq_len; see the module docstring."""

    name = ""
    loss_name = ""
    vocab = None  # not a text: no characters to sample or decode
    index_inputs = False  # real-valued inputs (T, B, D); True: indices (T, B), one hot

    def __init__(self, data: dict, seq_len: int, batch_size: int = 1, dtype=np.float64):
        self.keys = task_keys({**data, "name": self.name})
        self.seed = self.keys["seed"]
        self.seq_len, self.batch_size, self.dtype = seq_len, batch_size, np.dtype(dtype)
        self.length = sequence_length(self.keys)  # N
        self.chunks_per_sequence = math.ceil(self.length / seq_len)
        self.chunk_len = min(seq_len, self.length)  # the longest chunk
        description = {"task": self.name, "version": GENERATOR_VERSION, **self.keys}
        self.data_sha1 = hashlib.sha1(json.dumps(description, sort_keys=True).encode()).hexdigest()
        self._rng = self.stream(TRAIN_STREAM)
        self._chunk = 0  # the next chunk of the current batch; 0: a new batch is due
        self._state_before: dict | None = None  # the generator's state before the current batch
        self._current: Sequences | None = None
        self._validation: Sequences | None = None

    # ---- what a task is ----

    def generate(self, rng: np.random.Generator, n: int) -> Sequences:
        raise NotImplementedError

    def baselines(self) -> dict:
        """The task's reference numbers (task.json; the analysis measures them too)."""
        return {}

    @property
    def input_size(self) -> int:
        raise NotImplementedError

    @property
    def output_size(self) -> int:
        raise NotImplementedError

    def stream(self, key: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, key])

    def info(self) -> dict:
        """What task.json records: the task, its sizes, its data hash and its baselines."""
        return {
            **self.keys,
            "data_sha1": self.data_sha1,
            "sequence_length": self.length,
            "chunks_per_sequence": self.chunks_per_sequence,
            "input_size": self.input_size,
            "output_size": self.output_size,
            "loss": self.loss_name,
            **self.baselines(),
        }

    def describe(self) -> str:
        keys = " ".join(f"{k}={v}" for k, v in self.keys.items() if k != "name")
        return (
            f"data={self.name} ({keys}): sequences of {self.length} steps, "
            f"{self.chunks_per_sequence} chunk(s) each, D={self.input_size}, "
            f"O={self.output_size}, loss {self.loss_name}"
        )

    # ---- training batches ----

    def next_batch(self) -> Batch:
        if self._chunk == 0:
            self._state_before = self._rng.bit_generator.state
            self._current = self.generate(self._rng, self.batch_size)
        start = self._chunk * self.seq_len
        stop = min(start + self.seq_len, self.length)
        seq = self._current
        batch = Batch(
            inputs=seq.inputs[start:stop],
            targets=seq.targets[start:stop],
            mask=None if seq.mask is None else seq.mask[start:stop],
            reset_h=self._chunk == 0,
        )
        self._chunk = (self._chunk + 1) % self.chunks_per_sequence
        return batch

    def state_dict(self) -> dict:
        mid_batch = self._chunk > 0
        state = self._state_before if mid_batch else self._rng.bit_generator.state
        return {"rng_state": state, "chunk": self._chunk}

    def load_state_dict(self, state: dict) -> None:
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = state["rng_state"]
        self._chunk = 0
        chunk = int(state["chunk"])
        if chunk > 0:  # mid-batch: draw the same batch again, then skip the chunks done
            self.next_batch()
            self._chunk = chunk

    # ---- validation: a fixed held-out set ----

    def validation_set(self) -> Sequences:
        """data.val_sequences sequences from their own generator, drawn once."""
        if self._validation is None:
            self._validation = self.generate(
                self.stream(VALIDATION_STREAM), self.keys["val_sequences"]
            )
        return self._validation

    def validation_batches(self) -> Iterator[Batch]:
        """The validation set as whole sequences from h = 0, in blocks of bounded size."""
        val = self.validation_set()
        per_block = max(1, VAL_BLOCK_STEPS // self.length)
        for start in range(0, val.n, per_block):
            b = val.block(start, start + per_block)
            yield Batch(inputs=b.inputs, targets=b.targets, mask=b.mask, reset_h=True)


class CopyTask(SequenceTask):
    name = "copy"
    loss_name = "cross_entropy"
    index_inputs = True

    @property
    def delimiter(self) -> int:
        return self.keys["symbols"] + 1

    @property
    def input_size(self) -> int:
        return self.keys["symbols"] + 2  # blank, the symbols, the delimiter

    @property
    def output_size(self) -> int:
        return self.keys["symbols"] + 1  # blank, the symbols

    def recall_positions(self) -> slice:
        """The last L steps: where the symbols must come out."""
        return slice(self.length - self.keys["length"], self.length)

    def generate(self, rng: np.random.Generator, n: int) -> Sequences:
        L, S, T = self.keys["length"], self.keys["symbols"], self.keys["delay"]
        symbols = rng.integers(1, S + 1, size=(L, n))
        inputs = np.zeros((self.length, n), dtype=np.int64)
        inputs[:L] = symbols
        inputs[L + T - 1] = self.delimiter
        targets = np.zeros((self.length, n), dtype=np.int64)
        targets[self.recall_positions()] = symbols
        return Sequences(inputs, targets, None)

    def baselines(self) -> dict:
        return {
            "memoryless_baseline": copy_memoryless_baseline(**self.keys),
            "recall_chance": 1 / self.keys["symbols"],
        }


def copy_memoryless_baseline(length: int, symbols: int, delay: int, **_) -> float:
    """Nats per step of the best predictor without memory of the symbols: certain blanks
    before the recall window, a uniform guess over the S symbols in it."""
    return length * math.log(symbols) / (delay + 2 * length)


class AddingTask(SequenceTask):
    name = "adding"
    loss_name = "mse"

    @property
    def input_size(self) -> int:
        return 2  # (value, marker)

    @property
    def output_size(self) -> int:
        return 1

    def generate(self, rng: np.random.Generator, n: int) -> Sequences:
        N, cols = self.length, np.arange(n)
        half = N // 2
        values = rng.random((N, n))  # U[0, 1)
        first = rng.integers(0, half, size=n)
        second = rng.integers(half, N, size=n)
        inputs = np.zeros((N, n, 2), dtype=self.dtype)
        inputs[..., 0] = values
        inputs[first, cols, 1] = 1.0
        inputs[second, cols, 1] = 1.0
        targets = np.zeros((N, n, 1), dtype=self.dtype)
        targets[-1, :, 0] = values[first, cols] + values[second, cols]
        mask = np.zeros((N, n), dtype=self.dtype)
        mask[-1] = 1.0
        return Sequences(inputs, targets, mask)

    def baselines(self) -> dict:
        return {"baseline_mse": 1 / 6}  # always answering 1: Var(u1 + u2) = 2/12


class MemoryCapacityTask(SequenceTask):
    name = "memory_capacity"
    loss_name = "mse"
    AMPLITUDE = 0.5  # u ~ U[-0.5, 0.5]

    @property
    def max_delay(self) -> int:
        return self.keys["max_delay"]

    @property
    def input_size(self) -> int:
        return 1

    @property
    def output_size(self) -> int:
        return self.max_delay  # u(t - k), k = 1 .. K

    def generate(self, rng: np.random.Generator, n: int) -> Sequences:
        N, K = self.length, self.max_delay
        u = rng.uniform(-self.AMPLITUDE, self.AMPLITUDE, size=(N, n)).astype(self.dtype)
        targets = np.zeros((N, n, K), dtype=self.dtype)
        for k in range(1, K + 1):
            targets[k:, :, k - 1] = u[:-k]
        mask = np.zeros((N, n), dtype=self.dtype)
        mask[K:] = 1.0
        return Sequences(u[..., None], targets, mask)

    def baselines(self) -> dict:
        return {"input_variance": self.AMPLITUDE**2 / 3}  # the MSE of always answering 0


TASKS: dict[str, type[SequenceTask]] = {
    "copy": CopyTask,
    "adding": AddingTask,
    "memory_capacity": MemoryCapacityTask,
}
assert tuple(TASKS) == SEQUENCE_TASKS


def make_sequence_task(data: dict, seq_len: int, batch_size: int, dtype=np.float64) -> SequenceTask:
    return TASKS[data["name"]](data, seq_len, batch_size, dtype)
