"""What a sweep's grid is made of: config values compared and spelled, Hydra's sweep
overrides parsed, and the grid a sweep declared.

A value arrives as a Hydra override string (``lr=0.01,0.1``) or as parsed YAML from a run's
config; :func:`canonical` puts both on one key so the grid ledger, the arms and a study's
baseline match whatever the spelling. Pure functions of strings and values: no file is read.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from rnn_lab.study.run_records import RunRecord

# The config group that picks a study (a file of experiments/: study=NAME), then its old name,
# which still works (conf/experiment is the same folder).
STUDY_GROUP = "study"
OLD_STUDY_GROUP = "experiment"
STUDY_GROUPS = (STUDY_GROUP, OLD_STUDY_GROUP)


def canonical(v) -> str:
    """A comparison key for a config value, so 1 == 1.0 == "1.0" and True == "true".

    Grid values come from Hydra override strings while table values are parsed YAML; both must
    land on the same key for the grid ledger and for matching a study's baseline.
    """
    if v is None:
        return "null"
    if isinstance(v, bool | np.bool_):
        return "true" if v else "false"
    if isinstance(v, int | float | np.integer | np.floating):
        f = float(v)
        return "null" if math.isnan(f) else format(f, ".12g")
    if isinstance(v, str):
        s = v.strip()
        if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"":
            s = s[1:-1]
        low = s.lower()
        if low in ("true", "false"):
            return low
        if low in ("null", "none", "~", ""):
            return "null"
        try:
            return format(float(s), ".12g")
        except ValueError:
            return s
    return json.dumps(v, sort_keys=True, default=str)


def format_value(v) -> str:
    """How a config value is written in an arm label (YAML spelling: true, null, 0.01)."""
    if v is None:
        return "null"
    if isinstance(v, float) and math.isnan(v):
        return "?"
    if isinstance(v, bool | np.bool_):
        return "true" if v else "false"
    if isinstance(v, np.generic):
        v = v.item()
    return str(v)


def arm_label(values: dict) -> str:
    """`{"init": "xavier", "activation": "relu"}` -> "init=xavier, activation=relu"."""
    if not values:
        return "all runs"
    return ", ".join(f"{k}={format_value(v)}" for k, v in values.items())


def value_sort_key(canon: str):
    """Orders canonical values: numbers by value first, then text alphabetically."""
    try:
        return (0, float(canon), "")
    except ValueError:
        return (1, 0.0, canon)


def chosen_study(choices) -> str | None:
    """The study Hydra's choices name (study=NAME, or the old experiment=NAME); None for none.
    Both given with different names is a ValueError: the two would be merged."""
    names = {g: choices.get(g) for g in STUDY_GROUPS if choices and choices.get(g)}
    if len(set(names.values())) > 1:
        raise ValueError(
            f"{STUDY_GROUP}={names[STUDY_GROUP]} and {OLD_STUDY_GROUP}={names[OLD_STUDY_GROUP]} "
            f"both given: {OLD_STUDY_GROUP}= is the old name of {STUDY_GROUP}= (the same studies, "
            f"experiments/NAME.yaml); give one, e.g. {STUDY_GROUP}={names[STUDY_GROUP]}"
        )
    return next(iter(names.values()), None)


# --------------------------------------------------------------------------- Hydra overrides


def parse_sweep_override(text: str) -> tuple[str, list[str]] | None:
    """`"init=orthogonal,xavier"` -> ("init", ["orthogonal", "xavier"]); `range(1,4)` expands.

    Uses Hydra's own override grammar when it can (quoting, choice(), range()); falls back to
    splitting on commas. Deletions (`~key`), hydra.* keys and non-enumerable sweeps (interval)
    give None.
    """
    parsed = _parse_override_cached(str(text))
    return None if parsed is None else (parsed[0], list(parsed[1]))


@functools.lru_cache(maxsize=4096)  # every job repeats the same few override strings
def _parse_override_cached(text: str) -> tuple[str, tuple[str, ...]] | None:
    text = str(text).strip()
    if not text or text.startswith(("~", "hydra.", "hydra/")) or "=" not in text:
        return None
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser

        override = OverridesParser.create().parse_override(text)
        key = override.get_key_element().lstrip("+")
        if override.is_sweep_override():
            return key, tuple(str(v) for v in override.sweep_string_iterator())
        return key, (canonical_str(override.value()),)
    except Exception:  # unknown grammar, interval/glob sweeps, or Hydra missing
        key, _, value = text.partition("=")
        key = key.strip().lstrip("+")
        if "@" in key:
            key = key.split("@", 1)[0]
        if any(value.startswith(f) for f in ("interval(", "glob(", "tag(")):
            return None
        if value.startswith("range("):
            try:
                args = [int(a) for a in value[len("range(") : -1].split(",")]
                return key, tuple(str(i) for i in range(*args))
            except ValueError:
                return None
        for prefix in ("choice(",):
            if value.startswith(prefix) and value.endswith(")"):
                value = value[len(prefix) : -1]
        return key, tuple(p.strip() for p in value.split(","))


def canonical_str(v) -> str:
    """A single override value back as the string a user would type."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    return str(v)


def declared_grid(sweep_info: dict, runs: Iterable[RunRecord] = ()) -> dict[str, list[str]]:
    """The study's declared grid, key -> list of value strings, in declaration order.

    Sources, later ones winning for the same key as they do in Hydra: the sweeper params of the
    config (`hydra.sweeper.params`, in every job's hydra.yaml and in multirun.yaml), then the
    sweep overrides typed on the command line (multirun.yaml `hydra.overrides.task`). Without a
    multirun.yaml the command-line part is rebuilt from the values the jobs' overrides show,
    which cannot reveal a value no job ran.
    """
    runs = list(runs)
    grid: dict[str, list[str]] = {}
    params = dict(sweep_info.get("sweeper_params") or {})
    for run in runs:
        for k, v in (run.hydra.get("sweeper_params") or {}).items():
            params.setdefault(k, v)
    for key, value in params.items():
        parsed = parse_sweep_override(f"{key}={_override_value_text(value)}")
        if parsed:
            grid[parsed[0]] = parsed[1]
    if sweep_info.get("task_overrides"):
        for text in sweep_info["task_overrides"]:
            parsed = parse_sweep_override(text)
            if parsed:
                grid[parsed[0]] = parsed[1]
    else:
        seen: dict[str, dict[str, str]] = {}
        for run in runs:
            for text in run.overrides:
                parsed = parse_sweep_override(text)
                if parsed and parsed[0] not in grid:
                    for v in parsed[1]:
                        seen.setdefault(parsed[0], {}).setdefault(canonical(v), v)
        for key, values in seen.items():
            grid[key] = [values[c] for c in sorted(values, key=value_sort_key)]
    return grid


def _override_value_text(value) -> str:
    if isinstance(value, list | tuple):
        return ",".join(canonical_str(v) for v in value)
    return canonical_str(value)
