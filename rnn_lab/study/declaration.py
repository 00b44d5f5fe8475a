"""Pre-registration: what a study declared when it started, against what its report judges.

Every time a study's sweep starts (`rnn_lab.app.callbacks.SweepCallback`), `record_declaration`
checks its claims (a bad one stops the sweep before any work) and, when the declaration
differs from the last one recorded, appends it to `<sweep>/.rnn_lab/declarations.json`: the
claims, question and expectation, the grid (seeds included), the time, and how many runs had
already ended in the folder (`finished_runs`: 0 for a fresh study). A resumed study with the
same declaration appends nothing; the file is only ever appended to, and written atomically.

`review(df)` compares the declaration in force (the study block the collected runs carry) with
that record: a claim first recorded when runs had already ended is "declared after the
results" (claims.csv `declared_before_results: false`), as is a claim in force that no record
holds; seeds first declared after runs had ended are "added after the results"; claims recorded
before the results and no longer in force are listed as withdrawn.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pandas as pd

from rnn_lab.run import rundir
from rnn_lab.study.claims import REPRODUCTION, check_claims, study_claims
from rnn_lab.study.grid import STUDY_GROUPS, canonical
from rnn_lab.study.run_records import find_run_dirs

ENDED = (rundir.OK, rundir.DIVERGED, rundir.FAILED)  # a run with a result to look at


def declarations_path(sweep_dir: str | Path) -> Path:
    return rundir.sweep_state_dir(sweep_dir) / rundir.DECLARATIONS_FILE


def read_declarations(sweep_dir: str | Path) -> list[dict]:
    """The recorded declarations, oldest first ([] when none was recorded or the file is not
    readable: then nothing is known about when the claims were written)."""
    try:
        data = rundir.read_json_or_none(declarations_path(sweep_dir))
    except (ValueError, OSError):
        return []
    entries = data.get("declarations") if isinstance(data, dict) else None
    return [e for e in entries or [] if isinstance(e, dict)]


def ended_runs(sweep_dir: str | Path) -> int:
    """Runs in the folder whose summary says they ended (ok, diverged, failed)."""
    count = 0
    for run_dir in find_run_dirs(sweep_dir):
        try:
            summary = rundir.read_json_or_none(Path(run_dir) / rundir.SUMMARY_FILE)
        except (ValueError, OSError):
            continue
        count += isinstance(summary, dict) and summary.get("status") in ENDED
    return count


def claim_key(claim: dict) -> str:
    """What identifies a claim: its sentence, kind and check (its source is a citation)."""
    what = {
        "sentence": str(claim.get("sentence", "")),
        "kind": claim.get("kind") or REPRODUCTION,
        "check": claim.get("check"),
    }
    return json.dumps(what, sort_keys=True, default=str)


# Overrides that choose where or how the runs execute, or which study file: not what they are.
NOT_DECLARED = ("launcher", "logger", *STUDY_GROUPS, "hydra.", "logger.")


def declaration_of(study: dict, grid: dict[str, list]) -> dict:
    """The parts of a study that are declared before its runs."""
    return {
        "question": study.get("question"),
        "expect": study.get("expect"),
        "claims": [dict(c) for c in study.get("claims") or []],
        "grid": {
            k: [canonical(v) for v in values]
            for k, values in grid.items()
            if not (k in NOT_DECLARED or k.startswith(NOT_DECLARED))
        },
    }


def _same(a: dict, b: dict) -> bool:
    keys = ("question", "expect", "claims", "grid")
    return json.dumps([a.get(k) for k in keys], sort_keys=True, default=str) == json.dumps(
        [b.get(k) for k in keys], sort_keys=True, default=str
    )


def record_declaration(sweep_dir: str | Path, study: dict, grid: dict[str, list]) -> dict | None:
    """Check the study's claims (ClaimError before anything is written), then append its
    declaration to the record when it differs from the last one; returns the entry appended."""
    check_claims(study.get("claims") or [])
    entry = declaration_of(study, grid)
    log = read_declarations(sweep_dir)
    if log and _same(log[-1], entry):
        return None
    entry["time"] = datetime.now().astimezone().isoformat(timespec="seconds")
    entry["finished_runs"] = ended_runs(sweep_dir)
    path = declarations_path(sweep_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    rundir.atomic_write_json(path, {"declarations": [*log, entry]})
    return entry


# --------------------------------------------------------------------------- the comparison


@dataclass
class Review:
    """The declaration in force against the record."""

    recorded: bool  # a record exists
    declared_before: list[bool | None]  # per claim in force; None: nothing recorded
    late_claims: list[dict] = field(default_factory=list)  # {claim, sentence, time, finished_runs}
    withdrawn: list[dict] = field(
        default_factory=list
    )  # {sentence, kind, check, time, replaced_by}
    late_seeds: list[dict] = field(default_factory=list)  # {seed, time, finished_runs}
    first: dict | None = None  # the first record
    n_records: int = 0


def review(df: pd.DataFrame) -> Review:
    """The study's claims and seeds in force, each against when the record first has it."""
    claims = study_claims(df)
    log = read_declarations(df.attrs.get("sweep_dir") or ".")
    if not log:
        return Review(recorded=False, declared_before=[None] * len(claims))
    first_claim: dict[str, dict] = {}
    first_seed: dict[str, dict] = {}
    for entry in log:
        for claim in entry.get("claims") or []:
            first_claim.setdefault(claim_key(claim), entry)
        for seed in (entry.get("grid") or {}).get("seed") or []:
            first_seed.setdefault(canonical(seed), entry)
    out = Review(recorded=True, declared_before=[], first=log[0], n_records=len(log))
    for i, claim in enumerate(claims, 1):
        entry = first_claim.get(claim_key(claim))
        before = entry is not None and not entry.get("finished_runs")
        out.declared_before.append(before)
        if not before:
            when = (
                {"time": entry.get("time"), "finished_runs": entry.get("finished_runs")}
                if entry
                else {}
            )
            out.late_claims.append({"claim": i, "sentence": claim.get("sentence", ""), **when})
    in_force = {claim_key(c) for c in claims}
    sentences = {str(c.get("sentence", "")): i for i, c in enumerate(claims, 1)}
    for key, entry in first_claim.items():
        if key not in in_force and not entry.get("finished_runs"):
            old = json.loads(key)
            replaced_by = sentences.get(old["sentence"])
            out.withdrawn.append({**old, "time": entry.get("time"), "replaced_by": replaced_by})
    seeds = (df.attrs.get("grid") or {}).get("seed") or sorted(
        {canonical(s) for s in df.get("seed", pd.Series(dtype=object)).dropna()}
    )
    for seed in seeds:
        entry = first_seed.get(canonical(seed))
        if entry is None or entry.get("finished_runs"):
            late = (
                {"time": entry.get("time"), "finished_runs": entry.get("finished_runs")}
                if entry
                else {}
            )
            out.late_seeds.append({"seed": canonical(seed), **late})
    return out


def _when(item: dict) -> str:
    if item.get("time") is None:
        return "in no record"
    return f"first recorded {item['time']}, when {item['finished_runs']} runs had ended"


def preregistration_md(r: Review) -> list[str]:
    """The report's "Pre-registration" section."""
    out = ["## Pre-registration\n"]
    where = f"`{rundir.SWEEP_STATE_DIR}/{rundir.DECLARATIONS_FILE}`"
    if not r.recorded:
        return out + [
            f"No declaration was recorded when this sweep started ({where} is absent: a sweep "
            "from before rnn_lab recorded them), so whether its claims were written before its "
            "results cannot be told.\n"
        ]
    first = r.first or {}
    out.append(
        f"The study's claims, question, expectation and grid (seeds included) are recorded in "
        f"{where} each time the study starts with a changed declaration: {r.n_records} "
        f"record{'s' if r.n_records > 1 else ''}, the first at {first.get('time')} when "
        f"{first.get('finished_runs', 0)} runs had ended.\n"
    )
    if not (r.late_claims or r.withdrawn or r.late_seeds):
        out.append("Every claim in force and every seed was declared before any result.\n")
        return out
    for item in r.late_claims:
        out.append(
            f"- Claim {item['claim']} was **declared after the results** ({_when(item)}): "
            f"{item['sentence']}"
        )
    for item in r.withdrawn:
        if item.get("replaced_by"):
            out.append(
                f"- Claim {item['replaced_by']} replaces, after the results, the version "
                f"declared {item['time']} (kind {item['kind']}, check "
                f"`{json.dumps(item['check'], default=str)}`)."
            )
        else:
            out.append(
                f"- Withdrawn after the results (declared {item['time']}, no longer in force): "
                f"{item['sentence']}"
            )
    for item in r.late_seeds:
        out.append(f"- Seed {item['seed']} was **added after the results** ({_when(item)}).")
    out.append("")
    return out
