"""``rnn-lab``: one command for everything a user does with rnn_lab.

rnn-lab train [overrides...]          train one run (= python -m rnn_lab.train ...)
rnn-lab study NAME [overrides...]     run a study (experiments/NAME.yaml) and build its report
rnn-lab study FILE.yaml [overrides]   run a study file of your own (into multirun/<file stem>/)
rnn-lab study --list                  list the shipped studies and their questions
rnn-lab reproduce NAME | FILE | --all run studies with claims and print which claims hold
rnn-lab collect DIR                   one row per run of a sweep -> results.csv
rnn-lab report DIR                    (re)build a sweep's report.md and plots
rnn-lab compare DIR_A DIR_B [...]     sweeps of one grid, arm by arm -> compare-A-vs-B/compare.md
rnn-lab analyze RUN_DIR               analyse a trained run (analysis.json, plots)
rnn-lab sample RUN_DIR [--prime ...]  sample text from a trained run
rnn-lab corpus [--out FILE]           write the Elman corpus to a file
rnn-lab bench [--quick]               speed against a walkthrough-style loop and torch autograd
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from rnn_lab import CONF_DIR, PROJECT_ROOT

COMMANDS = (
    "train", "study", "reproduce", "collect", "report", "compare", "analyze", "sample",
    "corpus", "bench",
)  # fmt: skip


def _hydra_train(argv: list[str]) -> int:
    from rnn_lab.app import main as app_main

    sys.argv = ["rnn-lab", *argv]
    app_main.main()
    return 0


def _train(argv: list[str]) -> int:
    """rnn-lab train: one run (or a sweep), then the process ends (app.main.main_then_exit)."""
    from rnn_lab.run import init_drawer

    init_drawer.start(argv)  # before Hydra's import: torch loads meanwhile, in case it must draw
    from rnn_lab.app import main as app_main

    sys.argv = ["rnn-lab", *argv]
    app_main.main_then_exit()
    return 0


def list_studies() -> dict[str, str]:
    """Shipped study name -> its question (the `question:` line of the file)."""
    from rnn_lab.app.studies import shipped_studies, study_question

    return {name: study_question(path) for name, path in shipped_studies().items()}


def _study_dir_suffix(overrides: list[str]) -> str:
    """A sweep-dir suffix for extra overrides, so a shrunk study never mixes with the full one."""
    # Results unchanged (study.slurm.*: where a job runs, not what it computes).
    skip = ("hydra.", "launcher=", "+hydra.", "seed=", "logger=", "logger.")
    skip += ("study.slurm.", "+study.slurm.")
    kept = [o for o in overrides if not o.startswith(skip)]
    if not kept:
        return ""
    return "-" + re.sub(r"[^A-Za-z0-9=.,_+-]", "_", ",".join(sorted(kept)))


def main_study(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="rnn-lab study",
        description="Run an ablation study (a Hydra multirun) and build its report: a shipped "
        "one by name (experiments/NAME.yaml) or a study file of your own in the same format "
        "(PATH/NAME.yaml, into multirun/NAME/). Extra key=value overrides apply to every job, "
        "e.g. steps=500 for a quick look (kept in a separate sweep folder).",
    )
    parser.add_argument("name", nargs="?", help="a shipped study's name, or a study file's path")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. steps=500")
    parser.add_argument("--list", action="store_true", help="list the studies")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="the whole log on the terminal: each run's "
        "lines, Hydra's job listing (= hydra.verbose=rnn_lab; else in train.log, sweep.log)",
    )  # fmt: skip
    args = parser.parse_intermixed_args(argv)  # -v before or after the overrides
    if args.list or not args.name:
        for name, question in list_studies().items():
            print(f"{name:18s} {question}")
        return 0 if args.list else 2
    from rnn_lab.app.studies import StudyError, find_study, register
    from rnn_lab.study.grid import STUDY_GROUP

    try:
        study = find_study(args.name)
        register(study)
    except StudyError as e:
        print(f"rnn-lab study: {e}", file=sys.stderr)
        return 2
    overrides = list(args.overrides) + (["hydra.verbose=rnn_lab"] if args.verbose else [])
    if not any(o.startswith("hydra.sweep.dir=") for o in overrides):
        sweep_dir = Path("multirun") / f"{study.name}{_study_dir_suffix(overrides)}"
        overrides.append(f"hydra.sweep.dir='{sweep_dir}'")  # quoted: the name may hold =
    else:
        given = next(o for o in overrides if o.startswith("hydra.sweep.dir="))
        sweep_dir = Path(given.split("=", 1)[1].strip("'\""))
    print(f"rnn-lab study {args.name}: sweep in {sweep_dir}/ (re-run the same command to resume)")
    try:
        code = _hydra_train(["-m", f"{STUDY_GROUP}={study.name}", *overrides])
    except SystemExit as e:
        if not isinstance(e.code, int) or e.code <= 128:
            raise  # a refusal (2: the folder is another sweep's) or Hydra's own error exit
        code = e.code  # 130 / 143: stopped by Ctrl-C / SIGTERM, with the report of what ended
    report = sweep_dir / "report.md"
    if report.exists():
        from rnn_lab.study.answer import answer_block

        print("\n" + answer_block(report.read_text()))  # the report's first section
        stopped = " (partial: the sweep was stopped; re-run the same command to resume)"
        print(f"report: {report}{stopped if code > 128 else ''}")
    return code


def main_sample(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rnn-lab sample", description="Sample text from a run.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--prime", default=" ", help="text to warm the hidden state with")
    parser.add_argument("--length", type=int, default=300)
    parser.add_argument("--temperature", type=float, default=None, help="default: the run's")
    parser.add_argument("--seed", type=int, default=0, help="sampling RNG seed")
    args = parser.parse_args(argv)
    import numpy as np

    from rnn_lab.core import cells, engine
    from rnn_lab.inspect.load import RunDirError, load_run

    try:
        run = load_run(args.run_dir)
        params = run.params()
    except RunDirError as e:
        print(f"rnn-lab sample: {args.run_dir} holds no trained run ({e})", file=sys.stderr)
        return 2
    chars = run.vocab
    if not chars:  # a sequence task (copy, adding, ...) has no characters to sample
        data = (run.settings.get("data") or {}).get("name", "?")
        print(
            f"rnn-lab sample: {args.run_dir} is a data={data} run, not a character model; "
            "sampling needs a run on data=elman or data=text",
            file=sys.stderr,
        )
        return 2
    unknown = sorted(set(args.prime) - set(chars))
    if unknown:
        data = run.settings.get("data") or {}
        lowered = data.get("name") == "text" and data.get("normalize", True)
        hint = (
            " (the run's text was lowercased, data.normalize=true: prime in lowercase, or "
            "train with data.normalize=false to keep capitals)"
            if lowered and not set(args.prime.lower()) - set(chars)
            else ""
        )
        print(
            f"rnn-lab sample: --prime has characters not in the vocabulary: {unknown}{hint}",
            file=sys.stderr,
        )
        return 2
    index = {c: i for i, c in enumerate(chars)}
    temperature = run.settings["temperature"] if args.temperature is None else args.temperature
    ids = cells.sample(
        params,
        engine.get_activation(run.activation),
        [index[c] for c in args.prime],
        args.length,
        temperature,
        np.random.default_rng(args.seed),
    )
    print(args.prime + "".join(chars[i] for i in ids))
    return 0


def main_corpus(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rnn-lab corpus", description="Write the Elman corpus.")
    parser.add_argument("--out", type=Path, default=None, help="file (default: stdout)")
    parser.add_argument("--num-sentences", type=int, default=600)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    from rnn_lab.core.data import generate_elman_corpus
    from rnn_lab.run.rundir import atomic_write_text

    text = generate_elman_corpus(args.num_sentences, args.seed)
    if args.out is None:
        print(text)
    else:
        atomic_write_text(args.out, text)
        print(f"wrote {len(text)} characters ({len(set(text))} symbols) to {args.out}")
    return 0


def _delegate(module: str, func: str):
    def run(argv: list[str]) -> int:
        import importlib

        return getattr(importlib.import_module(module), func)(argv)

    return run


HANDLERS = {
    "train": _train,
    "study": main_study,
    "reproduce": _delegate("rnn_lab.app.reproduce", "main_reproduce"),
    "collect": _delegate("rnn_lab.study.collect", "main_collect"),
    "report": _delegate("rnn_lab.study.report", "main_report"),
    "compare": _delegate("rnn_lab.study.compare", "main_compare"),
    "analyze": _delegate("rnn_lab.inspect.analysis", "main_analyze"),
    "sample": main_sample,
    "corpus": main_corpus,
    "bench": _delegate("rnn_lab.bench.speed", "main_bench"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        print(f"\nconfigs: {CONF_DIR}" + (f" (project: {PROJECT_ROOT})" if PROJECT_ROOT else ""))
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in HANDLERS:
        # Bare overrides (rnn-lab seq_len=50) mean train, as python -m rnn_lab.train does.
        if "=" in command or command.startswith("-"):
            return _train(argv)
        print(
            f"rnn-lab: unknown command {command!r}; valid: {', '.join(COMMANDS)}", file=sys.stderr
        )
        return 2
    return HANDLERS[command](rest) or 0


if __name__ == "__main__":
    sys.exit(main())
