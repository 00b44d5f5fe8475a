"""A single run's analysis and plots on worker processes forked before its training.

In the training process, the end of a run is one step after another after the last step:
import scipy, pandas and matplotlib, analyse, draw nine figures (docs/everyday_run.md has the
measured times). An AnalysisPool is forked before training: its first worker imports them and
draws a first figure while the run trains (the trainer uses one core, so on a machine with a
free core this costs the training nothing) and forks the others, warm; then they share the
end: the analysis and the training-dynamics figures start at once, the figures drawn from
analysis.json once it is written, the heaviest first. (torch is not imported: the untrained
network the analysis compares with is read from rnn_lab.run.init_cache, where the training
process put it.) Each file is written by the function the in-process path uses
(analysis.analyze_run, plots.draw_plot), so the files and their bytes are the same; the
workers' log lines are sent back and logged by the training process (terminal, train.log).

A worker that dies (killed, out of memory) costs time only: its task goes to another worker,
or to the training process when none is left. Workers ignore Ctrl-C (the training process
handles it) and end when the pool is closed or the training process ends (their pipe closes).
Only where processes can fork (Linux, macOS); elsewhere :func:`open_pool` gives None and the
run's own process does it all. Sweeps do not use a pool: their jobs already fill the cores.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
import pickle
import signal
import sys
from multiprocessing.connection import Connection, wait
from pathlib import Path

# Only the light run_end here: the training process forks the pool before training, and what
# it imports then is on its path (the analysis and the plots: pandas, matplotlib, scipy).
from rnn_lab import usable_cpus
from rnn_lab.inspect.run_end import PLOT_NAMES, READ_ANALYSIS, log_failed_analysis, log_written
from rnn_lab.run.rundir import ANALYSIS_FILE

ANALYSIS = ANALYSIS_FILE  # the task that writes it (and merges summary.json)
# The figures by drawing time, heaviest first (CPU seconds in a warm worker, a default run,
# fixed margins: gradient_profile 0.37, word_categories 0.36, hidden_trajectory 0.25,
# jacobian 0.22, loss 0.17, spectral 0.12, memory_probe 0.08, word_position 0.08, saturation
# 0.06): a long one handed out last would keep the other workers waiting for it.
HEAVIEST_FIRST = (
    "gradient_profile.png",
    "word_categories.png",
    "hidden_trajectory.png",
    "jacobian.png",
    "loss.png",
    "spectral.png",
    "memory_probe.png",
    "word_position.png",
    "saturation.png",
)
log = logging.getLogger("rnn_lab")
JOIN_SECONDS = 5.0  # how long close() lets a worker finish its task before it is terminated


def open_pool(workers: int) -> AnalysisPool | None:
    """A pool of ``workers`` processes, at most one per CPU this process may use; None for 0,
    on one CPU (the workers would take the training's core) or where processes cannot fork."""
    workers = min(workers, usable_cpus())
    if workers <= 0 or usable_cpus() < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return None
    return AnalysisPool(workers)


class AnalysisPool:
    """Worker processes that warm up now and analyse and plot a run later (a context manager:
    leaving it ends them)."""

    def __init__(self, workers: int):
        ctx = multiprocessing.get_context("fork")
        sys.stdout.flush()  # a line still in a buffer would be written again by each child
        sys.stderr.flush()
        pipes = [ctx.Pipe() for _ in range(workers)]
        # One process warms up and then forks the others (one import's work, not one each:
        # on a busy machine every import is CPU taken from the training).
        self._first = ctx.Process(
            target=_serve_all, args=pipes, name="rnn_lab-analysis", daemon=True
        )
        self._first.start()
        for _, theirs in pipes:
            theirs.close()
        self._conns = [mine for mine, _ in pipes]
        self._pid: dict[Connection, int | None] = dict.fromkeys(self._conns)  # once it said

    @property
    def pids(self) -> list[int]:
        """The workers' process ids (waits for them to have warmed up)."""
        for conn in self._conns:
            self._hello(conn)
        return [pid for pid in self._pid.values() if pid is not None]

    def __enter__(self) -> AnalysisPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """End the workers: each sees its pipe close once its task (if any) is done; the first
        waits for the ones it forked."""
        for conn in self._conns:
            conn.close()
        self._first.join(JOIN_SECONDS)
        if self._first.is_alive():
            self._first.terminate()
            self._first.join()
        self._conns = []

    def analyze_and_plot(self, run_dir: str | Path, plots: bool = True) -> dict | None:
        """What analysis.analyze_and_plot does, on the workers: the merged summary, None when
        the analysis failed (logged; the training-dynamics plots are drawn all the same)."""
        run_dir = str(run_dir)
        names = sorted((name for name in PLOT_NAMES if plots), key=_priority)
        ready = [ANALYSIS] + [n for n in names if n not in READ_ANALYSIS]
        after_analysis = [n for n in names if n in READ_ANALYSIS]
        idle = [c for c in self._conns if self._pid[c] is not None]
        warming = [c for c in self._conns if self._pid[c] is None]  # a task waits for them
        busy: dict[Connection, str] = {}
        summary, drawn = None, {}
        while ready or busy:
            while ready and idle:
                conn = idle.pop(0)
                try:
                    conn.send((ready[0], run_dir))
                except OSError:  # a worker that died: the next one, or this process
                    self._lost(conn)
                    continue
                busy[conn] = ready.pop(0)
            if not busy and not warming:  # no worker left: the rest here, as without a pool
                done = [(task, _run_task(task, run_dir)) for task in ready]
                ready = []
            else:
                done = []
                for conn in wait([*busy, *warming]):
                    if conn in warming:
                        warming.remove(conn)
                        if self._hello(conn):
                            idle.append(conn)
                        continue
                    task = busy.pop(conn)
                    try:
                        outcome, records = conn.recv()
                    except (EOFError, OSError):
                        self._lost(conn)
                        ready.insert(0, task)
                        continue
                    for record in records:
                        logging.getLogger(record.name).handle(record)
                    done.append((task, outcome))
                    idle.append(conn)
            for task, (ok, value) in done:
                if task != ANALYSIS:
                    drawn[task] = value if ok else None
                elif ok:
                    summary = value
                    ready = sorted(ready + after_analysis, key=_priority)
                else:
                    log_failed_analysis(run_dir, value)
        if plots:
            log_written([drawn[n] for n in PLOT_NAMES if drawn.get(n) is not None])
        return summary

    def _hello(self, conn: Connection) -> bool:
        """Read a worker's first message (its pid, once warmed up); False when it died."""
        if self._pid.get(conn) is None and conn in self._conns:
            try:
                self._pid[conn] = conn.recv()
            except (EOFError, OSError):
                self._lost(conn)
                return False
        return conn in self._conns

    def _lost(self, conn: Connection) -> None:
        pid = self._pid.pop(conn, None)
        self._conns.remove(conn)
        conn.close()
        log.warning("analysis worker %s ended: its work goes on", pid or "(warming up)")


def _priority(task: str) -> int:
    """The analysis first (4 figures wait for it), then heaviest first (a plot not measured yet
    last)."""
    if task == ANALYSIS:
        return -1
    return HEAVIEST_FIRST.index(task) if task in HEAVIEST_FIRST else len(HEAVIEST_FIRST)


def _run_task(task: str, run_dir: str) -> tuple[bool, object]:
    """(True, the summary or the figure's path or None) or (False, the error)."""
    from rnn_lab.inspect.analysis import analyze_run
    from rnn_lab.inspect.plots import draw_plot

    try:
        if task == ANALYSIS:
            return True, analyze_run(run_dir, plots=False)
        return True, draw_plot(run_dir, task)  # a failure is logged, the path None
    except Exception as e:
        return False, e


# ---- in the worker -----------------------------------------------------------------------


class _Records(logging.Handler):
    """The worker's log records, sent to the training process with each task's outcome."""

    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        record.msg, record.args = record.getMessage(), None  # the arguments may not pickle
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        self.records.append(record)

    def take(self) -> list[logging.LogRecord]:
        out, self.records = self.records, []
        return out


def _serve_all(*pipes: tuple[Connection, Connection]) -> None:
    """The first worker: warm up, fork the others (each keeps its own pipe end only: an end
    left open elsewhere would keep a pipe from closing when its owner ends, and a worker would
    outlive the training process), serve, then wait for the ones it forked."""
    for mine, _ in pipes:
        mine.close()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the training process's
    records = _Records()
    # The training process's handlers (its terminal, train.log) are its own: lines go to it.
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        if isinstance(logger, logging.Logger):
            logger.handlers = []
    logging.getLogger().addHandler(records)
    _warm_up()
    records.take()
    ends = [theirs for _, theirs in pipes]
    forked = []
    for i, end in enumerate(ends[1:], start=1):
        pid = os.fork()
        if pid == 0:  # a worker forked from the warm one
            for other in ends[:i] + ends[i + 1 :]:
                other.close()
            try:
                _serve(end, records)
            finally:
                os._exit(0)
        forked.append(pid)
        end.close()
    _serve(ends[0], records)
    for pid in forked:
        os.waitpid(pid, 0)


def _serve(conn: Connection, records: _Records) -> None:
    """A warm worker: say its pid, then run the tasks it is sent until its pipe closes."""
    try:
        conn.send(os.getpid())
    except OSError:
        return
    while True:
        try:
            task, run_dir = conn.recv()
        except (EOFError, OSError):
            return
        ok, value = _run_task(task, run_dir)
        if not ok:
            value = _picklable(value)
        try:
            conn.send(((ok, value), records.take()))
        except OSError:
            return


def _warm_up() -> None:
    """Import what the analysis and the figures need and draw one small figure (the first
    figure of a process loads fonts and fills caches)."""
    import scipy.cluster.hierarchy  # noqa: F401  (the dendrogram: imported where it is used)
    import scipy.special  # noqa: F401

    import rnn_lab.inspect.analysis  # noqa: F401
    import rnn_lab.inspect.plots  # noqa: F401
    from rnn_lab.inspect.figure_io import ONE_AXES, new_figure

    fig = new_figure(2, 2, ONE_AXES)
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], label="warm-up")
    ax.set_title("warm-up")
    ax.legend()
    fig.savefig(io.BytesIO(), format="png")


def _picklable(error: Exception) -> Exception:
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
