"""The package as the pipeline: numbers unchanged by the layout, one source of settings,
dependencies pointing one way, the run directory named in one module, small functions."""

from __future__ import annotations

import ast
import hashlib
import importlib
import json
import math
import pkgutil
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from omegaconf import open_dict

import rnn_lab
from rnn_lab import CONF_DIR, PROJECT_ROOT
from rnn_lab.run.settings import GROUP_KEYS, TrainSettings
from rnn_lab.run.trainer import train

PACKAGE = PROJECT_ROOT / "rnn_lab"
FIXTURES = Path(__file__).parent / "fixtures"


# ---- the numbers did not move ------------------------------------------------------------

REFERENCE = json.loads((FIXTURES / "reference_checkpoints.json").read_text())
# Recorded with the code before the layout change (tests/fixtures/reference_checkpoints.json):
# parameters, optimiser state, h, step and the loss window must be bit-identical.
COMPARED = re.compile(r"^(W_xh|W_hh|W_hy|b_h|b_y|h|step|recent_losses|optim\..*)$")


@pytest.mark.parametrize("case", sorted(REFERENCE))
def test_checkpoint_arrays_identical_to_before_the_layout_change(case, tmp_path):
    ref = REFERENCE[case]
    s = TrainSettings(analyze=False, plots=False, log_interval=0, **ref["settings"])
    summary = train(s, tmp_path)
    assert summary["status"] == ref["status"]
    assert summary["final_loss"] == ref["final_loss"]
    with np.load(tmp_path / "checkpoint.npz", allow_pickle=False) as z:
        compared = sorted(k for k in ref["arrays"] if COMPARED.match(k))
        assert {"W_hh", "h", "step"} <= set(compared)
        for key in compared:
            digest = hashlib.sha256(np.ascontiguousarray(z[key]).tobytes()).hexdigest()
            assert digest == ref["arrays"][key]["sha256"], f"{case}: {key} changed"


# ---- the package-level functions survive importing every submodule -------------------------


def test_collect_and_load_run_after_importing_every_submodule(tmp_path, tiny_settings):
    for mod in pkgutil.walk_packages(rnn_lab.__path__, "rnn_lab."):
        importlib.import_module(mod.name)
    run_dir = tmp_path / "sweep" / "seed=1"
    settings = tiny_settings(steps=20)
    train(settings, run_dir)
    (run_dir / ".hydra").mkdir()  # the collector reads a job's composed config
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(settings.to_dict()))
    for _ in range(3):  # a notebook calls them again and again
        assert rnn_lab.load_run(run_dir).summary["status"] == "ok"
        table = rnn_lab.collect(tmp_path / "sweep", write=False)
        assert callable(rnn_lab.collect) and callable(rnn_lab.load_run)
        assert len(table) == 1
        compared = rnn_lab.compare([tmp_path / "sweep", tmp_path / "sweep"], ["final_loss"])
        assert callable(rnn_lab.compare) and list(compared["n"]) == [1, 1]


# ---- one source of settings --------------------------------------------------------------


def test_config_yaml_schema_and_settings_agree(compose):
    from rnn_lab.app.schema import RnnLabSchema, settings_from_config

    assert settings_from_config(compose([])) == TrainSettings()
    schema_defaults = RnnLabSchema()
    for key, info in TrainSettings.field_info().items():
        if key not in GROUP_KEYS:
            assert getattr(schema_defaults, key) == info["default"], key
    text = (CONF_DIR / "config.yaml").read_text()
    plain = yaml.safe_load(text)
    own = {k for k in plain if k not in ("defaults", "hydra", "study")}
    assert own == set(TrainSettings.field_info()) - set(GROUP_KEYS)
    for key in own:  # every key has its one-line comment
        line = next(ln for ln in text.splitlines() if ln.startswith(f"{key}:"))
        assert "#" in line, f"conf/config.yaml: {key} has no comment"


def test_every_group_option_has_its_structured_schema():
    from hydra.core.config_store import ConfigStore

    from rnn_lab.app.schema import register_schema

    register_schema()
    repo = ConfigStore.instance().repo
    for group in ("init", "optim", "data"):
        for path in (CONF_DIR / group).glob("*.yaml"):
            defaults = yaml.safe_load(path.read_text())["defaults"]
            assert f"/schema/{group}/{path.stem}@_here_" in defaults, path
            assert f"{path.stem}.yaml" in repo["schema"][group], path


def test_task_function_returns_the_optimized_metric(compose, tmp_path):
    from hydra.core.hydra_config import HydraConfig

    from rnn_lab.app.main import run

    def run_with(overrides, out):
        cfg = compose([*TINY_OVERRIDES, *overrides], return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(out)
        HydraConfig.instance().set_config(cfg)
        return run(cfg)

    value = run_with(["optimized_metric=best_val_loss"], tmp_path / "a")
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert value == summary["best_val_loss"] and math.isfinite(value)
    default = run_with([], tmp_path / "b")
    assert default == json.loads((tmp_path / "b" / "summary.json").read_text())["val_loss"]
    # diverged: the loss is finite but absurd (tanh, lr=1e6: ~1e7 nats/char)
    assert run_with(["lr=1e6", "clip=0"], tmp_path / "c") == math.inf
    assert json.loads((tmp_path / "c" / "summary.json").read_text())["status"] == "diverged"


TINY_OVERRIDES = [
    "steps=30",
    "hidden_size=8",
    "seq_len=8",
    "data.num_sentences=40",
    "analyze=false",
    "log_interval=0",
    "val_interval=10",
]


# ---- dependencies point one way ----------------------------------------------------------

# A layer may import only from the layers listed (and from itself and the package root).
ALLOWED = {
    "core": {"core"},
    "run": {"core", "run"},
    "app": {"core", "run", "app", "inspect", "study"},
    "inspect": {"core", "run", "inspect"},
    "study": {"run", "study", "inspect"},
}
# What readers of run directories may use from run/: the directory, not the training loop.
READER_RUN_MODULES = {"rnn_lab.run.rundir", "rnn_lab.run.integrity", "rnn_lab.run.settings"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            package = PROJECT_ROOT.joinpath(*node.module.split(".")).is_dir()
            # from a package: the names are its modules; from a module: the module itself
            out.update(
                {f"{node.module}.{a.name}" for a in node.names} if package else {node.module}
            )
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m.startswith("rnn_lab.")}


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_dependencies_point_one_way(layer):
    for path in (PACKAGE / layer).glob("*.py"):
        for module in _imports(path):
            target = module.split(".")[1]
            if (PACKAGE / target).is_dir():
                assert target in ALLOWED[layer], f"{path.name} imports {module}"
            if layer in ("inspect", "study") and target == "run":
                run_module = ".".join(module.split(".")[:3])
                assert run_module in READER_RUN_MODULES, f"{path.name} imports {module}"
            if layer == "study":
                assert target != "core", f"{path.name} imports the engine ({module})"


def test_run_files_are_named_only_in_rundir():
    names = re.compile(
        r"['\"](summary\.json|settings\.json|vocab\.json|history\.csv|diagnostics\.npz|"
        r"checkpoint\.npz|analysis\.json|multirun\.yaml|results\.csv)['\"]"
    )
    for path in PACKAGE.rglob("*.py"):
        if path.name == "rundir.py":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            stripped = line.strip()
            if stripped.startswith("#") or '"""' in stripped:
                continue
            assert not names.search(line), f"{path.relative_to(PROJECT_ROOT)}:{i}: {stripped}"


# ---- small functions -----------------------------------------------------------------------

MAX_LINES, MAX_PARAMS = 100, 8


def _why_comment_above(source: list[str], def_line: int) -> bool:
    """A comment block directly above the def (decorators aside) that starts with '# why:'."""
    i = def_line - 2
    while i >= 0 and source[i].strip().startswith("@"):
        i -= 1
    while i >= 0 and source[i].strip().startswith("#"):
        if source[i].strip().startswith("# why:"):
            return True
        i -= 1
    return False


def test_no_function_over_100_lines_or_8_parameters():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        source = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(source))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            a = node.args
            n_params = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs)
            n_params -= int(bool(a.args) and a.args[0].arg in ("self", "cls"))
            n_lines = node.end_lineno - node.lineno + 1
            why = _why_comment_above(source, node.lineno)
            if (n_lines > MAX_LINES or n_params > MAX_PARAMS) and not why:
                where = f"{path.relative_to(PROJECT_ROOT)}:{node.lineno} {node.name}"
                offenders.append(f"{where} ({n_lines} lines, {n_params} parameters)")
    assert not offenders, "\n".join(offenders)


def test_help_lists_every_key_with_its_meaning():
    from cli_helpers import run_cli

    proc = run_cli(["--help"])
    assert proc.returncode == 0, proc.stderr
    for key, info in TrainSettings.field_info().items():
        if key not in GROUP_KEYS:
            assert f"  {key}=" in proc.stdout and info["help"] in proc.stdout, key
    assert "schema/" not in proc.stdout  # internal groups stay out of the listing
