"""`pip install .` gives a working `rnn-lab` in any folder, reading nothing of the checkout.

The wheel is built from a copy of the checkout's sources (`pip wheel . --no-deps`), installed
without dependencies into a fresh venv, whose dependencies come from the project's venv through
a .pth line (a .pth file inside that folder is not processed, so the project's editable install
stays out: `rnn_lab` is the wheel's). Every command then runs from an empty folder, with an
audit hook (installed by a .pth of the fresh venv, so in every process, loky workers included)
that records each file or folder of the checkout opened or listed, outside its .venv/ where the
dependencies live. A run of this file takes ~30 s on 2 idle cores; CI runs it (`make test`).
"""

from __future__ import annotations

import ast
import email
import importlib.metadata
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import rnn_lab

CHECKOUT = Path(__file__).resolve().parent.parent
# What the wheel is built from (pyproject.toml names README.md as the package's readme).
SOURCES = ("pyproject.toml", "README.md", "conf", "experiments", "rnn_lab", "hydra_plugins")
TINY = ["hidden_size=8", "data.num_sentences=40", "analyze=false"]

GUARD = '''
"""Test-only: record every file or folder of the checkout a process opens or lists."""
import os, sys

_CHECKOUT, _ALLOWED, _LOG = {checkout!r}, {allowed!r}, {log!r}
_fd = os.open(_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT)


def _hook(event, args):
    if event not in ("open", "os.listdir", "os.scandir", "glob.glob") or not args:
        return
    try:
        path = os.path.abspath(os.fsdecode(args[0]))
    except Exception:
        return  # a file descriptor or no path
    inside = path == _CHECKOUT or path.startswith(_CHECKOUT + os.sep)
    if inside and not (path == _ALLOWED or path.startswith(_ALLOWED + os.sep)):
        os.write(_fd, f"{{event}} {{path}}\\n".encode())


sys.addaudithook(_hook)
'''


def _run(args: list[str], cwd: Path, env: dict | None = None, timeout: float = 300):
    env = dict(os.environ) if env is None else env
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(args)}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def _build_wheel(tmp: Path) -> Path:
    """The wheel of a copy of the sources (building in the checkout would leave build/ there,
    whose stale files a later build would ship)."""
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        source, copy = CHECKOUT / name, src / name
        if source.is_dir():  # symlinks kept: conf/study -> ../experiments, as checked out
            shutil.copytree(
                source, copy, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(source, copy)
    cmd = [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-q", "-w", str(tmp / "dist")]
    try:  # the project's setuptools builds it when it is recent enough: nothing downloaded
        if int(importlib.metadata.version("setuptools").split(".")[0]) >= 68:
            cmd.append("--no-build-isolation")
    except importlib.metadata.PackageNotFoundError:
        pass
    _run(cmd, cwd=src)
    (wheel,) = (tmp / "dist").glob("rnn_lab-*.whl")
    return wheel


@dataclass
class Installed:
    wheel: Path
    python: Path  # the fresh venv's
    rnn_lab: str  # its console script
    site: Path  # its site-packages
    log: Path  # what the guard recorded
    env: dict
    work: Path  # the empty folder every command runs from


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Installed:
    """The wheel, a fresh venv holding it and the guard, an empty working folder."""
    tmp = tmp_path_factory.mktemp("package")
    wheel = _build_wheel(tmp)
    venv = tmp / "fresh"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python)]
    _run([*pip, "install", "--no-deps", "--no-index", "-q", str(wheel)], cwd=tmp)
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(_run([str(python), "-c", purelib], cwd=tmp).stdout.strip())
    deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "rnn_lab_test_deps.pth").write_text("\n".join(deps) + "\n")
    log = tmp / "checkout_reads.log"
    allowed = str(Path(sys.prefix).resolve())  # the project's venv (the dependencies)
    guard = GUARD.format(checkout=str(CHECKOUT), allowed=allowed, log=str(log))
    (site / "rnn_lab_test_guard.py").write_text(textwrap.dedent(guard))
    (site / "rnn_lab_test_guard.pth").write_text("import rnn_lab_test_guard\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "HYDRA_"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    work = tmp / "work"
    work.mkdir()
    return Installed(wheel, python, str(venv / "bin" / "rnn-lab"), site, log, env, work)


def _checkout_reads(installed) -> list[str]:
    log = installed.log
    return log.read_text().splitlines() if log.exists() else []


def _checkout_files(folder: Path, pattern: str) -> set[str]:
    return {
        p.relative_to(folder).as_posix()
        for p in folder.glob(pattern)
        if "__pycache__" not in p.parts
    }


def test_the_wheel_holds_every_module_config_and_study_as_real_files(installed):
    with zipfile.ZipFile(installed.wheel) as wheel:
        infos = {i.filename: i for i in wheel.infolist()}
        expected = {f"rnn_lab/{p}" for p in _checkout_files(CHECKOUT / "rnn_lab", "**/*.py")}
        expected |= {
            f"hydra_plugins/{p}" for p in _checkout_files(CHECKOUT / "hydra_plugins", "**/*.py")
        }
        configs = {
            f"rnn_lab/conf/{p}": CHECKOUT / "conf" / p
            for p in _checkout_files(CHECKOUT / "conf", "**/*.yaml")
        }
        # conf/study (the group) and conf/experiment (its old name) are symlinks to
        # experiments/: glob does not descend into them
        configs |= {
            f"rnn_lab/conf/{group}/{p.name}": p
            for group in ("study", "experiment")
            for p in (CHECKOUT / "experiments").glob("*.yaml")
        }
        assert {"rnn_lab/conf/config.yaml", "rnn_lab/conf/study/demo.yaml"} <= set(configs)
        assert "rnn_lab/conf/experiment/demo.yaml" in configs
        missing = sorted((expected | set(configs)) - set(infos))
        assert not missing, f"not in the wheel (add the package to pyproject.toml): {missing}"
        for name, source in configs.items():
            mode = infos[name].external_attr >> 16
            assert not stat.S_ISLNK(mode), f"{name} is a symlink in the wheel"
            assert wheel.read(name) == source.read_bytes(), f"{name} differs from {source}"


def test_the_installed_package_is_the_wheel_with_its_configs_and_launcher(installed):
    probe = """
import json, hydra_plugins.rnn_lab_launcher as launcher, rnn_lab
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
print(json.dumps({
    "rnn_lab": rnn_lab.__file__, "conf": str(rnn_lab.CONF_DIR),
    "studies": str(rnn_lab.EXPERIMENTS_DIR), "project": rnn_lab.PROJECT_ROOT,
    "launcher": launcher.__file__,
    "launchers": [p.__name__ for p in Plugins.instance().discover(Launcher)],
}))
"""
    out = _run([str(installed.python), "-c", probe], installed.work, installed.env)
    found = json.loads(out.stdout)
    site = str(installed.site)
    for key in ("rnn_lab", "conf", "studies", "launcher"):
        assert found[key].startswith(site + os.sep), (key, found[key])
    assert found["project"] is None
    assert "StackedLauncher" in found["launchers"]
    assert not _checkout_reads(installed)


def test_the_guard_sees_a_read_of_the_checkout(installed, tmp_path):
    """The audit hook is live: without it, the checks of the other tests could not fail."""
    log = installed.log
    before = log.read_text() if log.exists() else ""
    code = f"open({str(CHECKOUT / 'pyproject.toml')!r}).read()"
    _run([str(installed.python), "-c", code], tmp_path, installed.env)
    assert f"open {CHECKOUT / 'pyproject.toml'}" in log.read_text()
    log.write_text(before)


def test_train_list_and_studies_run_from_an_empty_folder(installed, tmp_path):
    rnn, env, work = installed.rnn_lab, installed.env, installed.work
    assert not any(work.iterdir())
    _run([rnn, "train", "steps=40", "log_interval=0", *TINY], work, env)
    (run,) = (work / "outputs").glob("*/*")
    assert '"status": "ok"' in (run / "summary.json").read_text()
    sources = yaml.safe_load((run / ".hydra" / "hydra.yaml").read_text())["hydra"]["runtime"]
    paths = [s["path"] for s in sources["config_sources"] if s["schema"] == "file"]
    assert paths and all(p.startswith(str(installed.site)) for p in paths), paths

    listed = _run([rnn, "study", "--list"], work, env).stdout.splitlines()
    assert sorted(line.split()[0] for line in listed) == sorted(
        p.stem for p in (CHECKOUT / "experiments").glob("*.yaml")
    )

    one_worker = "hydra.launcher.n_jobs=1"  # the preset's stacked launcher, on one core
    _run([rnn, "study", "demo", "steps=30", "seed=1", *TINY, one_worker], work, env)
    demo = work / "multirun" / "demo-analyze=false,data.num_sentences=40,hidden_size=8,steps=30"
    assert "Stacked launcher: 6 jobs" in (demo / "sweep.log").read_text()  # the wheel's plugin
    assert "# Study report: demo" in (demo / "report.md").read_text()
    _assert_ok_runs(demo, 6)  # 3 inits x 2 activations, one seed

    study = tmp_path / "elsewhere" / "my_study.yaml"  # the README's example, shrunk
    study.parent.mkdir()
    study.write_text(readme_study())
    shrink = ["steps=30", "data.num_sentences=40", "analyze=false", one_worker]
    _run([rnn, "study", str(study), *shrink], work, env)
    mine = work / "multirun" / "my_study-analyze=false,data.num_sentences=40,steps=30"
    report = (mine / "report.md").read_text()
    assert "# Study report: my_study" in report and "## Claims" in report
    _assert_ok_runs(mine, 6)  # 2 hidden sizes x 3 seeds
    assert sorted(p.name for p in work.iterdir()) == ["multirun", "outputs"]
    assert not _checkout_reads(installed), _checkout_reads(installed)[:20]


def _assert_ok_runs(sweep: Path, n: int) -> None:
    summaries = [json.loads(p.read_text()) for p in sweep.glob("*/seed=*/summary.json")]
    assert [s["status"] for s in summaries] == ["ok"] * n


def readme_study() -> str:
    """The study file of the README's "Your own study"."""
    section = (CHECKOUT / "README.md").read_text().split("## Your own study", 1)[1]
    return section.split("```yaml\n", 1)[1].split("```", 1)[0]


# Imported only by a feature that needs an extra (each import sits inside that feature).
OPTIONAL_IMPORTS = {
    "mlflow": "logger=mlflow: the tracking extra",
    "optuna": "tuning studies: hydra-optuna-sweeper (the launchers extra) brings it",
    "sqlalchemy": "tuning studies' storage, with optuna",
    "alembic": "tuning studies' storage, with optuna",
    "pyarrow": "results.parquet beside results.csv when it imports (the dev extra)",
    "ray": "launcher=ray (rnn_lab's Ray launcher, _ray.py): the launchers extra brings it",
    "submitit": "launcher=submitit_slurm (rnn_lab's SLURM launcher, _slurm.py): launchers extra",
    "threadpoolctl": "generated pages name the BLAS kernels when it imports (joblib's dependency)",
}


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level module -> the files of the package that import it."""
    found: dict[str, set[str]] = {}
    for root in ("rnn_lab", "hydra_plugins"):
        for path in (CHECKOUT / root).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                    names = [node.module]
                else:
                    continue
                for top in {name.split(".")[0] for name in names}:
                    if top not in sys.stdlib_module_names and top not in (
                        "rnn_lab",
                        "hydra_plugins",
                    ):
                        found.setdefault(top, set()).add(str(path.relative_to(CHECKOUT)))
    return found


def test_every_module_the_package_imports_is_a_dependency_it_declares(installed):
    """A plain `pip install .` brings what the code imports: the fresh venv above borrows the
    project's packages, extras included, so only the declared dependencies tell."""
    with zipfile.ZipFile(installed.wheel) as wheel:
        (meta,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = email.message_from_bytes(wheel.read(meta))
    required = {
        re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower().replace("_", "-")
        for r in metadata.get_all("Requires-Dist")
        if "extra ==" not in r
    }
    distributions = importlib.metadata.packages_distributions()
    undeclared = {}
    for module, files in _third_party_imports().items():
        if module in OPTIONAL_IMPORTS:
            continue
        dists = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
        if not dists & required:
            undeclared[module] = sorted(files)
    assert not undeclared, f"imported, not in [project] dependencies: {undeclared}"
    assert set(OPTIONAL_IMPORTS) <= set(_third_party_imports())  # no stale entry


def test_the_checkout_reads_its_own_conf_and_experiments_live():
    """In the checkout (and its editable install) an edit of conf/ or experiments/ counts at
    once: the configs are read from there, not from a copy."""
    assert rnn_lab.PROJECT_ROOT == CHECKOUT
    assert rnn_lab.CONF_DIR == CHECKOUT / "conf"
    assert rnn_lab.EXPERIMENTS_DIR == CHECKOUT / "experiments"
    assert (CHECKOUT / "conf" / "study").resolve() == CHECKOUT / "experiments"
    assert (CHECKOUT / "conf" / "experiment").resolve() == CHECKOUT / "experiments"
