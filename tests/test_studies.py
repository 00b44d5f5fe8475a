"""Every study in experiments/ composes, declares a coherent `study:` block, and runs end to end.

The studies are found by globbing experiments/, so a new study file is covered without editing
this file. The real runs keep each study's own grid (one seed, a few dozen steps) and go through
`rnn-lab study` exactly as a user would, so a study that no longer composes, trains or reports
fails here rather than after hours of a full run.
"""

from __future__ import annotations

import itertools
import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
import yaml
from cli_helpers import run_cli, sweep_logs
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from rnn_lab import CONF_DIR, EXPERIMENTS_DIR

STUDIES = sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))
# Tuning studies (an Optuna search space and a budget, not a grid): tests/test_tuning.py.
GRID_STUDIES = [
    s for s in STUDIES if "sweeper: optuna" not in (EXPERIMENTS_DIR / f"{s}.yaml").read_text()
]
PRESET = "/study_preset/default"  # the shared settings every study includes (conf/)

# Every job shrunk to a second or less; the study's own grid is kept (minus its seeds). A key the
# study sweeps is left out of these, since a command-line value would replace the study's grid.
SHRINK = {
    "steps": "30",
    "budget_chars": "0",  # a study that fixes its data budget trains 30 steps here too
    "hidden_size": "8",
    "data.num_sentences": "40",  # only for the Elman corpus (see _shrink)
    "analyze": "false",
}
# Grid cells expected to diverge at the shrunk size: study -> [{key: value}, ...]. None
# today: with 30 steps even SGD momentum at lr 0.1 and clip=0 stay finite. A study whose grid
# holds e.g. a huge lr would list its cells here, and those cells must then be `diverged`.
EXPECTED_DIVERGED: dict[str, list[dict[str, str]]] = {}

_MISSING = object()


def _study_file(name: str) -> dict:
    return yaml.safe_load((EXPERIMENTS_DIR / f"{name}.yaml").read_text())


def _norm(value) -> str:
    """One spelling per value: the grid says `5` / `false`, results.csv holds 5.0 / False."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return format(float(value), ".12g")
    text = str(value).strip()
    try:
        return format(float(text), ".12g")
    except ValueError:
        return text.lower()


def _grid(params) -> dict[str, list[str]]:
    """The study's hydra.sweeper.params expanded with Hydra's own override grammar."""
    parser = OverridesParser.create()
    grid = {}
    for key, value in params.items():
        override = parser.parse_override(f"{key}={value}")
        if override.is_sweep_override():
            grid[key] = list(override.sweep_string_iterator())
        else:
            grid[key] = [override.get_value_element_as_str()]
    return grid


def _cells(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    """Every grid cell with the seed collapsed to one: the arms the report must show."""
    axes = {k: v for k, v in grid.items() if k != "seed"}
    return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]


def _key(cell: dict[str, str]) -> tuple:
    """A grid cell as a sortable, comparable key (axes in name order)."""
    return tuple(sorted(cell.items()))


def _report_arms(report: str) -> list[str]:
    """The first column of the report's aggregated results table (one row per arm)."""
    section = report.split("## Results", 1)[1].split("\n## ", 1)[0]
    cells = [line.split("|")[1].strip() for line in section.splitlines() if line.startswith("|")]
    # cells[0] is the header ("arm"), cells[1] the |---| separator, then one row per arm.
    return [c for c in cells[1:] if set(c) != {"-"}]


def _parse_arm(label: str) -> dict[str, str]:
    """ "clip=5.0, clip_mode=norm" -> {"clip": "5", "clip_mode": "norm"} (normalised)."""
    if label == "all runs":  # the report's label when nothing but the seed varies
        return {}
    return {k: _norm(v) for k, v in (part.split("=", 1) for part in label.split(", "))}


# --------------------------------------------------------------------------- composing (fast)


def test_studies_exist_and_the_preset_is_not_one():
    from rnn_lab.app.cli import list_studies

    assert STUDIES, "experiments/ holds no study"
    assert sorted(list_studies()) == STUDIES
    assert "default" not in STUDIES and (CONF_DIR / f"{PRESET.strip('/')}.yaml").is_file()


@pytest.mark.parametrize("study", GRID_STUDIES)
def test_study_composes_with_a_coherent_study_block(compose, study):
    from rnn_lab.study.claims import check_claims
    from rnn_lab.study.stats import METRIC_DIRECTION

    # The shared settings come from the preset through the defaults list, never copied in.
    defaults = _study_file(study).get("defaults") or []
    assert PRESET in defaults, f"{study}.yaml must include {PRESET} in its defaults list"

    cfg = compose([f"study={study}"], return_hydra_config=True)
    block = cfg.study
    assert block.name == study
    assert block.question and str(block.question).strip()
    metrics = list(block.metrics)
    assert metrics and all(isinstance(m, str) for m in metrics)
    # A metric the report does not know is a typo: it would be silently left out of the report.
    assert set(metrics) <= set(METRIC_DIRECTION), set(metrics) - set(METRIC_DIRECTION)

    params = cfg.hydra.sweeper.params
    assert params, "a study declares its grid in hydra.sweeper.params"
    grid = _grid(params)
    for key, values in grid.items():
        # A sweep key the config lacks would fail every job (or, with +, silently add a key).
        # A group whose options are @package _global_ (recipe) leaves no node of its own.
        group_dir = CONF_DIR / key
        assert group_dir.is_dir() or OmegaConf.select(cfg, key, default=_MISSING) is not _MISSING, (
            f"{study}: the grid sweeps {key!r}, which is not a config key"
        )
        if group_dir.is_dir():  # a config group: every value must be one of its options
            options = {p.stem for p in group_dir.glob("*.yaml")}
            assert set(values) <= options, f"{study}: {key} has no option {set(values) - options}"

    # The baseline is one arm of the grid, and the axes are grid keys, or nothing is compared.
    baseline = OmegaConf.to_container(block.baseline)
    assert baseline, f"{study}: no baseline arm"
    for key, value in baseline.items():
        assert key in grid, f"{study}: baseline key {key!r} is not swept"
        assert _norm(value) in {_norm(v) for v in grid[key]}, f"{study}: baseline {key}={value}"
    assert set(block.get("axes") or []) <= set(grid)
    # Every claim can be checked as written (a bad one would stop the study at its start).
    check_claims(OmegaConf.to_container(block).get("claims") or [])
    # `rnn-lab study NAME` and `python -m rnn_lab.train -m study=NAME` share a folder.
    assert cfg.hydra.sweep.dir == f"multirun/{study}"


# --------------------------------------------------------------------------- running (real)


def _shrink(study: str, grid: dict) -> list[str]:
    """SHRINK as overrides, minus the keys the study sweeps and the Elman corpus's key when the
    study trains on another task (data=copy has no num_sentences)."""
    own_task = "override /data:" in (EXPERIMENTS_DIR / f"{study}.yaml").read_text()
    keep = {k: v for k, v in SHRINK.items() if not (own_task and k.startswith("data."))}
    return [f"{k}={v}" for k, v in keep.items() if k not in grid]


def _run_study(study: str, base: Path) -> dict:
    grid = _grid(_study_file(study)["hydra"]["sweeper"]["params"])
    shrink = _shrink(study, grid)
    sweep = base / study
    # The study's own launcher (stacked, from the preset) with one worker: two studies run at
    # once, one per core, and each study's arms that share shapes train as one stack.
    one_worker = "hydra.launcher.n_jobs=1"
    proc = run_cli(
        ["study", study, *shrink, "seed=1", one_worker, f"hydra.sweep.dir={sweep}"],
        module="rnn_lab.app.cli",
        timeout=600,
    )
    return {"sweep": sweep, "proc": proc, "grid": grid}


@pytest.fixture(scope="module")
def study_runs(tmp_path_factory) -> dict[str, dict]:
    """Every study run once, two at a time (one per core): a study's jobs run in one worker
    (stacks and lone jobs one after another), so two studies in flight keep both cores busy."""
    base = tmp_path_factory.mktemp("studies")
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {s: pool.submit(_run_study, s, base) for s in GRID_STUDIES}
        return {s: f.result() for s, f in futures.items()}


@pytest.mark.parametrize("study", GRID_STUDIES)
def test_study_runs_tiny_and_reports_every_arm(study_runs, study):
    run = study_runs[study]
    sweep, proc, grid = run["sweep"], run["proc"], run["grid"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (sweep / "report.md").is_file(), f"no report.md\n{proc.stderr[-3000:]}"

    # One row per grid cell (seeds cut to one), each cell exactly once, each `ok`.
    cells = [_key({k: _norm(v) for k, v in cell.items()}) for cell in _cells(grid)]
    axes = list(_cells(grid)[0])
    results = pd.read_csv(sweep / "results.csv")
    assert len(results) == len(cells), results[["path", "status"]].to_string()
    diverging = [
        _key({k: _norm(v) for k, v in c.items()}) for c in EXPECTED_DIVERGED.get(study, [])
    ]
    found = []
    for _, row in results.iterrows():
        cell = _key({k: _norm(row[k]) for k in axes})
        found.append(cell)
        want = "diverged" if cell in diverging else "ok"
        error = row.get("error")
        detail = "" if isinstance(error, float) and math.isnan(error) else f": {error}"
        assert row["status"] == want, f"{study} {cell}: {row['status']}{detail}"
        assert row["seed"] == 1
    assert sorted(found) == sorted(cells)
    assert "Stacked launcher:" in sweep_logs(sweep)  # the preset's launcher ran it

    # The report's arms are exactly the grid's cells (one row each), in no other spelling.
    report = (sweep / "report.md").read_text()
    arms = _report_arms(report)
    # An axis swept over a single value is the same in every arm, so labels leave it out.
    labelled = [k for k in axes if len(grid[k]) > 1]
    want_arms = sorted(_key({k: v for k, v in cell if k in labelled}) for cell in cells)
    assert sorted(_key(_parse_arm(a)) for a in arms) == want_arms, arms
    assert set(arms) == set(results["arm"])
    assert f"# Study report: {study}" in report
    # It opens with its answer, which `rnn-lab study` printed when it ended.
    from rnn_lab.study.answer import answer_block

    assert report.split("\n## ", 2)[1].startswith("Answer\n")
    assert answer_block(report) in proc.stdout


# --------------------------------------------------------------------------- a study of one's own

OWN_STUDY = """\
# @package _global_
# A study of one's own, kept outside the repository: the format of experiments/*.yaml.
defaults:
  - /study_preset/default

study:
  question: "Does clip=1 slow a short run down against no clipping?"
  baseline: {clip: 0}
  metrics: [val_loss, final_loss]
  axes: [clip]
  claims:
    - sentence: "Without clipping a 40-step run ends below ln(24) = 3.18 nats/char."
      check: {arm: {clip: 0}, metric: val_loss, op: "<", value: 3.18}

steps: 40
hidden_size: 8
analyze: false
data:
  num_sentences: 40

hydra:
  sweeper:
    params:
      clip: 0,1.0
      seed: 1,2
"""


def _val_losses(sweep: Path) -> dict[str, float]:
    return {
        str(p.parent.relative_to(sweep)): json.loads(p.read_text())["val_loss"]
        for p in sweep.glob("*/seed=*/summary.json")
    }


SHRINK_RUN = [f"{k}={v}" for k, v in SHRINK.items()]


def _run_ids(sweep: Path) -> dict[str, str]:
    return {
        str(p.parent.relative_to(sweep)): json.loads(p.read_text())["run_id"]
        for p in sweep.glob("*/seed=*/summary.json")
    }


def test_study_and_its_old_name_experiment_compose_the_same_and_share_the_sweep_folders(
    compose, tmp_path
):
    """study=NAME is the group that picks a study; experiment=NAME, its old name, still works:
    the same composed config, the same job folders and run ids. `study.KEY=...` still sets a
    value of the chosen study, and the two groups naming different studies are refused."""
    new = compose(["study=demo", "steps=30"], return_hydra_config=True)
    old = compose(["experiment=demo", "steps=30"], return_hydra_config=True)
    assert dict(new.hydra.runtime.choices)["study"] == "demo"
    assert dict(old.hydra.runtime.choices)["experiment"] == "demo"
    composed = []
    for cfg in (new, old):  # all but the choice itself and the overrides that made it
        plain = OmegaConf.to_container(cfg)
        del plain["hydra"]["runtime"]["choices"]["study"], plain["hydra"]["overrides"]
        del plain["hydra"]["runtime"]["choices"]["experiment"]
        composed.append(plain)
    assert composed[0] == composed[1]
    assert new.study.name == "demo" and new.hydra.sweep.dir == "multirun/demo"
    asked = compose(["study=demo", "study.question=Which one?"]).study
    assert asked.question == "Which one?" and asked.name == "demo"

    tiny = [*SHRINK_RUN, "init=orthogonal,xavier", "seed=1"]
    tiny += ["activation=tanh", "launcher=basic"]
    sweeps = {}
    for group in ("study", "experiment"):
        sweeps[group] = tmp_path / group
        proc = run_cli(["-m", f"{group}=demo", *tiny, f"hydra.sweep.dir={sweeps[group]}"])
        assert proc.returncode == 0, proc.stderr[-3000:]
    ids = _run_ids(sweeps["study"])
    assert sorted(ids) == [
        f"activation=tanh,budget_chars=0,data.num_sentences=40,hidden_size=8,"
        f"init={init},steps=30/seed=1"
        for init in ("orthogonal", "xavier")
    ]
    assert _run_ids(sweeps["experiment"]) == ids
    assert _val_losses(sweeps["experiment"]) == _val_losses(sweeps["study"])

    both = tmp_path / "both"
    proc = run_cli(["-m", "study=demo", "experiment=seq_len", *tiny, f"hydra.sweep.dir={both}"])
    assert proc.returncode == 2
    assert "study=demo and experiment=seq_len both given" in proc.stderr
    assert "experiment= is the old name of study=" in proc.stderr
    assert not both.exists()
    one = tmp_path / "one"  # a single run too
    proc = run_cli(["study=demo", "experiment=seq_len", *SHRINK_RUN, f"hydra.run.dir={one}"])
    assert proc.returncode == 2 and "both given" in proc.stderr, proc.stderr[-2000:]
    assert not one.exists()


def test_a_study_file_of_ones_own_runs_resumes_and_reproduces_its_claims(tmp_path):
    """`rnn-lab study PATH` runs a file kept anywhere into multirun/<stem>/ of the current
    folder; rerun (here by `rnn-lab reproduce PATH`) it resumes, and launcher=joblib, whose
    workers compose the config themselves, gives the same numbers."""
    study = tmp_path / "elsewhere" / "my_clip.yaml"
    study.parent.mkdir()
    study.write_text(OWN_STUDY)
    work = tmp_path / "work"
    work.mkdir()
    one_worker = "hydra.launcher.n_jobs=1"
    proc = run_cli(["study", str(study), one_worker], cwd=work, module="rnn_lab.app.cli")
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweep = work / "multirun" / "my_clip"
    assert "Stacked launcher: 4 jobs" in sweep_logs(sweep)  # the preset's launcher
    first = _val_losses(sweep)
    assert sorted(first) == ["clip=0/seed=1", "clip=0/seed=2", "clip=1.0/seed=1", "clip=1.0/seed=2"]
    results = pd.read_csv(sweep / "results.csv")
    assert set(results["status"]) == {"ok"} and set(results["steps"]) == {40}  # the file's
    report = (sweep / "report.md").read_text()
    assert "# Study report: my_clip" in report
    assert "Does clip=1 slow a short run down" in report
    commands = report.split("## Reproduce")[1].split("```")[1]
    assert f"rnn-lab study {study} " in commands  # the file, not an unknown name
    assert "study=my_clip" not in commands  # plain Hydra cannot see the file
    assert "experiment=my_clip" not in commands

    proc = run_cli(["reproduce", str(study), one_worker], cwd=work, module="rnn_lab.app.cli")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("already done, not retrained") == 4, proc.stdout[-2000:]
    assert "| 1 | reproduction | **holds** | Without clipping" in proc.stdout
    assert _val_losses(sweep) == first

    joblib = ["launcher=joblib", one_worker, "hydra.sweep.dir=multirun/joblib"]
    proc = run_cli(["study", str(study), *joblib], cwd=work, module="rnn_lab.app.cli")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _val_losses(work / "multirun" / "joblib") == first  # bit-identical
    assert sorted(p.name for p in work.iterdir()) == ["multirun"]


def test_a_study_file_composes_as_its_stem_and_a_shipped_file_is_the_shipped_study(
    compose, tmp_path
):
    from rnn_lab.app.studies import find_study, register

    path = tmp_path / "probe_own_study.yaml"
    path.write_text(OWN_STUDY)
    study = find_study(str(path))
    assert (study.name, study.path, study.shipped) == ("probe_own_study", path, False)
    register(study)
    cfg = compose(["study=probe_own_study"], return_hydra_config=True)
    assert cfg.study.name == "probe_own_study" and cfg.study.file == str(path)
    assert cfg.steps == 40 and cfg.data.num_sentences == 40  # the file's lines
    assert cfg.resume is True  # ... on top of the shared preset
    assert cfg.hydra.launcher._target_.endswith("StackedLauncher")
    assert dict(cfg.hydra.sweeper.params) == {"clip": "0,1.0", "seed": "1,2"}
    # The shipped file given by its path is the shipped study, not a clash.
    shipped = find_study(str(EXPERIMENTS_DIR / "demo.yaml"))
    assert shipped.shipped and shipped.name == "demo"


BAD_STUDY_FILES = {
    # case: (file name, content or None (absent) or "/" (a folder), words of the error)
    "absent": ("nothing_here.yaml", None, "no such file"),
    "folder": ("a_folder.yaml", "/", "is a directory"),
    "not yaml": ("broken.yaml", "# @package _global_\nstudy: [1, 2\n", "is not YAML"),
    "a list": ("a_list.yaml", "# @package _global_\n- 1\n", "holds no YAML mapping"),
    "no header": ("no_header.yaml", "study: {question: q}\n", "`# @package _global_`"),
    "header not first": (
        "late_header.yaml",
        "# my study\n# @package _global_\nstudy: {question: q}\n",
        "does not start with `# @package _global_`",
    ),
    "no study block": ("no_block.yaml", "# @package _global_\nsteps: 5\n", "no `study:` block"),
    "another name": (
        "mine.yaml",
        "# @package _global_\nstudy: {name: demo}\n",
        "study.name is 'demo' but a study's name is its file's stem",
    ),
    "not text": ("binary.yaml", b"\xff\xfe\x00\x81", "cannot be read as text"),
    "bad stem": ("my study.yaml", "# @package _global_\nstudy: {}\n", "cannot be a study's name"),
    "a shipped name": ("demo.yaml", "# @package _global_\nstudy: {}\n", "a shipped study is"),
}


@pytest.mark.parametrize("case", sorted(BAD_STUDY_FILES))
def test_a_bad_study_file_is_refused_in_one_paragraph_before_any_work(
    case, tmp_path, monkeypatch, capsys
):
    from rnn_lab.app.cli import main_study

    name, content, words = BAD_STUDY_FILES[case]
    path = tmp_path / "studies" / name
    path.parent.mkdir()
    if content == "/":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    monkeypatch.chdir(tmp_path)
    assert main_study([str(path), "steps=10"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"rnn-lab study: {path}") and words in err, err
    assert "\n" not in err  # one paragraph
    assert not (tmp_path / "multirun").exists()
