"""The report of a tuning sweep: Hydra's Optuna sweeper instead of a grid.

A tuning sweep has trials, not grid cells: each trial's settings were chosen by the sampler
from a search space, with one seed. :func:`tuning_report` reads the sweep's Optuna study (the
storage named in multirun.yaml, or ``optuna.db`` in the sweep folder) and writes:

- ``tuning_trials.csv``: every trial in order (number, state, objective, parameters, the run
  folder and its status);
- ``plots/tuning_objective.png``: the objective against the trial number, with the best so far;
- ``plots/tuning_params.png``: each tuned parameter against the objective;
- the report's "Tuning" section: budget and progress, the search space, the best trials.

The report's grid-only parts (the grid ledger, the paired tests against a baseline) do not
apply to such a sweep; :func:`not_applicable_md` says so in their place. A grid sweep gives
None and the report is unchanged. Optuna is imported only for a tuning sweep.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from matplotlib.ticker import NullFormatter

from rnn_lab.inspect.figure_io import new_figure, save_figure
from rnn_lab.run.rundir import (
    MULTIRUN_FILE,
    OPTUNA_BUDGET_ATTR,
    OPTUNA_DB_FILE,
    atomic_write_text,
)
from rnn_lab.study.grid import canonical, format_value
from rnn_lab.study.stats import fmt_number

log = logging.getLogger(__name__)

TRIALS_TABLE = "tuning_trials.csv"
OBJECTIVE_PLOT = "tuning_objective.png"
PARAMS_PLOT = "tuning_params.png"
BEST_SHOWN = 10  # rows of the best-trials table
BEST_PLOTTED = 8  # trials in the report's per-arm plots (every trial is an arm of its own)
DEFAULT_OBJECTIVE = "val_loss"


@dataclass
class Tuning:
    """What the report needs from a tuning sweep."""

    markdown: list[str]  # the "Tuning" section
    trials: pd.DataFrame  # one row per trial (tuning_trials.csv)
    budget: int | None
    n_complete: int
    best_paths: tuple[str, ...] = ()  # run folders of the complete trials, best first

    def plotted_runs(self, df: pd.DataFrame) -> pd.DataFrame:
        """The runs of the best trials: the report's per-arm plots show these, not all."""
        picked = df[df["path"].isin(self.best_paths[:BEST_PLOTTED])]
        return picked if len(picked) else df


# --------------------------------------------------------------------------- reading


def sweeper_config(sweep_dir: Path) -> dict | None:
    """multirun.yaml's hydra.sweeper when it is Optuna's; a bare optuna.db counts too."""
    path = sweep_dir / MULTIRUN_FILE
    sweeper = {}
    if path.is_file():
        try:
            cfg = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            sweeper = ((cfg.get("hydra") or {}).get("sweeper")) or {}
        except (yaml.YAMLError, OSError, AttributeError):
            sweeper = {}
    if "optuna" in str(sweeper.get("_target_", "")).lower():
        return sweeper
    if (sweep_dir / OPTUNA_DB_FILE).is_file():
        return {"storage": f"sqlite:///{sweep_dir / OPTUNA_DB_FILE}"}
    return None


def storage_url(sweeper: dict, sweep_dir: Path) -> str | None:
    """The storage as written, or the SQLite file found in the sweep folder when the written
    path was relative to another working directory (or the folder was moved)."""
    url = sweeper.get("storage")
    if not isinstance(url, str):
        return None
    prefix = "sqlite:///"
    if not url.startswith(prefix):
        return url  # a database server: as written
    path = Path(url[len(prefix) :])
    for candidate in (path, sweep_dir / path.name, sweep_dir / OPTUNA_DB_FILE):
        if candidate.is_file():
            return f"{prefix}{candidate}"
    return None


def load_study(url: str, study_name: str | None):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if study_name is None:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage=url)]
        study_name = names[0] if len(names) == 1 else None
    return optuna.load_study(study_name=study_name, storage=url)


def trials_table(study, df: pd.DataFrame, objective: str) -> pd.DataFrame:
    """One row per trial: number, state, objective, the parameters, and the run it trained
    (matched on the parameters' values) with that run's status."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        run = _matching_run(df, t.params)
        value = t.value if t.value is not None else math.nan
        row = {"trial": t.number, "state": t.state.name, objective: value, **t.params}
        row["run_status"] = None if run is None else run["status"]
        row["path"] = None if run is None else run["path"]
        rows.append(row)
    return pd.DataFrame(rows)


def _matching_run(df: pd.DataFrame, params: dict):
    if not params or not len(df):
        return None
    constant = df.attrs.get("constant_config") or {}
    mask = pd.Series(True, index=df.index)
    for key, value in params.items():
        if key in df.columns:
            mask &= df[key].map(canonical) == canonical(value)
        elif canonical(constant.get(key)) != canonical(value):
            return None
    found = df[mask]
    return None if found.empty else found.iloc[0]


def search_space(study) -> dict[str, str]:
    """parameter -> its distribution in words, from the trials' own distributions."""
    for t in study.get_trials(deepcopy=False):
        if t.distributions:
            return {k: _distribution_text(d) for k, d in t.distributions.items()}
    return {}


def _distribution_text(d) -> str:
    name = type(d).__name__
    if hasattr(d, "choices"):
        return "one of " + ", ".join(format_value(c) for c in d.choices)
    log_scale = "Log" in name or getattr(d, "log", False)
    kind = "log-uniform" if log_scale else "uniform"
    if "Int" in name:
        kind = f"integer, {kind}"
    return f"{kind} in [{format_value(d.low)}, {format_value(d.high)}]"


def _is_log(study, param: str) -> bool:
    text = search_space(study).get(param, "")
    return "log" in text


# --------------------------------------------------------------------------- the report


def tuning_report(sweep_dir: str | Path, df: pd.DataFrame, plots_dir: Path) -> Tuning | None:
    """The tuning section, table and plots of an Optuna sweep; None for any other sweep."""
    sweep_dir = Path(sweep_dir)
    sweeper = sweeper_config(sweep_dir)
    if sweeper is None:
        return None
    objective = str((df.attrs.get("constant_config") or {}).get("optimized_metric") or "")
    objective = objective or DEFAULT_OBJECTIVE
    url = storage_url(sweeper, sweep_dir)
    try:
        if url is None:
            raise FileNotFoundError("no Optuna storage in the sweep folder")
        study = load_study(url, sweeper.get("study_name"))
    except Exception as e:  # optuna missing, storage unreadable: the rest of the report stands
        log.warning("tuning: the Optuna study cannot be read: %s", e)
        text = f"The Optuna study cannot be read ({type(e).__name__}: {e}); trials unknown.\n"
        return Tuning(["## Tuning (Optuna)\n", text], pd.DataFrame(), None, 0)
    trials = trials_table(study, df, objective)
    atomic_write_text(sweep_dir / TRIALS_TABLE, trials.to_csv(index=False))
    budget = study.user_attrs.get(OPTUNA_BUDGET_ATTR, sweeper.get("n_trials"))
    direction = study.direction.name.lower()
    plots = _draw(trials, study, objective, direction, plots_dir)
    n_complete = int((trials["state"] == "COMPLETE").sum()) if len(trials) else 0
    shared = df.attrs.get("constant_config") or {}
    markdown = _section_md(trials, study, sweeper, objective, direction, budget, plots, shared)
    ranked = _ranked(trials, objective, direction)
    best_paths = tuple(ranked["path"].dropna()) if len(ranked) else ()
    return Tuning(markdown, trials, None if budget is None else int(budget), n_complete, best_paths)


def _ranked(trials: pd.DataFrame, objective: str, direction: str) -> pd.DataFrame:
    """The complete trials, best first."""
    if not len(trials):
        return trials
    done = trials[trials["state"] == "COMPLETE"]
    return done.sort_values(objective, ascending=direction == "minimize", kind="stable")


def _section_md(trials, study, sweeper, objective, direction, budget, plots, shared) -> list[str]:
    states = trials["state"].value_counts().to_dict() if len(trials) else {}
    n_complete, n_failed = states.get("COMPLETE", 0), states.get("FAIL", 0)
    sampler = str((sweeper.get("sampler") or {}).get("_target_", "")).rsplit(".", 1)[-1]
    out = ["## Tuning (Optuna)\n"]
    out.append(
        f"This sweep is a tuning run, not a grid: Hydra's Optuna sweeper "
        f"({sampler or 'its sampler'}) chose each trial's settings to {direction} "
        f"`{objective}`, the value each run returns (+inf when a run diverged or failed). "
        f"**{n_complete} of {budget if budget is not None else '?'} trials complete** "
        f"(the budget, `hydra.sweeper.n_trials`)"
        + (
            f"; {n_failed} trials did not end (stopped or killed: their parameters are "
            "tried again first when the study is run again)"
            if n_failed
            else ""
        )
        + f". Study `{study.study_name}`.\n"
    )
    space = search_space(study)
    if space:
        out.append(_table(["parameter", "search space"], [[k, v] for k, v in space.items()]))
        out.append("")
    out += _best_md(trials, objective, direction, list(space))
    out.append(
        f"All trials in order: [`{TRIALS_TABLE}`]({TRIALS_TABLE}). The per-arm plots of the "
        f"report (Plots, below) show the {BEST_PLOTTED} best trials; the tables, every trial.\n"
    )
    out += [f"{caption}\n\n![{name}](plots/{name})\n" for name, caption in plots]
    return out + _shared_md(shared)


def _shared_md(shared: dict) -> list[str]:
    """The settings every trial shares (the grid section's table, which this one replaces)."""
    if not shared:
        return []
    rows = [[k, format_value(v)] for k, v in shared.items()]
    return [
        "<details><summary>Settings shared by every trial</summary>\n",
        _table(["key", "value"], rows),
        "\n</details>\n",
    ]


def _best_md(trials, objective, direction, params) -> list[str]:
    ranked = _ranked(trials, objective, direction)
    if not len(ranked):
        return ["No trial has completed yet.\n"]
    best = ranked.iloc[0]
    settings = ", ".join(f"{p}={_num(best[p])}" for p in params)
    out = [
        f"**Best trial** #{int(best['trial'])}: {objective} {_num(best[objective])} with "
        f"{settings} (run `{best['path']}`).\n",
        f"The {min(BEST_SHOWN, len(ranked))} best trials:\n",
    ]
    rows = [
        [i + 1, int(r["trial"]), _num(r[objective]), *[_num(r[p]) for p in params], r["run_status"]]
        for i, (_, r) in enumerate(ranked.head(BEST_SHOWN).iterrows())
    ]
    out.append(_table(["rank", "trial", objective, *params, "run status"], rows))
    out.append("")
    return out


def _num(value) -> str:
    if isinstance(value, float | np.floating):
        return "+inf" if value == math.inf else fmt_number(float(value), 3, strip_zeros=False)
    return format_value(value)


def _table(header, rows) -> str:
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "|".join(" --- " for _ in header)]
    lines[-1] += "|"
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def not_applicable_md(title: str, tuning: Tuning) -> list[str]:
    """A grid-only section of the report, saying why it does not apply to a tuning sweep."""
    why = {
        "Comparisons": "paired tests against a baseline arm need a grid with shared seeds; "
        "every trial of a tuning sweep has its own settings and one seed",
        "Grid ledger": "a tuning sweep declares a search space and a budget, not grid cells; "
        f"{tuning.n_complete} of {tuning.budget if tuning.budget is not None else '?'} "
        "trials are complete (see Tuning)",
    }[title]
    return [f"## {title}\n", f"Does not apply to a tuning sweep: {why}.\n"]


# --------------------------------------------------------------------------- plots


def _draw(trials, study, objective, direction, plots_dir: Path) -> list[tuple[str, str]]:
    """The two tuning plots; one that cannot be drawn is left out (and logged)."""
    done = trials[trials["state"] == "COMPLETE"] if len(trials) else trials
    if not len(done):
        return []
    drawn = []
    jobs = [
        (OBJECTIVE_PLOT, _objective_caption(objective), plot_objective_history),
        (PARAMS_PLOT, f"Each tuned parameter against {objective}.", plot_params),
    ]
    for name, caption, draw in jobs:
        try:
            draw(trials, study, objective, direction, plots_dir / name)
            drawn.append((name, caption))
        except Exception:
            log.exception("tuning plot %s failed", name)
    return drawn


def _objective_caption(objective: str) -> str:
    return (
        f"{objective} of each trial in the order the sampler asked for them, and the best so "
        "far; a run that diverged or failed (+inf) is marked at the top."
    )


def _finite_range(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if not len(finite):
        return 0.0, 1.0
    lo, hi = float(finite.min()), float(finite.max())
    pad = 0.08 * (hi - lo) if hi > lo else 0.1 * abs(hi) + 0.1
    return lo - pad, hi + pad


def plot_objective_history(trials, study, objective, direction, out: Path) -> Path:
    done = trials[trials["state"] == "COMPLETE"].sort_values("trial")
    x, y = done["trial"].to_numpy(float), done[objective].to_numpy(float)
    lo, hi = _finite_range(y)
    fig = new_figure(7.0, 4.2)
    ax = fig.subplots()
    finite = np.isfinite(y)
    ax.scatter(x[finite], y[finite], s=28, color="tab:blue", zorder=3, label="trial")
    if (~finite).any():
        ax.scatter(x[~finite], np.full((~finite).sum(), hi), marker="x", color="tab:red",
                   s=40, zorder=3, label="diverged / failed (+inf)")  # fmt: skip
    best = np.minimum.accumulate(y) if direction == "minimize" else np.maximum.accumulate(y)
    ok = np.isfinite(best)
    ax.step(x[ok], best[ok], where="post", color="black", lw=1.4, label="best so far")
    ax.set_ylim(lo, hi + 0.02 * (hi - lo))
    ax.set_xlabel("trial number")
    ax.set_ylabel(objective)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(f"{objective} per trial ({direction})")
    return save_figure(fig, out)


def plot_params(trials, study, objective, direction, out: Path) -> Path:
    done = trials[trials["state"] == "COMPLETE"]
    params = list(search_space(study))
    fig = new_figure(3.6 * max(1, len(params)), 3.8)
    axes = fig.subplots(1, max(1, len(params)), squeeze=False)[0]
    y = done[objective].to_numpy(float)
    lo, hi = _finite_range(y)
    best = int(np.nanargmin(y) if direction == "minimize" else np.nanargmax(y))
    for ax, param in zip(axes, params):
        x = pd.to_numeric(done[param], errors="coerce").to_numpy(float)
        finite = np.isfinite(y)
        ax.scatter(x[finite], y[finite], s=26, color="tab:blue", zorder=3)
        if (~finite).any():
            ax.scatter(x[~finite], np.full((~finite).sum(), hi), marker="x", color="tab:red")
        ax.scatter([x[best]], [y[best]], marker="*", s=160, color="tab:orange", zorder=4,
                   label="best")  # fmt: skip
        if _is_log(study, param):
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # a narrow range labels every tick
        ax.set_ylim(lo, hi + 0.02 * (hi - lo))
        ax.set_xlabel(param)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(objective)
    axes[0].legend(fontsize="small")
    fig.suptitle(f"{objective} against each tuned parameter (x: diverged / failed, +inf)")
    return save_figure(fig, out)
