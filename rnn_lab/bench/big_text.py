"""Big texts at full speed with default settings: a 400 MB text trained for 2,000 steps.

    python benchmarks/bench_big_text.py                              # writes docs/big_text.md
    python benchmarks/bench_big_text.py --mb 40 --steps 500 --out /tmp/big_text.md  # a quick look

Three processes, each under ``/usr/bin/time -v`` (its wall time and peak resident memory):

1. encode: reading the text and encoding it into a fresh cache, alone (what the first run of
   a text does before training);
2. train, cold cache: ``python -m rnn_lab.train data=text data.path=FILE steps=N`` and nothing
   else (validation every 500 steps on the default sample, analysis and plots at the end) in a
   fresh cache, so it encodes the text first;
3. train, warm cache: the same command in a new run directory: the text is memory-mapped from
   the cache the cold run wrote.

steps/s is the run's own (summary.json: its training loop, validations included); start-up
is the time from launching the process to the run's first log line about its corpus (imports,
reading and encoding the text, or opening the cache).
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rnn_lab import PROJECT_ROOT
from rnn_lab.core.data import VAL_MAX_CHARS, generate_elman_corpus
from rnn_lab.provenance import docs_page, page_header, write_page
from rnn_lab.run.rundir import SUMMARY_FILE, read_json

TARGET_STEPS_PER_S = 500
TARGET_PEAK_MB = 1500
_LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")


def write_big_text(path, n_bytes: int) -> None:
    """~n_bytes of Elman sentences with capitals, double spaces and line breaks (so the
    normalisation has work to do), written as one repeated 16 MB block: seconds, not minutes."""
    sentences = generate_elman_corpus(600, 7).replace("the ", "The  ").replace(" a ", " A\n")
    chunk = (sentences + "\n").encode("utf-8")
    block = chunk * ((16 << 20) // len(chunk))
    with open(path, "wb") as f:
        for _ in range(n_bytes // len(block)):
            f.write(block)
        f.write(chunk * ((n_bytes % len(block)) // len(chunk)))


@dataclass
class Measured:
    """One process: its wall time, peak resident memory and when it started (epoch s)."""

    wall_s: float
    peak_mb: float
    started: float
    log: str


def run_timed(cmd: list[str], env: dict, log_path: Path) -> Measured:
    """cmd under /usr/bin/time -v; raises with the log's tail when it fails."""
    started = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.run(["/usr/bin/time", "-v", *cmd], stdout=log, stderr=log, env=env)
    text = log_path.read_text(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{text[-3000:]}")
    return measured_from_log(text, started)


def measured_from_log(text: str, started: float) -> Measured:
    """The wall time and peak memory that /usr/bin/time -v wrote at the end of a log."""
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text)
    seconds = 0.0
    for part in wall.group(1).split(":"):
        seconds = seconds * 60 + float(part)
    return Measured(seconds, int(peak.group(1)) / 1024, started, text)


def _log_time(line: str) -> float:
    stamp = _LOG_TIME.match(line).group(1)
    return datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def _first_line(log: str, needle: str) -> str:
    return next(line for line in log.splitlines() if needle in line and _LOG_TIME.match(line))


def train_command(text: Path, steps: int, run_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "rnn_lab.train",
        "data=text",
        f"data.path={text}",
        f"steps={steps}",
        f"hydra.run.dir={run_dir}",
    ]


def measure_train(text: Path, steps: int, run_dir: Path, env: dict) -> dict:
    m = run_timed(train_command(text, steps, run_dir), env, run_dir.parent / f"{run_dir.name}.log")
    summary = read_json(run_dir / SUMMARY_FILE)
    corpus_line = _first_line(m.log, "validation reads")
    done = _log_time(_first_line(m.log, "done: status="))
    return {
        "wall_s": m.wall_s,
        "peak_mb": m.peak_mb,
        "startup_s": _log_time(corpus_line) - m.started,
        "train_s": summary["wall_time_s"],
        "after_s": m.started + m.wall_s - done,  # analysis, plots, exit
        "steps_per_s": summary["steps_per_s"],
        "status": summary["status"],
        "validation": corpus_line.split("validation reads ", 1)[1].split(" | ")[0].strip(),
        "val_chars_read": summary["val_chars_read"],
    }


def measure_encode(text: Path, env: dict, log_path: Path) -> dict:
    code = (
        "import time; from rnn_lab.run.input_files import encode_text_file; "
        "t = time.perf_counter(); "
        f"c = encode_text_file({str(text)!r}); "
        "print('encoded', len(c.ids), c.vocab.size, time.perf_counter() - t)"
    )
    m = run_timed([sys.executable, "-c", code], env, log_path)
    _, n_chars, vocab, seconds = next(
        line for line in m.log.splitlines() if line.startswith("encoded ")
    ).split()
    return {"wall_s": m.wall_s, "peak_mb": m.peak_mb, "encode_s": float(seconds),
            "n_chars": int(n_chars), "vocab": int(vocab)}  # fmt: skip


ROW_COLUMNS = (("steps_per_s", "{:.0f}"), ("peak_mb", "{:.0f}"), ("startup_s", "{:.1f}"),
               ("train_s", "{:.1f}"), ("after_s", "{:.1f}"), ("wall_s", "{:.1f}"))  # fmt: skip


def _row(name: str, runs: list[dict]) -> str:
    """A table row: each column's lowest-highest over the repeats."""
    cells = []
    for key, fmt in ROW_COLUMNS:
        lo, hi = min(r[key] for r in runs), max(r[key] for r in runs)
        cells.append(fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else
                     f"{fmt.format(lo)}-{fmt.format(hi)}")  # fmt: skip
    return f"| {name} | " + " | ".join(cells) + " |"


# why: the page's parts, each measured by main.
def render(args, size_mb: float, enc: dict, cold: list, warm: list, command: str) -> str:
    ok = all(
        r["steps_per_s"] >= TARGET_STEPS_PER_S and r["peak_mb"] < TARGET_PEAK_MB
        for r in cold + warm
    )
    lines = [
        page_header("A big text with default settings", command),
        f"\nThe text: {size_mb:.0f} MB of Elman sentences with capitals, double spaces and line "
        f"breaks (`rnn_lab.bench.big_text.write_big_text`), {enc['n_chars']:,} characters after "
        f"the default normalisation, V={enc['vocab']}. Each run: "
        f"`python -m rnn_lab.train data=text data.path=FILE steps={args.steps}` and nothing "
        "else (H=64, seq_len=25, validation every 500 steps, analysis and plots at the end). "
        f"Validation read {cold[0]['validation']}: the default "
        f"`val_max_chars={VAL_MAX_CHARS}` (set `val_max_chars=0` for the whole split). Each "
        f"run {len(cold)} times (the first run of the text with a fresh cache each time), "
        "lowest-highest:\n",
        "| run | steps/s (training loop) | peak RSS (MB) | start-up (s) | training (s) | "
        "analysis + plots (s) | wall (s) |",
        "|---|---:|---:|---:|---:|---:|---:|",
        _row("first run of the text (encodes it into the cache)", cold),
        _row("later runs (the cache, memory-mapped)", warm),
        "",
        f"Reading and encoding the text alone: {enc['encode_s']:.1f} s "
        f"({size_mb / max(enc['encode_s'], 1e-9):.0f} MB/s), peak RSS {enc['peak_mb']:.0f} MB. "
        "Start-up counts from launching the process to the run's first line about its corpus "
        "(imports, then the text: encoded, or opened from the cache).",
        "",
        f"Target (issue 19): >= {TARGET_STEPS_PER_S} steps/s and < {TARGET_PEAK_MB} MB peak "
        f"RSS at default settings: **{'met' if ok else 'NOT met'}** on this machine.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_big_text", description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=400, help="size of the text in MB")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=docs_page("big_text.md"))
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary one")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each kind")
    args = parser.parse_args(argv)
    command = "python benchmarks/bench_big_text.py" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:])
    )
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="big_text.") as tmp:
        work = Path(tmp)
        text = work / "big.txt"
        write_big_text(text, int(args.mb * 1e6))
        size_mb = text.stat().st_size / 1e6
        print(f"wrote {text} ({size_mb:.0f} MB)", flush=True)
        env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
        enc = measure_encode(text, {**env, "RNN_LAB_CACHE": str(work / "c0")}, work / "enc.log")
        print(f"encode: {enc}", flush=True)
        cold, warm = [], []
        for k in range(args.repeats):  # a fresh cache for each first run, then its later run
            env["RNN_LAB_CACHE"] = str(work / f"cache{k}")
            cold.append(measure_train(text, args.steps, work / f"cold{k}", env))
            print(f"cold cache: {cold[-1]}", flush=True)
            warm.append(measure_train(text, args.steps, work / f"warm{k}", env))
            print(f"warm cache: {warm[-1]}", flush=True)
    page = render(args, size_mb, enc, cold, warm, command)
    print(page)
    write_page(args.out, page)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
