"""Turn a sweep directory into answers: tables, plots and a markdown report.

`build_report(sweep_dir)` collects the runs (`rnn_lab.study.collect`), aggregates them over seeds
and compares arms (`rnn_lab.study.stats`), draws the figures into `<sweep_dir>/plots/`
(`rnn_lab.study.figures`) and writes `<sweep_dir>/report.md`, which links everything else.
Every file is written atomically. A plot whose data is absent is skipped and the report says
why; a sweep stopped by a signal gets a report that says, at the top, that it is partial.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import shlex
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from rnn_lab.run.rundir import (
    FINISHED_STATUSES,
    MULTIRUN_FILE,
    PLOTS_GLOB,
    REPORT_FILE,
    RESULTS_CSV,
    RESULTS_PARQUET,
    atomic_write_text,
)
from rnn_lab.study.answer import answer_md
from rnn_lab.study.claims import claim_rows, claims_section_md, evaluate_claims
from rnn_lab.study.collect import collect, status_counts
from rnn_lab.study.declaration import Review, preregistration_md, review
from rnn_lab.study.explain import explain_section_md
from rnn_lab.study.figures import PLOTS_DIR, draw_report_figures
from rnn_lab.study.grid import STUDY_GROUP, STUDY_GROUPS, canonical, format_value
from rnn_lab.study.markdown import markdown_table
from rnn_lab.study.stats import (
    ALPHA,
    STATUS_GROUPS,
    aggregate,
    compare_to_baseline,
    describe_comparison,
    fmt_number,
    grid_ledger,
    metric_axis_label,
    status_group,
)
from rnn_lab.study.tuning_report import Tuning, not_applicable_md, tuning_report

log = logging.getLogger(__name__)

DEFAULT_METRICS = ["final_loss", "val_loss", "spectral_radius"]
SUMMARY_TABLE = "summary_table.csv"
COMPARISONS_TABLE = "comparisons.csv"

# A path Hydra and the shell both read as one plain value; anything else is quoted.
PLAIN_PATH = re.compile(r"[A-Za-z0-9_./+-]+")


# --------------------------------------------------------------------------- study settings


def study_settings(df: pd.DataFrame) -> dict:
    """The study's name, question, expectation, baseline, metrics and axes, with defaults.

    Metrics default to final_loss, val_loss, spectral_radius; only those present in the table
    are used (the others are listed in `missing_metrics`). Axes default to the arm keys; a
    declared axis is matched to a column by name, or `X` to `X.name` and back.
    """
    study = dict(df.attrs.get("study") or {})
    arm_keys = list(df.attrs.get("arm_keys", []))
    metrics = _as_list(study.get("metrics")) or list(DEFAULT_METRICS)
    present = [m for m in metrics if m in df.columns]
    axes = [_resolve_column(df, a) for a in _as_list(study.get("axes"))] or arm_keys
    return {
        "name": study.get("name"),
        "file": study.get("file"),  # a study file of the user's (`rnn-lab study PATH`)
        "question": study.get("question"),
        "expect": study.get("expect"),
        "baseline": study.get("baseline") or {},
        "metrics": present,
        "missing_metrics": [m for m in metrics if m not in df.columns],
        "axes": [a for a in axes if a in df.columns],
        "declared_axes": _as_list(study.get("axes")),
    }


def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return list(value)


def _resolve_column(df: pd.DataFrame, name: str) -> str:
    if name in df.columns:
        return name
    if f"{name}.name" in df.columns:
        return f"{name}.name"
    if name.endswith(".name") and name[: -len(".name")] in df.columns:
        return name[: -len(".name")]
    return name


def _cell(summary_row) -> str:
    if summary_row is None or summary_row["n"] == 0:
        return "—"

    def num(x, digits=3):
        return fmt_number(x, digits, strip_zeros=False)

    text = num(summary_row["mean"])
    if np.isfinite(summary_row["std"]):
        text += (
            f" ± {num(summary_row['std'], 2)} "
            f"[{num(summary_row['ci_low'])}, {num(summary_row['ci_high'])}]"
        )
    if summary_row["n"] < summary_row["n_ok"]:
        text += f" (n={summary_row['n']})"
    return text


def results_table_md(summary: pd.DataFrame, metrics: Sequence[str]) -> str:
    """One row per arm: ok / runs, the count of each way a run can fail, the metric cells.

    failed, diverged and incomplete always have a column; damaged and conflict only when some
    arm has such a run (most sweeps have none).
    """
    groups = [
        g
        for g in STATUS_GROUPS[1:]
        if g in ("failed", "diverged", "incomplete") or summary[f"n_{g}"].any()
    ]
    header = ["arm", "ok / runs", *groups] + [metric_axis_label(m) for m in metrics]
    rows = []
    for arm in pd.unique(summary["arm"]):
        per_arm = summary[summary["arm"] == arm]
        first = per_arm.iloc[0]
        row = [arm, f"{first['n_ok']} / {first['n_runs']}"] + [first[f"n_{g}"] for g in groups]
        for m in metrics:
            match = per_arm[per_arm["metric"] == m]
            row.append(_cell(match.iloc[0] if len(match) else None))
        rows.append(row)
    return markdown_table(header, rows)


def _counts_text(df: pd.DataFrame) -> str:
    """ "16 ok, 1 failed, 1 damaged, 1 conflict" (every status present, in a fixed order)."""
    return ", ".join(f"{n} {s}" for s, n in status_counts(df).items()) or "none"


# --------------------------------------------------------------------------- reproduce


def reproduce_commands(df: pd.DataFrame, settings: dict, sweep_dir: str | Path) -> list[str]:
    """Commands that rerun the sweep into the same folder (so a rerun resumes it, and finishes
    an interrupted one): `rnn-lab study NAME [extras]` for a study, and the Hydra multirun."""
    hydra = df.attrs.get("hydra") or {}
    typed = list(hydra.get("task_overrides") or []) if df.attrs.get("from_multirun_yaml") else []
    into = sweep_dir_override(sweep_dir)
    # The experiments/ file the runs were composed from (Hydra's choice: a sweep from before
    # study= names it under experiment), else the study's name.
    constant = df.attrs.get("constant_config") or {}
    study = next((constant[g] for g in STUDY_GROUPS if constant.get(g)), settings.get("name"))
    commands = []
    if study:
        # `rnn-lab study NAME` selects study=NAME itself; other typed overrides pass through
        chosen = tuple(f"{p}{g}=" for g in STUDY_GROUPS for p in ("", "+"))
        extras = [o for o in typed if not o.startswith(chosen)]
        words = ["rnn-lab", "study", str(settings.get("file") or study), *extras]
        commands.append(" ".join([shlex.quote(str(w)) for w in words] + [into]))
        if settings.get("file"):
            return commands  # a user's study file reaches Hydra through `rnn-lab study` only
    # hydra.job.name is `train` whichever entry point started the sweep (conf/config.yaml)
    parts = ["python", "-m", "rnn_lab.train", "-m"]
    config_name = hydra.get("config_name")
    if config_name and config_name != "config":
        parts += ["--config-name", str(config_name)]
    typed_keys = {o.split("=", 1)[0].lstrip("+~") for o in typed}
    if study and not typed_keys & set(STUDY_GROUPS):
        typed = [f"{STUDY_GROUP}={study}", *typed]  # the study's settings, not the defaults
        typed_keys.add(STUDY_GROUP)
    # Grid keys not typed on the command line came from the config's hydra.sweeper.params (or,
    # without multirun.yaml, from the cells that ran); spelling them out makes the command
    # reproduce the grid whichever config it is run with.
    grid = df.attrs.get("grid") or {}
    overrides = typed + [
        f"{k}={','.join(str(v) for v in values)}"
        for k, values in grid.items()
        if k not in typed_keys
    ]
    skip = ("hydra.mode=", "hydra.sweep.dir=", "hydra.run.dir=", "hydra.job.")
    overrides += [o for o in hydra.get("hydra_overrides") or [] if not o.startswith(skip)]
    commands.append(" ".join(parts + [shlex.quote(str(o)) for o in overrides] + [into]))
    return commands


def sweep_dir_override(sweep_dir: str | Path) -> str:
    """`hydra.sweep.dir=DIR` as one shell word that Hydra reads back as DIR.

    A study's folder can hold `=` and `,` (multirun/seq_len-steps=2000), which Hydra's override
    grammar would parse, so such a path is quoted for Hydra, then for the shell.
    """
    text = str(sweep_dir)
    if PLAIN_PATH.fullmatch(text):
        return f"hydra.sweep.dir={text}"
    hydra_quoted = "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    word = f"hydra.sweep.dir={hydra_quoted}"
    if not re.search(r'["$`\\!]', word):
        return f'"{word}"'  # readable: the shell keeps the single quotes for Hydra
    return shlex.quote(word)


# --------------------------------------------------------------------------- the report


@dataclass
class _Report:
    """Everything the markdown is written from."""

    df: pd.DataFrame
    settings: dict
    summary: pd.DataFrame
    comparisons: pd.DataFrame
    ledger: pd.DataFrame
    plots: list[tuple[str, str]]
    skipped_plots: list[tuple[str, str]]
    sweep_dir: Path
    commands: list[str]
    tuning: Tuning | None = None  # an Optuna sweep (rnn_lab.study.tuning_report): no grid
    claims: list[dict] | None = None  # the claim rows (rnn_lab.study.claims.claim_rows)
    declaration: Review | None = None  # the declaration in force against the record


def build_report(sweep_dir: str | Path) -> Path:
    """Collect, aggregate, compare and plot the sweep; return the path of report.md.

    Writes into sweep_dir: results.csv (+ results.parquet), summary_table.csv,
    comparisons.csv, plots/*.png and report.md.
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"no such sweep directory: {sweep_dir}")
    df = collect(sweep_dir, write=True)
    settings = study_settings(df)
    metrics = settings["metrics"]
    summary = aggregate(df, metrics)
    atomic_write_text(sweep_dir / SUMMARY_TABLE, summary.to_csv(index=False))
    comparisons = compare_to_baseline(df, metrics, settings["baseline"])
    atomic_write_text(sweep_dir / COMPARISONS_TABLE, comparisons.to_csv(index=False))
    tuning = tuning_report(sweep_dir, df, sweep_dir / PLOTS_DIR)
    plotted = df if tuning is None else tuning.plotted_runs(df)  # a tuning sweep: best trials
    plots, skipped_plots = draw_report_figures(plotted, settings, sweep_dir / PLOTS_DIR)
    report = _Report(
        df=df,
        settings=settings,
        summary=summary,
        comparisons=comparisons,
        ledger=grid_ledger(df) if tuning is None else grid_ledger(df, grid={}),
        plots=plots,
        skipped_plots=skipped_plots,
        sweep_dir=sweep_dir,
        commands=reproduce_commands(df, settings, sweep_dir),
        tuning=tuning,
    )
    report.declaration = review(df)
    report.claims = claim_rows(evaluate_claims(df), declared=report.declaration.declared_before)
    report_path = sweep_dir / REPORT_FILE
    atomic_write_text(report_path, _report_markdown(report))
    return report_path


def _report_markdown(r: _Report) -> str:
    sections = [
        _header_md(r),
        answer_md(r.settings, r.claims or [], r.declaration),
        _sweep_md(r),
        _grid_md(r.df, r.settings) if r.tuning is None else r.tuning.markdown,
        _results_md(r),
        claims_section_md(r.df, r.sweep_dir, r.claims),
        preregistration_md(r.declaration) if r.claims or r.declaration.recorded else [],
        _comparisons_md(r.df, r.settings, r.comparisons)
        if r.tuning is None
        else not_applicable_md("Comparisons", r.tuning),
        explain_section_md(r.df, r.settings, r.sweep_dir),
        _plots_md(r.plots, r.skipped_plots),
        _problems_md(r.df),
        _ledger_md(r.df, r.ledger)
        if r.tuning is None
        else not_applicable_md("Grid ledger", r.tuning),
        _reproduce_md(r),
    ]
    return "\n".join(line for section in sections for line in section)


def _header_md(r: _Report) -> list[str]:
    """The title and, for a sweep a signal stopped, the warning that the report is partial."""
    return [f"# Study report: {r.settings['name'] or r.sweep_dir.name}\n", *_interrupted_md(r)]


def _sweep_md(r: _Report) -> list[str]:
    return [
        f"Sweep directory `{r.sweep_dir}`, {len(r.df)} runs ({_counts_text(r.df)}); "
        f"report built {datetime.now():%Y-%m-%d %H:%M}.\n"
    ]


def _interrupted_md(r: _Report) -> list[str]:
    """The warning at the top of a report on a sweep that a signal stopped."""
    info = r.df.attrs.get("sweep_interrupted")
    if info is None:
        return []
    when = _time_text(info.get("time"))
    finished = int(r.df["status"].isin(FINISHED_STATUSES).sum()) if len(r.df) else 0
    n_cells = r.ledger.attrs.get("n_cells", 0)
    cells = (
        f"; {len(r.ledger)} of the {n_cells} declared cells (arm × seed) have no usable run yet"
        if n_cells
        else ""
    )
    command = r.commands[0]
    return [
        f"> **Partial report.** The sweep was interrupted by {_signal_text(info.get('signal'))}"
        + (f" at {when}" if when else "")
        + f", so it is not finished: {finished} of {len(r.df)} runs ended ok or diverged "
        f"({_counts_text(r.df)}){cells}. Re-run the same command to finish it (finished runs "
        f"are kept, cut-off ones resume from their checkpoint):\n>\n> `{command}`\n"
    ]


def _signal_text(number) -> str:
    try:
        return f"signal {int(number)} ({signal.Signals(int(number)).name})"
    except (TypeError, ValueError):
        return "a signal" if number is None else f"signal {number}"


def _time_text(value) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{datetime.fromtimestamp(value):%Y-%m-%d %H:%M:%S}"
    return str(value) if value else ""


def _grid_md(df: pd.DataFrame, settings: dict) -> list[str]:
    out = ["## Grid\n"]
    grid = df.attrs.get("grid") or {}
    arm_keys = df.attrs.get("arm_keys", [])
    axis_rows = []
    for key in dict.fromkeys([*grid, *arm_keys]):
        values = df[key].tolist() if key in df else []
        if key == "seed":
            values = sorted(values, key=lambda v: canonical(v).zfill(12))
        observed = list(dict.fromkeys(format_value(v) for v in values))
        declared = ", ".join(str(v) for v in grid.get(key, [])) or "(not declared)"
        axis_rows.append([key, declared, ", ".join(observed) or "—"])
    if axis_rows:
        out += [markdown_table(["key", "declared values", "values found in run dirs"], axis_rows)]
        out.append("")
    else:
        out.append("No varying keys: every run has the same settings.\n")
    seeds = sorted({int(s) for s in pd.to_numeric(df["seed"], errors="coerce").dropna()})
    out.append(
        f"Arms: {len(pd.unique(df['arm']))}. Seeds found: {', '.join(map(str, seeds)) or '—'}."
    )
    if settings["declared_axes"] and set(settings["axes"]) != set(arm_keys):
        out.append(
            f"\nThe study declares axes {settings['declared_axes']}; the runs vary in {arm_keys}."
        )
    constant = df.attrs.get("constant_config") or {}
    if constant:
        out.append("\n<details><summary>Settings shared by every run</summary>\n")
        rows = [[k, format_value(v)] for k, v in constant.items()]
        out.append(markdown_table(["key", "value"], rows))
        out.append("\n</details>")
    out.append("")
    return out


def _results_md(r: _Report) -> list[str]:
    out = ["## Results (aggregated over seeds)\n"]
    missing = r.settings["missing_metrics"]
    if missing:
        out.append(f"Metrics not found in any run and left out: {', '.join(missing)}.\n")
    if not len(r.summary):
        return out + ["No runs or no metrics to aggregate.\n"]
    out.append(
        "Cells: mean ± sd [95% CI of the mean, t-based] over ok runs. Runs that failed, "
        "diverged, did not finish, are damaged or were refused (conflict) are counted and "
        "excluded from the statistics.\n"
    )
    out.append(results_table_md(r.summary, r.settings["metrics"]))
    parquet = (
        f", [`{RESULTS_PARQUET}`]({RESULTS_PARQUET})"
        if (r.sweep_dir / RESULTS_PARQUET).exists()
        else ""
    )
    out.append(
        f"\nFull table: [`{SUMMARY_TABLE}`]({SUMMARY_TABLE}); one row per run: "
        f"[`{RESULTS_CSV}`]({RESULTS_CSV}){parquet}.\n"
    )
    return out


def _comparisons_md(df: pd.DataFrame, settings: dict, comparisons: pd.DataFrame) -> list[str]:
    out = ["## Comparisons\n"]
    out += [f"*Note: {note}.*\n" for note in comparisons.attrs.get("notes", [])]
    if not len(comparisons):
        return out + ["Nothing to compare (a single arm, or no metrics).\n"]
    base = comparisons.attrs.get("baseline") or {}
    base_text = ", ".join(f"{k}={format_value(v)}" for k, v in base.items())
    other_axes = [k for k in df.attrs.get("arm_keys", []) if k not in base]
    if other_axes:
        against = (
            f"the baseline {base_text} at the same {', '.join(other_axes)} "
            "(the arm differing only in the baseline's keys)"
        )
    else:
        against = f"the baseline arm {base_text}"
    out.append(
        f"Each arm is compared with {against}: paired t-test over shared seeds (Welch's "
        "t-test when fewer than 2 seeds are shared), Holm-adjusted across the arms of each "
        f"metric, α = {ALPHA}. Differences are arm − baseline; their 95% CIs are per "
        "comparison (not adjusted), so a CI can exclude 0 while the Holm-adjusted p is above "
        "α.\n"
    )
    for metric in settings["metrics"]:
        out.append(f"**{metric_axis_label(metric)}**\n")
        rows = comparisons[comparisons["metric"] == metric]
        out += [f"- {describe_comparison(row)}" for _, row in rows.iterrows()]
        out.append("")
    out.append(f"All numbers: [`{COMPARISONS_TABLE}`]({COMPARISONS_TABLE}).\n")
    return out


def _plots_md(plots: list[tuple[str, str]], skipped: list[tuple[str, str]]) -> list[str]:
    out = ["## Plots\n"]
    out += [f"{caption}\n\n![{name}]({PLOTS_DIR}/{name})\n" for name, caption in plots]
    out += [f"- `{name}` not drawn: {reason}." for name, reason in skipped]
    if skipped:
        out.append("")
    return out


def _problems_md(df: pd.DataFrame) -> list[str]:
    """Every run that is not ok, with its status and error; then the unreadable folders."""
    out = ["## Runs that did not finish ok\n"]
    bad = df[df["status"].map(status_group) != "ok"] if len(df) else df
    if len(bad):
        out.append(
            f"{len(bad)} of {len(df)} runs ({_counts_text(bad)}); damaged runs have a file "
            "that does not hold up, conflicts are jobs refused because their folder holds "
            "another run.\n"
        )
        rows = [
            [
                f"`{run['path']}`",
                run["arm"],
                format_value(run["seed"]),
                run["status"],
                _steps_text(run),
                _error_text(run.get("error")),
            ]
            for _, run in bad.iterrows()
        ]
        out.append(markdown_table(["path", "arm", "seed", "status", "steps done", "error"], rows))
        out.append("")
    else:
        out.append("None: every collected run finished with status ok.\n")
    warnings = df.attrs.get("warnings") or []
    if warnings:
        out.append("Directories skipped because their configuration could not be read:\n")
        rows = [[f"`{w['path']}`", w["reason"]] for w in warnings]
        out.append(markdown_table(["path", "reason"], rows))
        out.append("")
    return out


def _error_text(error) -> str:
    if error is None or (isinstance(error, float) and math.isnan(error)) or error == "":
        return "—"
    return str(error)[:300]


def _steps_text(run) -> str:
    done = run.get("steps_done")
    total = run.get("steps")
    done_text = "?" if done is None or pd.isna(done) else str(int(done))
    if total is not None and not pd.isna(total):
        return f"{done_text} / {int(total)}"
    return done_text


def _ledger_md(df: pd.DataFrame, ledger: pd.DataFrame) -> list[str]:
    out = ["## Grid ledger\n"]
    n_cells = ledger.attrs.get("n_cells", 0)
    if not (df.attrs.get("grid") or {}):
        out.append(
            f"No declared grid found (no `hydra.sweeper.params` and no {MULTIRUN_FILE}), so "
            "missing cells cannot be listed.\n"
        )
    elif len(ledger) == 0:
        out.append(f"All {n_cells} declared cells (arm × seed) have a run directory.\n")
    else:
        out.append(
            f"{len(ledger)} of {n_cells} declared cells (arm × seed) have no usable run "
            "directory:\n"
        )
        rows = [[row["arm"], format_value(row["seed"])] for _, row in ledger.iterrows()]
        out.append(markdown_table(["arm", "seed"], rows))
        out.append("")
    if ledger.attrs.get("unchecked_keys"):
        out.append(
            f"Grid keys not found in the runs' configs (not checked): "
            f"{', '.join(ledger.attrs['unchecked_keys'])}.\n"
        )
    return out


def _reproduce_md(r: _Report) -> list[str]:
    return [
        "## Reproduce\n",
        "Into the same folder: a rerun keeps finished runs and resumes cut-off ones.\n",
        "```bash",
        *r.commands,
        f"rnn-lab report {shlex.quote(str(r.sweep_dir))}",
        "```\n",
    ]


# --------------------------------------------------------------------------- command line


def main_report(argv: list[str] | None = None) -> int:
    """`rnn-lab report DIR`: build DIR/report.md and say where everything went."""
    parser = argparse.ArgumentParser(
        prog="rnn-lab report",
        description=f"Build {REPORT_FILE}, tables and plots for a sweep directory.",
    )
    parser.add_argument("dir", help="sweep directory (e.g. multirun/2024-01-01/12-00-00)")
    args = parser.parse_args(argv)
    sweep_dir = Path(args.dir)
    if not sweep_dir.is_dir():
        print(f"rnn-lab report: no such directory: {sweep_dir}", file=sys.stderr)
        return 2
    report = build_report(sweep_dir)
    plots = sorted((sweep_dir / PLOTS_DIR).glob(PLOTS_GLOB))
    print(f"report: {report}")
    print(
        f"tables: {sweep_dir / RESULTS_CSV}, {sweep_dir / SUMMARY_TABLE}, "
        f"{sweep_dir / COMPARISONS_TABLE}"
    )
    print(f"plots:  {len(plots)} in {sweep_dir / PLOTS_DIR}")
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    sys.exit(main_report())
