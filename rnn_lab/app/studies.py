"""Which study ``rnn-lab study`` runs: a name shipped in experiments/, or a study file of one's own.

A user's study is a YAML file kept anywhere (``rnn-lab study PATH/my_study.yaml``) in the format
of experiments/*.yaml: ``# @package _global_`` as its first line, a ``study:`` block, the grid
in ``hydra.sweeper.params``, and usually the shared preset (``- /study_preset/default``) and
claims. Its name is the file's stem: the sweep folder ``multirun/<stem>/``, the report's title.

The file is checked before any work (:func:`find_study`), then given to Hydra as the option
``study=<stem>`` through Hydra's ConfigStore (:func:`register`), so every job is composed
from it exactly as from a shipped study: a rerun resumes it, and every launcher sees it, since
Hydra hands the ConfigStore to each job process (loky, submitit, Ray) with its other
singletons. A file named like a shipped study is refused (the shipped one would win in
Hydra's search path), unless it is that very file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from hydra.core.config_store import ConfigStore
from hydra.plugins.config_source import ConfigSource
from omegaconf import DictConfig, OmegaConf

from rnn_lab import EXPERIMENTS_DIR
from rnn_lab.study.grid import STUDY_GROUP

# A study's name is a Hydra option and a folder name: letters, digits, _ and -.
STUDY_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
STUDY_SUFFIXES = (".yaml", ".yml")
FORMAT = (
    "A study file has the format of the shipped ones (experiments/*.yaml): `# @package "
    "_global_` as its first line, a `study:` block (name, question, baseline, metrics, axes, "
    "claims), its grid in hydra.sweeper.params and, first in its defaults list, the shared "
    "preset `- /study_preset/default`."
)


class StudyError(ValueError):
    """A study that cannot be run: one paragraph saying what is wrong and what is expected."""


@dataclass(frozen=True)
class Study:
    """A study to run: its name (= the file's stem), its file, and whether it is shipped."""

    name: str
    path: Path
    shipped: bool


def shipped_studies() -> dict[str, Path]:
    """Study name -> its file, for the studies in experiments/."""
    return {path.stem: path for path in sorted(EXPERIMENTS_DIR.glob("*.yaml"))}


def study_question(path: Path) -> str:
    """The `question:` line of a study file ("" when it has none)."""
    for line in path.read_text().splitlines():
        m = re.match(r"\s*question:\s*(.+)", line)
        if m:
            return m.group(1).strip().strip("\"'")
    return ""


def names_a_file(arg: str) -> bool:
    """ARG is a study file's path (it holds a / or ends in .yaml), not a shipped study's name."""
    return arg.endswith(STUDY_SUFFIXES) or "/" in arg


def find_study(arg: str) -> Study:
    """The study ARG names: a shipped name, or the path of a study file, checked."""
    shipped = shipped_studies()
    if arg in shipped:
        return Study(arg, shipped[arg], shipped=True)
    if not names_a_file(arg):
        raise StudyError(
            f"unknown study {arg!r}; valid: {', '.join(shipped)}; or the path of a study file "
            f"of your own (PATH/NAME.yaml)."
        )
    path = Path(arg).expanduser().absolute()
    name = path.stem
    if name in shipped and path.resolve() == shipped[name].resolve():
        return Study(name, shipped[name], shipped=True)
    read_study_file(path)
    if name in shipped:
        raise StudyError(
            f"{path}: a shipped study is named {name!r} too ({shipped[name]}); a study's name "
            f"is its file's stem (it names the sweep folder multirun/{name}/ and the report), "
            "so rename the file (e.g. my_" + name + ".yaml)."
        )
    return Study(name, path, shipped=False)


def read_study_file(path: Path) -> DictConfig:
    """The file as Hydra reads it, after the checks a study file must pass (StudyError)."""
    where = str(path)
    if not path.exists():
        raise StudyError(f"{where}: no such file. {FORMAT}")
    if not path.is_file():
        raise StudyError(f"{where} is a directory, not a study file. {FORMAT}")
    if path.suffix not in STUDY_SUFFIXES:
        raise StudyError(f"{where}: a study file ends in .yaml (or .yml). {FORMAT}")
    if not STUDY_NAME.fullmatch(path.stem):
        raise StudyError(
            f"{where}: {path.stem!r} cannot be a study's name (its file's stem names the sweep "
            "folder and Hydra's option): use letters, digits, _ and - only, e.g. my_study.yaml."
        )
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise StudyError(f"{where} cannot be read as text ({e}). {FORMAT}") from None
    try:
        node = OmegaConf.create(text)  # Hydra's YAML reading (1e-3 is a float, ${..} kept)
    except Exception as e:
        detail = f"{type(e).__name__}: {e}"
        if isinstance(e, yaml.MarkedYAMLError) and e.problem_mark is not None:
            mark = e.problem_mark
            detail = f"{e.problem}, line {mark.line + 1}, column {mark.column + 1}"
        raise StudyError(f"{where} is not YAML ({detail}). {FORMAT}") from None
    if not isinstance(node, DictConfig):
        raise StudyError(f"{where} holds no YAML mapping (key: value lines). {FORMAT}")
    try:
        package = ConfigSource._get_header_dict(text).get("package")
    except ValueError as e:
        raise StudyError(f"{where}: its header is not Hydra's ({e}). {FORMAT}") from None
    if package != "_global_":
        raise StudyError(
            f"{where} does not start with `# @package _global_` (without it Hydra would put "
            f"its keys under `study.`, and its grid and settings would not apply). {FORMAT}"
        )
    study = node.get("study")
    if not isinstance(study, DictConfig):
        raise StudyError(f"{where} has no `study:` block. {FORMAT}")
    named = study.get("name")
    if named is not None and named != path.stem:
        raise StudyError(
            f"{where}: study.name is {named!r} but a study's name is its file's stem "
            f"({path.stem!r}: the sweep folder multirun/{path.stem}/ and the report's title); "
            f"set `name: {path.stem}` or remove the line."
        )
    return node


def register(study: Study) -> None:
    """Make `study=<name>` compose a user's study file (a shipped one needs nothing)."""
    if study.shipped:
        return
    node = read_study_file(study.path)
    node.study.name = study.name
    node.study.file = str(study.path)  # the report's rerun command names the file
    ConfigStore.instance().store(
        group=STUDY_GROUP, name=study.name, node=node, package="_global_", provider="rnn-lab"
    )
