"""``rnn-lab reproduce``: run the studies that declare claims and print whether each holds.

rnn-lab reproduce --list              the studies with claims to reproduce (a paper's
                                      statements or consistency checks), and their counts
rnn-lab reproduce NAME [overrides]    run experiments/NAME.yaml as `rnn-lab study NAME` does
                                      (same sweep folder, resumable), then print its claims
rnn-lab reproduce FILE.yaml [...]     the same for a study file of one's own with claims
rnn-lab reproduce --all [overrides]   every such study, one after another, then a table of
                                      every claim per kind and the wall time of each study,
                                      also written to docs/reproductions.md (the command, date,
                                      commit and machine on top; with overrides that change
                                      results, to multirun/reproductions-OVERRIDES.md instead)

A study whose claims are all expectations (demo, init_activation) is not a reproduction: its
report answers them (`rnn-lab study NAME`).

The claims are evaluated by `rnn_lab.study.claims` on the collected results (the same table
the report's "Claims" section is built from); a claim that fails is a result, not an error:
the exit status is non-zero only when a study itself could not run. Ctrl-C / SIGTERM stops
the study it interrupts (resumable, as `rnn-lab study`) and every study after it (130 / 143).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

from rnn_lab import PROJECT_ROOT
from rnn_lab.provenance import write_generated_page

# The shipped page, in a checkout; an installed package writes into multirun/ instead.
DOCS_PAGE = PROJECT_ROOT / "docs" / "reproductions.md" if PROJECT_ROOT else None


@dataclass
class Reproduction:
    """What one study's reproduction gave: its exit code, wall time and claim rows."""

    name: str
    sweep_dir: Path
    code: int = 0
    wall_time_s: float = 0.0
    rows: list[dict] = field(default_factory=list)


def studies_with_claims() -> dict[str, dict]:
    """Study name -> its `study:` block, for the studies in experiments/ that declare claims
    to reproduce (of kind reproduction or consistency; expectations alone do not count)."""
    from rnn_lab.app.studies import shipped_studies

    out = {}
    for path in shipped_studies().values():
        try:
            study = (yaml.safe_load(path.read_text()) or {}).get("study") or {}
        except yaml.YAMLError:
            continue
        claims = study.get("claims") or []
        if any((c or {}).get("kind", "reproduction") != "expectation" for c in claims):
            out[path.stem] = study
    return out


def _sweep_dir(name: str, overrides: list[str]) -> tuple[Path, list[str]]:
    """The study's sweep folder (as `rnn-lab study` names it) and overrides that pin it."""
    from rnn_lab.app.cli import _study_dir_suffix

    given = next((o for o in overrides if o.startswith("hydra.sweep.dir=")), None)
    if given is not None:
        return Path(given.split("=", 1)[1].strip("'\"")), overrides
    sweep_dir = Path("multirun") / f"{name}{_study_dir_suffix(overrides)}"
    return sweep_dir, [*overrides, f"hydra.sweep.dir='{sweep_dir}'"]


def study_file_with_claims(arg: str) -> tuple[str, dict]:
    """A study file of the user's: its name (the stem) and `study:` block, which must declare
    claims (StudyError otherwise)."""
    from omegaconf import OmegaConf

    from rnn_lab.app.studies import StudyError, find_study, read_study_file

    found = find_study(arg)
    study = OmegaConf.to_container(read_study_file(found.path).study)
    if not study.get("claims"):
        raise StudyError(f"{arg} declares no claims (study.claims): nothing to reproduce.")
    return found.name, study


def reproduce(
    name: str, overrides: list[str], study: dict, given: str | None = None
) -> Reproduction:
    """Run one study (resuming its folder) and evaluate its claims on what it collected.
    GIVEN: how the study was named on the command line when not by NAME (its file)."""
    from rnn_lab.app.cli import main_study
    from rnn_lab.study.claims import claim_rows, evaluate_claims, study_claims
    from rnn_lab.study.collect import collect
    from rnn_lab.study.declaration import review

    sweep_dir, pinned = _sweep_dir(name, overrides)
    start = time.perf_counter()
    try:
        code = main_study([given or name, *pinned])
    except SystemExit as e:  # a refusal or Hydra's own error: this study did not run
        code = e.code if isinstance(e.code, int) else 1
    result = Reproduction(name, sweep_dir, code, time.perf_counter() - start)
    if sweep_dir.is_dir():
        df = collect(sweep_dir, write=False)
        claims = study_claims(df) or study_claims(study)
        declared = review(df).declared_before if study_claims(df) else None
        result.rows = claim_rows(evaluate_claims(df, claims), study=name, declared=declared)
    return result


def _print_claims(result: Reproduction) -> None:
    from rnn_lab.study.claims import claims_table_md

    print(f"\n## Claims of {result.name} ({result.sweep_dir}, {result.wall_time_s:.0f} s)\n")
    if not result.rows:
        print("no results to check the claims on")
        return
    print("\n".join(claims_table_md(result.rows, ("kind",))))


def all_claims_md(results: list[Reproduction]) -> list[str]:
    """Every study's wall time and counts per kind, then one table of claims per kind."""
    from rnn_lab.study.claims import KINDS, VERDICTS, claims_table_md, kind_counts

    rows = [row for r in results for row in r.rows]
    totals = kind_counts(rows)
    out = tally_md(results)
    for kind in KINDS:
        of_kind = [row for row in rows if row["kind"] == kind]
        if not of_kind:
            continue
        counts = ", ".join(f"{totals[kind][v]} {v}" for v in VERDICTS)
        out += [
            f"### {kind.capitalize()} claims ({counts})\n",
            *claims_table_md(of_kind, ("study",)),
            "",
        ]
    return out


def tally_md(results: list[Reproduction]) -> list[str]:
    """One row a study (wall time, verdicts per kind, exit code) and the total."""
    from rnn_lab.study.claims import KINDS, kind_counts

    out = ["| study | wall time | claims | " + " | ".join(KINDS) + " | exit |"]
    out.append("| --- | ---: | ---: | " + " | ".join("---" for _ in KINDS) + " | ---: |")
    for r in results:
        counts = kind_counts(r.rows)
        cells = [r.name, f"{r.wall_time_s:.0f} s", len(r.rows)]
        cells += [_counts_cell(counts[k]) for k in KINDS] + [r.code]
        out.append("| " + " | ".join(str(c) for c in cells) + " |")
    rows = [row for r in results for row in r.rows]
    total = sum(r.wall_time_s for r in results)
    totals = kind_counts(rows)
    cells = ["all", f"{total:.0f} s", len(rows), *(_counts_cell(totals[k]) for k in KINDS), ""]
    out += ["| " + " | ".join(str(c) for c in cells) + " |", ""]
    out.append(
        "Each kind cell: holds / fails / inconclusive. "
        + "; ".join(f"{k}: {sum(totals[k].values())} claims" for k in KINDS)
        + ".\n"
    )
    return out


def _counts_cell(counts: dict) -> str:
    return (
        "/".join(str(counts[v]) for v in ("holds", "fails", "inconclusive"))
        if any(counts.values())
        else "—"
    )


def _print_all(results: list[Reproduction]) -> None:
    # Each study printed its Answer (every claim, its verdict and numbers) as it ended: the
    # end is the tally; the page written next has every claim again, in one table a kind.
    print("\n## Every study\n")
    print("\n".join(tally_md(results)))


def write_page(results: list[Reproduction], argv: list[str], path: Path, started: datetime) -> Path:
    """The generated page of every claim's verdict and numbers (atomically)."""
    command = " ".join(["rnn-lab", "reproduce", *(shlex.quote(a) for a in argv)])
    lines = [
        f"Started {started:%Y-%m-%d %H:%M}, ended {datetime.now():%Y-%m-%d %H:%M}.\n",
        "Each claim is one of three kinds, tallied apart: a **reproduction** of a paper's "
        "statement, a **consistency** check of a theorem the code must obey (it holds by "
        "construction unless the code is wrong: not a finding), or an **expectation** the "
        "study states before its runs. Rules: each study's report (Claims section).\n",
        *all_claims_md(results),
    ]
    return write_generated_page(path, "Reproductions: every shipped claim, checked", lines, command)


def main_reproduce(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="rnn-lab reproduce",
        description="Run the studies that declare claims (published results as checkable "
        "statements) and print whether each claim holds, fails or is inconclusive, with its "
        "numbers. Extra key=value overrides apply to every job (kept in a separate folder).",
    )
    parser.add_argument("name", nargs="?", help="a study with claims: NAME or a file's path")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. steps=500")
    parser.add_argument("--list", action="store_true", help="list the studies with claims")
    parser.add_argument("--all", action="store_true", help="reproduce every study with claims")
    parser.add_argument(
        "--out", type=Path, default=None, help="with --all: the page to write (default: see above)"
    )
    args = parser.parse_args(argv)
    studies = studies_with_claims()
    if args.list or not (args.name or args.all):
        for name, study in studies.items():
            print(f"{name:18s} {len(study['claims']):2d} claims  {study.get('question', '')}")
        return 0 if args.list else 2
    overrides = list(args.overrides)
    if args.all and args.name:  # `--all steps=500`: the first override lands in `name`
        if "=" not in args.name:
            print("rnn-lab reproduce: give a study NAME or --all, not both", file=sys.stderr)
            return 2
        overrides.insert(0, args.name)
    from rnn_lab.app.studies import names_a_file

    if not args.all and args.name not in studies and names_a_file(args.name):
        return _reproduce_file(args.name, overrides)
    names = list(studies) if args.all else [args.name]
    unknown = [n for n in names if n not in studies]
    if unknown:
        print(
            f"rnn-lab reproduce: {unknown[0]!r} is not a study with claims to reproduce (a study "
            "whose claims are all expectations is answered by `rnn-lab study NAME`); valid: "
            f"{', '.join(studies) or '(none)'}",
            file=sys.stderr,
        )
        return 2
    results, started = [], datetime.now()
    for name in names:
        results.append(reproduce(name, overrides, studies[name]))
        if not args.all:  # --all: each study's Answer, then the tally and the page
            _print_claims(results[-1])
        if results[-1].code > 128:  # Ctrl-C / SIGTERM stopped the study: stop here, too
            skipped = names[len(results) :]
            if skipped:
                print(f"\nstopped by a signal; not run: {', '.join(skipped)}", file=sys.stderr)
            break
    if args.all:
        _print_all(results)
        if len(results) == len(names):  # a page only of a whole run
            print(
                f"\nwritten: {write_page(results, argv, _page_path(args.out, overrides), started)}"
            )
    return max((r.code for r in results if r.code), default=0)


def _reproduce_file(arg: str, overrides: list[str]) -> int:
    """`rnn-lab reproduce PATH/my_study.yaml`: a user's study file with claims."""
    from rnn_lab.app.studies import StudyError

    try:
        name, study = study_file_with_claims(arg)
    except StudyError as e:
        print(f"rnn-lab reproduce: {e}", file=sys.stderr)
        return 2
    result = reproduce(name, overrides, study, given=arg)
    _print_claims(result)
    return result.code


def _page_path(given: Path | None, overrides: list[str]) -> Path:
    """--out, else docs/reproductions.md, or a page in multirun/ for overrides that change
    results (a shrunk run never replaces the shipped page)."""
    from rnn_lab.app.cli import _study_dir_suffix

    if given is not None:
        return given
    suffix = _study_dir_suffix(overrides)
    if suffix or DOCS_PAGE is None:
        return Path("multirun") / f"reproductions{suffix}.md"
    return DOCS_PAGE
