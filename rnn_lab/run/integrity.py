"""Is a run directory sound? One list of reasons, shared by every reader that must not trust a
damaged run: the collector (which reports such a run as ``damaged``) and the trainer (which
retrains a "finished" run whose files do not hold up).

Atomic writes mean a file is never half-written by the trainer itself, but a directory can
still be damaged afterwards: a disk that filled up, a copy that was cut off, a file edited by
hand, an earlier run's file left next to a newer summary. The checks, per file:

- ``summary.json`` parses and is a JSON object; a run that reports ``ok``, ``diverged`` or
  ``interrupted`` names an integer ``steps_done``; an ``ok`` run did every step it asked for.
- ``checkpoint.npz`` loads (it must exist for ``ok``, ``diverged`` and ``interrupted``; when
  present for any other status it must load too) and has a ``step``: equal to ``steps_done``
  for a finished run (``ok``, ``diverged``), not beyond it for an ``interrupted`` one (the
  trainer checkpoints at the step it stops; an older checkpoint only costs steps on resume).
- ``diagnostics.npz`` loads when present, and must be present for an ``ok`` run whose
  ``settings.json`` says ``record: true``; ``settings.json`` parses when present.
- ``history.csv`` parses; an ``ok`` run's last row is step ``steps_done`` (the trainer always
  records the last step); a ``diverged`` or ``interrupted`` run's last row is not beyond it.
- ``analysis.json`` parses when present. An analysis of another run is not damage (readers
  merge it only when :func:`rnn_lab.run.rundir.analysis_matches`).

A ``running`` or ``failed`` run gets the loading checks only: its summary's ``steps_done`` is
where it started or last recorded, not where its files end.

NumPy and the standard library only, reading through :mod:`rnn_lab.run.rundir`, so the
collector can use it without importing the engine or the training loop.
"""

from __future__ import annotations

import csv
from pathlib import Path

from rnn_lab.run.rundir import (
    ANALYSIS_FILE,
    CHECKPOINT_FILE,
    DIAGNOSTICS_FILE,
    DIVERGED,
    FINISHED_STATUSES,
    HISTORY_FILE,
    INTERRUPTED,
    OK,
    SETTINGS_FILE,
    SUMMARY_FILE,
    RunDirError,
    read_history_rows,
    read_json,
    read_npz,
)

# Statuses the trainer writes only after a final checkpoint (see rnn_lab.run.trainer).
CHECKPOINTED_STATUSES = (OK, DIVERGED, INTERRUPTED)
# Reasons are one line each; a zip error can quote a whole member list.
MAX_REASON = 200


def verify_run_dir(run_dir: str | Path) -> list[str]:
    """Every problem found in run_dir, one short reason each; [] when the directory is sound.

    Each reason starts with the name of the file it concerns ("checkpoint.npz is at step 150,
    summary.json says steps_done 200"), so a caller can tell, e.g., whether the checkpoint
    itself is usable: ``any(p.startswith(CHECKPOINT_FILE) for p in problems)``.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return [f"{run_dir} is not a directory"]
    problems: list[str] = []
    summary = _check_summary(run_dir, problems)
    status = summary.get("status")
    steps_done = summary.get("steps_done")
    if not _is_int(steps_done):
        steps_done = None  # already reported when the status needs it
    _check_checkpoint(run_dir, status, steps_done, problems)
    settings = _read_object(run_dir / SETTINGS_FILE, problems, required=False)
    _check_diagnostics(run_dir, status, bool(settings.get("record")), problems)
    _check_history(run_dir, status, steps_done, problems)
    _read_object(run_dir / ANALYSIS_FILE, problems, required=False)
    return problems


def _check_summary(run_dir: Path, problems: list[str]) -> dict:
    """The summary as a dict ({} when missing or unusable, with the reason recorded)."""
    summary = _read_object(run_dir / SUMMARY_FILE, problems, required=True)
    status, steps_done = summary.get("status"), summary.get("steps_done")
    if status in CHECKPOINTED_STATUSES and not _is_int(steps_done):
        problems.append(f"{SUMMARY_FILE} says {status} but has no integer steps_done")
    steps = summary.get("steps")
    if status == OK and _is_int(steps_done) and _is_int(steps) and steps_done != steps:
        problems.append(f"{SUMMARY_FILE} says ok after {steps_done} of {steps} steps")
    return summary


def _check_checkpoint(run_dir: Path, status, steps_done: int | None, problems: list[str]) -> None:
    path = run_dir / CHECKPOINT_FILE
    if not path.exists():
        if status in CHECKPOINTED_STATUSES:
            problems.append(f"{CHECKPOINT_FILE} is missing (the run says {status})")
        return
    try:
        arrays = read_npz(path)
    except RunDirError as e:
        problems.append(_short(str(e)))
        return
    try:
        step = int(arrays["step"])
    except KeyError:
        problems.append(f"{CHECKPOINT_FILE} has no step")
        return
    except (TypeError, ValueError):
        problems.append(f"{CHECKPOINT_FILE} has a step that is not one integer")
        return
    if steps_done is None:
        return
    if status in FINISHED_STATUSES and step != steps_done:
        problems.append(
            f"{CHECKPOINT_FILE} is at step {step}, {SUMMARY_FILE} says steps_done {steps_done}"
        )
    elif status == INTERRUPTED and step > steps_done:
        problems.append(
            f"{CHECKPOINT_FILE} is at step {step}, beyond steps_done {steps_done} in {SUMMARY_FILE}"
        )


def _check_diagnostics(run_dir: Path, status, recorded: bool, problems: list[str]) -> None:
    path = run_dir / DIAGNOSTICS_FILE
    if path.exists():
        try:
            read_npz(path)
        except RunDirError as e:
            problems.append(_short(str(e)))
    elif status == OK and recorded:
        problems.append(f"{DIAGNOSTICS_FILE} is missing ({SETTINGS_FILE} says record: true)")


def _check_history(run_dir: Path, status, steps_done: int | None, problems: list[str]) -> None:
    path = run_dir / HISTORY_FILE
    if not path.exists():
        if status == OK:
            problems.append(f"{HISTORY_FILE} is missing")
        return
    try:
        rows = read_history_rows(path)
    except (ValueError, csv.Error, UnicodeDecodeError, OSError) as e:
        problems.append(_short(f"{HISTORY_FILE} is unparseable ({_one_line(e)})"))
        return
    last = rows[-1]["step"] if rows else None
    if steps_done is None:
        return
    if status == OK and last != steps_done:
        where = "has no rows" if last is None else f"ends at step {last}"
        problems.append(f"{HISTORY_FILE} {where}, {SUMMARY_FILE} says steps_done {steps_done}")
    elif status in (DIVERGED, INTERRUPTED) and last is not None and last > steps_done:
        problems.append(
            f"{HISTORY_FILE} goes to step {last}, beyond steps_done {steps_done} in {SUMMARY_FILE}"
        )


def _read_object(path: Path, problems: list[str], required: bool) -> dict:
    """A JSON object file as a dict; {} (and a recorded reason) when it is absent or unusable.
    An absent file is a problem only when required."""
    name = path.name
    if not path.exists():
        if required:
            problems.append(f"{name} is missing")
        return {}
    try:
        data = read_json(path)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        empty = path.stat().st_size == 0
        problems.append(f"{name} is empty" if empty else _short(f"{name} is unparseable ({e})"))
        return {}
    except OSError as e:
        problems.append(_short(f"{name} cannot be read ({_one_line(e)})"))
        return {}
    if not isinstance(data, dict):
        problems.append(f"{name} is not a JSON object")
        return {}
    return data


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."
