"""A real text, as the walkthrough does it: a char-RNN on ~2.5 MB of English from Debian's
``fortunes`` package (quotations and literature), then a sample from a prime at 0.8.

    apt-get install fortunes                           # /usr/share/games/fortunes
    python benchmarks/real_text.py text fortunes.txt   # the text file only (the recipe below)
    python benchmarks/real_text.py                     # train, sample, write docs/real_text.md

The text (:func:`build_fortunes_text`): every file of the package's folder that is not an
index (``.dat``) or a link (the ``.u8`` names), in name order, each line that is a lone ``%``
(the separator between two fortunes) made an empty line, so fortunes are separated by a blank
line; everything else as it is (capitals, punctuation, tabs, line breaks, the few control
characters of the nroff overstrikes). It is trained with ``data.normalize=false`` so that
capitals and line breaks stay.

The page reports each run's loss curve (train and validation, nats/char) against what a model
without memory gets (the untrained network's ln V, the unigram and n-gram cross-entropies of
the validation split), its wall time, and a sample from ``--prime "To be or"`` at 0.8.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import math
import os
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnn_lab import PROJECT_ROOT
from rnn_lab.bench.big_text import measured_from_log, run_timed
from rnn_lab.provenance import docs_page, load_average, page_header, write_page

FORTUNES_DIR = Path("/usr/share/games/fortunes")
PRIME = "To be or"
SAMPLE_TEMPERATURE = 0.8
SAMPLE_LENGTH = 600
NGRAM_SMOOTHING = 0.05  # add-alpha on the n-gram counts of the training split


# --------------------------------------------------------------------------------------
# The text
# --------------------------------------------------------------------------------------


def fortune_files(folder: Path = FORTUNES_DIR) -> list[Path]:
    """The package's fortune files in name order: not its .dat indexes, not its links."""
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder} does not exist: install Debian's fortunes package "
            "(apt-get install fortunes) or pass the folder that holds the fortune files"
        )
    files = [
        p
        for p in sorted(folder.iterdir(), key=lambda p: p.name)
        if p.is_file() and not p.is_symlink() and p.suffix not in (".dat", ".u8")
    ]
    if not files:
        raise FileNotFoundError(f"{folder} holds no fortune files")
    return files


def build_fortunes_text(out: Path, folder: Path = FORTUNES_DIR) -> dict:
    """Write the text (see the module's docstring); returns its files, characters and sha1."""
    files = fortune_files(folder)
    pieces = []
    for path in files:
        lines = path.read_text(encoding="utf-8").split("\n")
        pieces.append("\n".join("" if line == "%" else line for line in lines))
    text = "".join(pieces)
    data = text.encode("utf-8")
    out.write_bytes(data)
    return {
        "files": len(files),
        "chars": len(text),
        "bytes": len(data),
        "sha1": hashlib.sha1(data).hexdigest(),
        "file_chars": {p.name: len(piece) for p, piece in zip(files, pieces)},
    }


def files_in_validation(file_chars: dict[str, int], n_val: int) -> list[str]:
    """The files whose text is in the last n_val characters (the first one may be in part)."""
    names, end = [], sum(file_chars.values())
    for name, n in reversed(file_chars.items()):
        if end <= sum(file_chars.values()) - n_val:
            break
        names.append(name)
        end -= n
    return names[::-1]


# --------------------------------------------------------------------------------------
# What a model without memory gets
# --------------------------------------------------------------------------------------


def ngram_cross_entropy(train: np.ndarray, val: np.ndarray, n: int, vocab_size: int) -> float:
    """Nats per character of the validation ids under the n-gram model of the training ids
    (add-NGRAM_SMOOTHING on the counts of each context's next character; n = 1: unigram)."""
    train, val = train.astype(np.int64), val.astype(np.int64)

    def codes(ids: np.ndarray, k: int) -> np.ndarray:  # the k-grams of ids as one integer each
        out = np.zeros(len(ids) - k + 1, dtype=np.int64)
        for j in range(k):
            out = out * vocab_size + ids[j : len(ids) - k + 1 + j]
        return out

    def counts(table: np.ndarray, keys: np.ndarray) -> np.ndarray:
        uniq, n_seen = np.unique(table, return_counts=True)
        at = np.clip(np.searchsorted(uniq, keys), 0, len(uniq) - 1)
        return np.where(uniq[at] == keys, n_seen[at], 0)

    grams = codes(val, n)
    seen = counts(codes(train, n), grams)
    if n == 1:
        context = np.full(len(grams), len(train))
    else:
        context = counts(codes(train[:-1], n - 1), grams // vocab_size)
    a = NGRAM_SMOOTHING
    return float(-np.mean(np.log((seen + a) / (context + a * vocab_size))))


def baselines(text_path: Path, val_fraction: float = 0.1) -> dict:
    from rnn_lab.core.data import split_ids
    from rnn_lab.run.input_files import load_corpus

    corpus = load_corpus({"name": "text", "path": str(text_path), "normalize": False})
    train, val = (np.asarray(x) for x in split_ids(corpus.ids, val_fraction))
    V = corpus.vocab.size
    counts = np.bincount(train, minlength=V)
    p = counts[counts > 0] / counts.sum()
    return {
        "V": V,
        "chars": len(corpus.ids),
        "n_train": len(train),
        "n_val": len(val),
        "ln_V": math.log(V),
        "unigram_entropy": float(-(p * np.log(p)).sum()),
        **{f"{n}gram": ngram_cross_entropy(train, val, n, V) for n in (1, 2, 3, 4)},
        "chars_list": corpus.vocab.chars,
    }


# --------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------


@dataclass
class Recipe:
    """One training command on the text: its name and its keys beyond data=text."""

    name: str
    keys: dict
    why: str

    def command(self, text: str, run_dir: str | None = None, quick: bool = False) -> list[str]:
        keys = {**self.keys, **(QUICK if quick else {})}
        cmd = ["python", "-m", "rnn_lab.train", "data=text", f"data.path={text}"]
        cmd += ["data.normalize=false", *(f"{k}={v}" for k, v in keys.items())]
        return cmd + ([f"hydra.run.dir={run_dir}"] if run_dir else [])


WALKTHROUGH = {"hidden_size": 256, "seq_len": 50, "lr": 0.002, "clip": 5}
RECIPES = [
    Recipe(
        "recipe",
        {**WALKTHROUGH, "optim": "adam", "batch_size": 64, "steps": 6000},
        "the walkthrough's H, seq_len, lr and clip with Adam and 64 streams",
    ),
    Recipe(
        "one stream",
        {**WALKTHROUGH, "optim": "adam", "steps": 6000},
        "the same with one stream (batch_size=1), as a new user first tried it",
    ),
]
# --quick: the same commands at a size for a smoke test (seconds, not minutes).
QUICK = {"hidden_size": 16, "steps": 40, "val_interval": 20, "sample_length": 20}


def _log_seconds(log: str, first: str, then: str) -> float | None:
    """Seconds between the first log lines holding `first` and `then` (None if absent)."""
    stamps = {}
    for line in log.splitlines():
        m = re.match(r"^\[\d{4}-\d\d-\d\d (\d\d):(\d\d):(\d\d),(\d{3})\]", line)
        for key in (first, then):
            if m and key in line and key not in stamps:
                h, mi, s, ms = (int(g) for g in m.groups())
                stamps[key] = h * 3600 + mi * 60 + s + ms / 1000
    if first in stamps and then in stamps:
        return (stamps[then] - stamps[first]) % 86400
    return None


def train_recipe(recipe: Recipe, text: Path, work: Path, quick=False, reuse=False) -> dict:
    """Run the recipe's command (under /usr/bin/time -v) and read its run; its final weights'
    validation loss on the whole split too, against the default sample's. reuse: read a run
    (and its time log) that an earlier call left in work, when it finished, instead."""
    from rnn_lab.inspect.load import load_run
    from rnn_lab.run.input_files import make_task
    from rnn_lab.run.lifecycle import validation_loss

    run_dir = work / recipe.name.replace(" ", "_")
    cmd = [sys.executable, *recipe.command(str(text), str(run_dir), quick)[1:]]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "RNN_LAB_CACHE": str(work / "cache")}
    log = work / f"{run_dir.name}.log"
    finished = reuse and log.exists() and load_run(run_dir).summary.get("status") == "ok"
    if finished:
        m = measured_from_log(log.read_text(errors="replace"), 0.0)
    else:
        m = run_timed(cmd, env, log)
    run = load_run(run_dir)
    whole = make_task(run.settings["data"], 1, 1, run.settings["val_fraction"], 0)
    history = run.history
    val_rows = history[history["val_loss"].notna()]
    return {
        "recipe": recipe,
        "run_dir": run_dir,
        "summary": run.summary,
        "wall_s": m.wall_s,
        "peak_mb": m.peak_mb,
        "analysis_s": _log_seconds(m.log, "done: status=", "analysis of "),
        "curve": val_rows[["step", "loss", "val_loss", "spectral_radius", "clip_fraction"]],
        "grad_norm_median": float(history["grad_norm"].median()),
        "train_loss_window": _windowed_train_loss(history, val_rows["step"].tolist()),
        "chars_per_step": run.settings["seq_len"] * run.settings["batch_size"],
        "quick": quick,
        "val_loss_whole": validation_loss(run.params(), run.activation, whole),
    }


def _windowed_train_loss(history, steps: list[int]) -> list[float]:
    """The mean of the recorded training losses since the previous validation step: the
    training loss at a validation step, less noisy than that one chunk's."""
    out, before = [], 0
    for step in steps:
        rows = history[(history["step"] > before) & (history["step"] <= step)]
        out.append(float(rows["loss"].mean()))
        before = step
    return out


def sample(run_dir: Path, seed: int) -> tuple[str, str]:
    """(the command, its output): rnn-lab sample from PRIME at SAMPLE_TEMPERATURE."""
    args = ["sample", str(run_dir), "--prime", PRIME, "--temperature", str(SAMPLE_TEMPERATURE)]
    args += ["--length", str(SAMPLE_LENGTH), "--seed", str(seed)]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    cmd = [sys.executable, "-c", "from rnn_lab.app.cli import main; main()", *args]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
    shown = ["rnn-lab", *args[:1], "RUN_DIR", *args[2:]]
    return " ".join(shlex.quote(a) for a in shown), out.rstrip("\n")


# --------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------


def printable(text: str) -> str:
    """text with control characters other than line breaks and tabs shown as \\xNN."""
    return "".join(
        c if c in "\n\t" or c.isprintable() else f"\\x{ord(c):02x}" for c in text
    ).replace("```", "`\u200b``")


def _curve_table(r: dict) -> list[str]:
    lines = [
        "| step | characters read | train loss | val loss | spectral radius | clipped steps |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    rows = r["curve"].itertuples(index=False)
    for row, train in zip(rows, r["train_loss_window"]):
        lines.append(
            f"| {row.step} | {row.step * r['chars_per_step']:,} | {train:.3f} | "
            f"{row.val_loss:.3f} | {row.spectral_radius:.2f} | {row.clip_fraction:.0%} |"
        )
    return lines


def _run_section(r: dict, text_name: str) -> list[str]:
    s, recipe = r["summary"], r["recipe"]
    cmd = " ".join(shlex.quote(a) for a in recipe.command(text_name, quick=r["quick"]))
    analysis = f"{r['analysis_s']:.0f} s" if r["analysis_s"] is not None else "n/a"
    return [
        f"### {recipe.name}: {recipe.why}",
        "",
        f"```\n{cmd}\n```",
        "",
        f"Training {s['wall_time_s']:.0f} s ({s['steps_per_s']:.0f} steps/s, "
        f"{s['chars_seen']:,} characters read), analysis and plots {analysis}, the whole "
        f"command {r['wall_s']:.0f} s, peak RSS {r['peak_mb']:.0f} MB. End: train loss "
        f"{s['final_loss']:.3f}, validation loss {s['val_loss']:.3f} nats/char "
        f"({s['val_bits_per_char']:.2f} bits/char) on {s['val_chars_read']:,} of the "
        f"{s['val_split_chars']:,} validation characters ({r['val_loss_whole']:.3f} on all of "
        f"them), spectral radius {s['spectral_radius']:.2f}; "
        f"{s['chars_seen'] / max(s['wall_time_s'], 1e-9):,.0f} characters read a second. "
        "Train loss: the mean of the recorded steps since the row before.",
        "",
        *_curve_table(r),
        "",
    ]


def _plateau(recipe: dict, base: dict, info: dict) -> list[str]:
    """Where the recipe stops, against the walkthrough's ~1.3-1.5, in its own numbers."""
    curve, s = recipe["curve"], recipe["summary"]
    last = curve[curve["step"] >= curve["step"].iloc[-1] - 2000]
    path = " -> ".join(f"{v:.3f}" for v in last["val_loss"])
    val_files = files_in_validation(info["file_chars"], base["n_val"])
    return [
        "### Where the recipe stops",
        "",
        f"Not at the walkthrough's ~1.3-1.5 (on Shakespeare): {recipe['val_loss_whole']:.3f} "
        f"nats/char on the whole validation split, {base['4gram'] - recipe['val_loss_whole']:.2f} "
        "below the 4-gram model. Its validation loss over the last 2,000 steps: "
        f"{path} (sample): flattening. Its training loss ({s['final_loss']:.3f}, the last 100 "
        f"steps) is {s['val_loss'] - s['final_loss']:.2f} below its validation loss: the "
        f"validation split is other files ({', '.join(val_files)}; the first in part) than "
        "the training split.",
        "",
    ]


def _why(recipe: dict, one: dict, n_train: int) -> list[str]:
    """What separates the one-stream run from the recipe, in the runs' own numbers."""
    s1, s64 = one["summary"], recipe["summary"]
    rate1 = s1["chars_seen"] / max(s1["wall_time_s"], 1e-9)
    rate64 = s64["chars_seen"] / max(s64["wall_time_s"], 1e-9)
    reached = s1["wall_time_s"] * s64["steps_per_s"]  # the recipe's step at that time
    rows = recipe["curve"][recipe["curve"]["step"] <= reached]
    at_time = (
        f"by then (step {int(rows['step'].iloc[-1])}) its validation loss was "
        f"{rows['val_loss'].iloc[-1]:.3f}"
        if len(rows)
        else "it had not reached its first validation yet"
    )
    return [
        "### Why one stream stays high",
        "",
        f"- Characters read: one stream's {s1['steps_done']:,} steps read {s1['chars_seen']:,} "
        f"characters, {s1['chars_seen'] / n_train:.0%} of one pass over the "
        f"{n_train:,} training characters; the recipe's {s64['steps_done']:,} read "
        f"{s64['chars_seen']:,} ({s64['chars_seen'] / n_train:.1f} passes).",
        f"- Characters a second: {rate1:,.0f} with one stream against {rate64:,.0f} with 64 "
        f"({rate64 / max(rate1, 1e-9):.0f}x): a step of 64 streams does one matrix product "
        "where one stream does 64 matrix-vector ones. In the one-stream run's training time "
        f"({s1['wall_time_s']:.0f} s) the recipe reached step {reached:,.0f}; {at_time}.",
        f"- Clipping: the median gradient norm is {one['grad_norm_median']:.0f} (one stream) "
        f"and {recipe['grad_norm_median']:.0f} (recipe) against clip=5 (the loss is summed "
        "over the 50 characters of a chunk), so every step is clipped in both runs (the "
        "clipped-steps column): the clip sets the length of every gradient Adam sees.",
        "",
    ]


# why: the page's parts, each measured by main.
def render(base: dict, info: dict, runs: list, samples: list, command: str, reuse=False) -> str:
    best = runs[0]["summary"]
    chars = printable("".join(base["chars_list"])).replace("\t", "\\t").replace("\n", "\\n")
    lines = [
        page_header("A real text: a char-RNN on English quotations and literature", command),
        "",
        "The walkthrough's real-world outcome is a char-RNN on ~1 MB of Shakespeare (H=256, "
        "seq_len=50, lr 0.002, clip 5; ~1.3-1.5 nats/char by 20,000 iterations). No such text "
        "can be downloaded here; Debian's `fortunes` package is the real text a user brings.",
        "",
        "## The text",
        "",
        "```\napt-get install fortunes\npython benchmarks/real_text.py text fortunes.txt\n```",
        "",
        f"{info['files']} files of `/usr/share/games/fortunes` (not the `.dat` indexes nor the "
        "`.u8` links) in name order; each separator line `%` becomes an empty line, everything "
        f"else stays as it is. {info['chars']:,} characters ({info['bytes']:,} bytes, sha1 "
        f"`{info['sha1'][:12]}`), V={base['V']} with `data.normalize=false` (capitals, "
        "punctuation, tabs and line breaks kept; the default normalisation would lowercase "
        f"it). The last 10% ({base['n_val']:,} characters) is the validation split. The "
        "characters (tab, line break and control characters escaped):",
        "",
        f"```\n{chars}\n```",
        "",
        "## What a model without memory gets (validation split, nats/char)",
        "",
        "| model | nats/char |",
        "|---|---:|",
        f"| the untrained network: ln V | {base['ln_V']:.3f} |",
        f"| unigram (entropy of the training split: {base['unigram_entropy']:.3f}) | "
        f"{base['1gram']:.3f} |",
        f"| bigram: the last character | {base['2gram']:.3f} |",
        f"| trigram: the last 2 | {base['3gram']:.3f} |",
        f"| 4-gram: the last 3 | {base['4gram']:.3f} |",
        "",
        f"n-grams: counts of the training split with add-{NGRAM_SMOOTHING} smoothing.",
        "",
        "## Training",
        "",
    ]
    for r in runs:
        lines += _run_section(r, "fortunes.txt")
    lines += _plateau(runs[0], base, info)
    lines += _why(runs[0], runs[1], base["n_train"])
    lines += [
        "## A sample of the recipe's run",
        "",
        f"Validation loss {best['val_loss']:.3f} nats/char. Control characters are shown as "
        "`\\xNN`.",
        "",
    ]
    for cmd, text in samples:
        lines += [f"`{cmd}`", "", "```", printable(text), "```", ""]
    reused = " (this page read them again: `--reuse`)" if reuse else ""
    lines += [f"Load average when the page was written: {load_average()}{reused}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="real_text", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command")
    text_cmd = sub.add_parser("text", help="write the text file only")
    text_cmd.add_argument("out", type=Path)
    parser.add_argument("--folder", type=Path, default=FORTUNES_DIR)
    parser.add_argument("--out", type=Path, default=docs_page("real_text.md"))
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="keep the text and runs here (default: a temporary folder, removed at the end)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny runs: a smoke test")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="with --workdir: read the runs an earlier call "
        "finished there (the page again without training again)",
    )
    args = parser.parse_args(argv)
    if args.command == "text":
        info = build_fortunes_text(args.out, args.folder)
        print(f"wrote {args.out}: {info}")
        return 0
    given = argv if argv is not None else sys.argv[1:]
    command = "python benchmarks/real_text.py" + "".join(f" {a}" for a in given if a != "--reuse")
    with contextlib.ExitStack() as stack:
        if args.workdir is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="real_text.")))
        else:
            work = args.workdir
            work.mkdir(parents=True, exist_ok=True)
        text = work / "fortunes.txt"
        info = build_fortunes_text(text, args.folder)
        base = baselines(text)
        print(f"text: {info}; baselines: { {k: v for k, v in base.items() if k != 'chars_list'} }")
        runs = []
        for recipe in RECIPES:
            runs.append(train_recipe(recipe, text, work, args.quick, args.reuse))
            print(f"{recipe.name}: {runs[-1]['summary']}", flush=True)
        samples = [sample(runs[0]["run_dir"], seed) for seed in (1, 2)]
        page = render(base, info, runs, samples, command, args.reuse)
    print(page)
    write_page(args.out, page)
    print(f"wrote {args.out}")
    return 0
