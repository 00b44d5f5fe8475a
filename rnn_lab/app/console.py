"""What reaches the terminal and what only the log files: the pieces of rnn_lab's logging config.

conf/config.yaml selects conf/hydra/job_logging/rnn_lab.yaml (every job: the terminal and the
run's ``train.log``) and conf/hydra/hydra_logging/rnn_lab.yaml (the launching process of a
sweep: the terminal and the sweep's ``sweep.log``). Both put :class:`ConsoleFilter` on the
terminal's handler:

- a sweep (``hydra.mode=MULTIRUN``): warnings and errors only (a diverged or failed run, a
  refusal). The INFO lines (each run's start, progress, end and analysis, Hydra's job listing,
  the launcher's chatter) go to the run's ``train.log`` and the sweep's ``sweep.log``; the
  terminal has the one line per finished run that rnn_lab.app.progress prints, and the
  report's path;
- a single run: its INFO lines too (its progress is the point), except the loggers named in
  ``file_only`` (``rnn_lab.detail``: the analysis's key=value dump), kept for ``train.log``;
- ``hydra.verbose`` set to anything but false (``rnn-lab study NAME -v`` sets
  ``hydra.verbose=rnn_lab``): everything, as the log files have it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from rnn_lab.run import rundir


def _is_sweep(run_mode) -> bool:
    """hydra.mode as the logging config receives it: RunMode.MULTIRUN, "MULTIRUN" or None."""
    return str(getattr(run_mode, "name", run_mode)) == "MULTIRUN"


class ConsoleFilter(logging.Filter):
    """The terminal handler's filter; see the module docstring."""

    def __init__(self, run_mode=None, verbose=False, file_only=()):
        super().__init__()
        self.sweep = _is_sweep(run_mode)
        self.verbose = bool(verbose)  # hydra.verbose: true, a logger name or a list of them
        self.file_only = tuple(str(name) for name in file_only or ())

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING or self.verbose:
            return True
        if self.sweep:
            return False
        return not any(
            record.name == name or record.name.startswith(name + ".") for name in self.file_only
        )


class SweepLogHandler(logging.FileHandler):
    """Appends to ``<sweep>/sweep.log``, opened at the first line (the folder made then)."""

    def __init__(self, sweep_dir: str | Path):
        path = Path(sweep_dir) / rundir.SWEEP_LOG_FILE
        super().__init__(path, mode="a", encoding="utf-8", delay=True)

    def _open(self):
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


def sweep_log_handler(sweep_dir: str, run_mode=None) -> logging.Handler:
    """The launching process's log file: sweep.log in a sweep; nothing for a single run
    (whose hydra.sweep.dir is a folder that will never exist)."""
    if _is_sweep(run_mode):
        return SweepLogHandler(sweep_dir)
    return logging.NullHandler()
