"""When periodic work happens during training: one rule instead of inline ``step % n`` tests."""

from __future__ import annotations


def due(step: int, every: int, total: int, *, first: bool = False, last: bool = False) -> bool:
    """True when ``step`` (counted from 1) is a multiple of ``every`` (0 disables), or is the
    first step (with ``first``) or the last of ``total`` (with ``last``)."""
    if every > 0 and step % every == 0:
        return True
    return (first and step == 1) or (last and step == total)


def is_record_step(step: int, s) -> bool:
    """The recording schedule: every record_dense_interval steps up to record_dense_until,
    then every record_interval, plus the first and the last step."""
    if step == 1 or step == s.steps:
        return True
    if step <= s.record_dense_until and s.record_dense_interval > 0:
        return step % s.record_dense_interval == 0
    return due(step, s.record_interval, s.steps)


def history_row_due(step: int, s) -> bool:
    """history.csv has a row for this step: a record step or a validation step."""
    return is_record_step(step, s) or due(step, s.val_interval, s.steps)


def profile_due(step: int, s) -> bool:
    """This step's BPTT keeps its per-time-step gradient norms: a record step of a run that
    records."""
    return s.record and is_record_step(step, s)
