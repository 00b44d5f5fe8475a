"""The package as the pipeline: numbers unchanged by the layout, one source of settings,
dependencies pointing one way, the run directory named in one module, an engine without file
I/O, small functions; no
import cycles, no module over 800 lines, the benchmarks beside the library, distinct module
names, nothing private shared between run/ and the stacked trainer."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import math
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from omegaconf import open_dict

import rnn_lab
from rnn_lab import CONF_DIR, PROJECT_ROOT
from rnn_lab.run.settings import GROUP_KEYS, TrainSettings
from rnn_lab.run.trainer import train

PACKAGE = PROJECT_ROOT / "rnn_lab"


def _script(name: str):
    """A module of scripts/ (not a package: loaded from its file)."""
    spec = importlib.util.spec_from_file_location(name, PROJECT_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- the numbers did not move ------------------------------------------------------------

# Recorded by `python scripts/reference_runs.py --spread --record` (tests/fixtures/
# reference_runs.{npz,json}): two short runs' parameters, hidden state and optimiser state.
# Bits are promised only on one machine (other tests compare runs made in the same test);
# across CPUs NumPy's and OpenBLAS's SIMD kernels move the last bits. Measured on an AVX-512
# Xeon against OpenBLAS Haswell, NumPy without AVX-512 (X86_V3) and NumPy baseline + OpenBLAS
# Nehalem: at 300 steps the largest relative difference was 1.7e-11 (Adam + relu) and 1.2e-15
# (SGD + tanh); at 2,000 steps the chaotic Adam + relu run was 0.48 apart, which is why the
# recorded runs are short. The tolerance is 100x the spread (1.7e-9); a 0.1% change of lr moves
# the arrays by 1.1e-3 or more, 650,000x the tolerance.
REFERENCE_RUNS = _script("reference_runs")
REFERENCE, REFERENCE_ARRAYS = REFERENCE_RUNS.recorded()


@pytest.mark.parametrize("case", sorted(REFERENCE["cases"]))
def test_runs_match_the_recorded_reference_within_the_cross_cpu_spread(case, tmp_path):
    ref = REFERENCE_ARRAYS[case]
    assert {"W_hh", "W_xh", "W_hy", "h", "final_loss"} <= set(ref)
    assert any(k.startswith("optim.") for k in ref)
    got = REFERENCE_RUNS.train_case(REFERENCE["cases"][case], REFERENCE["steps"], tmp_path)
    assert got["status_ok"]
    moved = REFERENCE_RUNS.relative_spread(got, ref)
    assert moved <= REFERENCE["tolerance"], f"{case}: moved {moved:.2e}"
    if case == "adam_identity_relu_b3":  # a transient spike (~22,000 nats/char) is not divergence
        assert pd.read_csv(tmp_path / "history.csv")["loss"].max() > 1000 * math.log(24)


def test_the_reference_comparison_sees_a_real_change(tmp_path):
    """The same run with lr 0.1% higher must be far outside the tolerance."""
    case = "sgd_tanh_seed7"
    settings = {**REFERENCE["cases"][case], "lr": 0.01 * 1.001}
    got = REFERENCE_RUNS.train_case(settings, REFERENCE["steps"], tmp_path)
    assert (
        REFERENCE_RUNS.relative_spread(got, REFERENCE_ARRAYS[case]) > 1000 * REFERENCE["tolerance"]
    )


@pytest.mark.parametrize(
    "kernels",
    [
        {"OPENBLAS_CORETYPE": "Haswell", "NPY_DISABLE_CPU_FEATURES": "X86_V4"},
        {"OPENBLAS_CORETYPE": "Nehalem", "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4"},
    ],
    ids=["avx2", "sse4"],
)
def test_the_reference_holds_with_other_cpu_kernels(kernels):
    """Whatever CPU CI lands on, the recorded runs also hold with other kernels forced."""
    script = PROJECT_ROOT / "scripts" / "reference_runs.py"
    env = {**os.environ, **kernels}
    proc = subprocess.run(
        [sys.executable, str(script), "--check"], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


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
# What readers of run directories may use from run/: the directory and the files a run read
# (input_files: its text and init=file weights, to rebuild it), not the training loop.
READER_RUN_MODULES = {
    "rnn_lab.run.rundir",
    "rnn_lab.run.integrity",
    "rnn_lab.run.settings",
    "rnn_lab.run.input_files",
}


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


# ---- the engine does no file I/O ----------------------------------------------------------

# The engine takes strings and arrays; reading a text (and its memory-mapped cache) or a weights
# file is rnn_lab/run/input_files.py. What counts as file I/O in a core module:
FILE_IO_MODULES = {"os", "io", "pathlib", "tempfile", "shutil", "mmap", "codecs", "glob", "fcntl"}
FILE_IO_METHODS = {
    *("read_text", "read_bytes", "write_text", "write_bytes", "open", "tofile", "unlink"),
    *("mkdir", "rmdir", "touch", "iterdir", "glob", "rglob", "is_file", "exists"),
}
NUMPY_FILE_IO = {
    *("load", "save", "savez", "savez_compressed", "memmap", "fromfile", "loadtxt", "savetxt"),
    *("genfromtxt", "open_memmap", "write_array_header_1_0", "read_array_header_1_0"),
}


def _file_io(source: str) -> list[str]:
    """What in the source reads or writes files: imports of file modules, open(), path and
    file methods, numpy's loaders, savers and memory maps (mmap_mode= included)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
            found += [f"import {n}" for n in names if n and n.split(".")[0] in FILE_IO_MODULES]
        elif isinstance(node, ast.Call):
            func, text = node.func, ast.unparse(node.func)
            if isinstance(func, ast.Name) and func.id == "open":
                found.append("open()")
            elif isinstance(func, ast.Attribute) and func.attr in FILE_IO_METHODS:
                found.append(f"{text}()")
            elif text.split(".")[0] in FILE_IO_MODULES:  # os.replace, tempfile.mkstemp, ...
                found.append(f"{text}()")
            elif isinstance(func, ast.Attribute) and func.attr in NUMPY_FILE_IO:
                if text.split(".")[0] in ("np", "numpy"):
                    found.append(f"{text}()")
            found += [f"{text}(mmap_mode=)" for k in node.keywords if k.arg == "mmap_mode"]
    return found


def test_core_does_no_file_io():
    offenders = {
        str(path.relative_to(PROJECT_ROOT)): found
        for path in sorted((PACKAGE / "core").glob("*.py"))
        if (found := _file_io(path.read_text()))
    }
    assert offenders == {}


def test_the_file_io_check_sees_file_io():
    source = (
        "import os, tempfile\nfrom pathlib import Path\nimport numpy as np\n"
        "f = open('x')\nPath('x').read_text()\nq.write_bytes(b'')\nos.replace('a', 'b')\n"
        "np.memmap('x')\nnp.load('x', mmap_mode='r')\nnp.lib.format.open_memmap('x')\n"
        "ids.tofile(f)\n"
    )
    found = _file_io(source)
    assert found == [
        "import os",
        "import tempfile",
        "import pathlib",
        "open()",
        "Path('x').read_text()",
        "q.write_bytes()",
        "os.replace()",
        "np.memmap()",
        "np.load()",
        "np.load(mmap_mode=)",
        "np.lib.format.open_memmap()",
        "ids.tofile()",
    ], found
    assert _file_io("import numpy as np\nx = np.zeros(3).sum()\ns = 'a'.replace('a', 'b')\n") == []


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


# ---- the layout shows the pipeline ----------------------------------------------------------


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _module_imports(path: Path) -> set[str]:
    """The rnn_lab modules a file imports, at its top or inside a function."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for a in node.names:  # `from pkg import module` names the module, else the module
                out.add(
                    f"{node.module}.{a.name}"
                    if f"{node.module}.{a.name}" in MODULES
                    else node.module
                )
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m in MODULES}


IMPORT_GRAPH = {name: _module_imports(path) for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles (strongly connected components of more than one module, or a module
    importing itself), by Tarjan's algorithm."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = stack[stack.index(v) :]
            del stack[stack.index(v) :]
            if len(component) > 1 or v in graph[v]:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_cycles():
    assert _cycles(IMPORT_GRAPH) == []


def test_the_cycle_check_sees_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert sorted(_cycles(graph)) == [["a", "b", "c"], ["e"]]


MAX_MODULE_LINES = 800


def test_no_module_over_800_lines():
    sizes = {
        str(p.relative_to(PROJECT_ROOT)): len(p.read_text().splitlines())
        for p in [*PACKAGE.rglob("*.py"), *(PROJECT_ROOT / "hydra_plugins").rglob("*.py")]
    }
    over = {path: n for path, n in sizes.items() if n > MAX_MODULE_LINES}
    assert not over, f"split these along their jobs: {over}"


def test_the_library_does_not_import_the_benchmarks():
    """rnn_lab/bench/ sits beside the library: rnn-lab bench reaches it by name (app/cli.py)."""
    for name, imported in IMPORT_GRAPH.items():
        if name.split(".")[1:2] in (["core"], ["run"], ["inspect"], ["study"], ["app"]):
            bench = {m for m in imported if m.startswith("rnn_lab.bench")}
            assert not bench, f"{name} imports {bench}"


def test_module_file_names_are_distinct():
    names: dict[str, list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        if path.name not in ("__init__.py", "__main__.py"):
            names.setdefault(path.name, []).append(str(path.relative_to(PROJECT_ROOT)))
    assert {n: paths for n, paths in names.items() if len(paths) > 1} == {}


# The stacked trainer and its engine: what they take from run/ (and run/ from them) is public.
STACKED_TRAINER = {
    "rnn_lab.run.stacked",
    "rnn_lab.core.stacked_engine",
    "rnn_lab.core.stacked_losses",
    "rnn_lab.core.stacked_optim",
}


def _private_uses_between(path: Path, others: set[str]) -> list[str]:
    """Underscore names of the modules ``others`` that the file imports or reads through a
    module alias (``from rnn_lab.run import trainer as single``; ``single._start``)."""
    tree = ast.parse(path.read_text())
    aliases, found = {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            for a in node.names:
                module = f"{node.module}.{a.name}"
                if module in others:
                    aliases[a.asname or a.name] = module
                elif node.module in others and a.name.startswith("_"):
                    found.append(f"from {node.module} import {a.name}")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name in others and a.asname:
                    aliases[a.asname] = a.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            if isinstance(node.value, ast.Name) and node.value.id in aliases:
                found.append(f"{aliases[node.value.id]}.{node.attr}")
    return found


def test_no_private_imports_between_run_and_the_stacked_trainer():
    """No module of run/ (trainer, lifecycle, stacked, step, ...) or core/stacked_* takes an
    underscore name from another: what the two trainers share is public (run.lifecycle)."""
    group = {m for m in MODULES if m.startswith("rnn_lab.run.")} | STACKED_TRAINER
    offenders = {}
    for name in sorted(group):
        if uses := _private_uses_between(MODULES[name], group - {name}):
            offenders[name] = uses
    assert offenders == {}


def test_the_private_import_check_sees_one(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "from rnn_lab.run import lifecycle as lc\n"
        "from rnn_lab.run.lifecycle import _save, plan_run\n"
        "import rnn_lab.run.stacked as st\n"
        "lc._summary, lc.plan_run, st._Arm\n"
    )
    others = {"rnn_lab.run.lifecycle", "rnn_lab.run.stacked"}
    assert _private_uses_between(source, others) == [
        "from rnn_lab.run.lifecycle import _save",
        "rnn_lab.run.lifecycle._summary",
        "rnn_lab.run.stacked._Arm",
    ]
