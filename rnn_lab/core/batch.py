"""What a task gives the trainer each step: one chunk of inputs and targets.

Its own module so that the character tasks (rnn_lab.core.data) and the synthetic sequence
tasks (rnn_lab.core.tasks) share it without importing each other the wrong way round:
data builds any task by name and so imports tasks; tasks imports only this.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Batch:
    inputs: np.ndarray  # (T, B) int or (T, B, D) float
    targets: np.ndarray  # (T, B) int or (T, B, O) float
    mask: np.ndarray | None  # (T, B) 0/1 positions that count in the loss, None = all
    reset_h: bool  # True when h must restart from zero before this chunk
