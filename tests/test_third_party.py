"""rnn_lab.third_party: every patch of another library and every private API it uses is listed
there with the versions it was written for, and the installed versions are within them."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import sys
from importlib.metadata import PackageNotFoundError

import numpy as np
import pytest
from packaging.specifiers import SpecifierSet

from rnn_lab import PROJECT_ROOT, third_party
from rnn_lab.third_party import RELIANCES, Reliance

# The code the registry speaks for: the package and the launcher plugin.
SOURCES = [
    p
    for p in [
        *(PROJECT_ROOT / "rnn_lab").rglob("*.py"),
        *(PROJECT_ROOT / "hydra_plugins" / "rnn_lab_launcher").glob("*.py"),
    ]
    if p.name != "third_party.py"
]
OURS = ("rnn_lab", "hydra_plugins.rnn_lab_launcher", "__future__")


def _installed(entry: Reliance) -> bool:
    try:
        for package, _ in entry.requires:
            importlib.metadata.version(package)
    except PackageNotFoundError:
        return False
    return True


def out_of_range() -> list[str]:
    """One line per installed package outside the range an entry was written for."""
    problems = []
    for key, entry in RELIANCES.items():
        for package, spec in entry.requires:
            try:
                installed = importlib.metadata.version(package)
            except PackageNotFoundError:
                continue  # an optional package: the entry applies only with it
            if not SpecifierSet(spec).contains(installed, prereleases=True):
                problems.append(
                    f"{key} ({entry.kind}: {entry.target}, used by {entry.used_by}) was written "
                    f"for {package}{spec}; installed: {installed}"
                )
    return problems


def test_the_installed_versions_are_the_ones_the_patches_were_written_for():
    assert out_of_range() == []


def test_a_version_outside_a_range_fails(monkeypatch):
    real = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata, "version", lambda p: "1.4.0" if p == "hydra-core" else real(p)
    )
    problems = out_of_range()
    hydra_keys = [k for k, e in RELIANCES.items() if ("hydra-core", ">=1.3.2,<1.4") in e.requires]
    assert len(hydra_keys) >= 4 and len(problems) == len(hydra_keys)
    assert "hydra.split_arguments (private: hydra._internal.core_plugins.basic_sweeper." in (
        problems[0] if problems[0].startswith("hydra.split") else "\n".join(problems)
    )
    assert all("installed: 1.4.0" in p and "hydra-core>=1.3.2,<1.4" in p for p in problems)


@pytest.mark.parametrize("key", sorted(RELIANCES))
def test_every_listed_name_is_where_the_entry_says(key):
    entry = RELIANCES[key]
    if not _installed(entry):
        pytest.skip(f"{entry.requires} not installed")
    third_party.resolve(key)  # raises when the module or the name is gone
    assert entry.kind in ("patch", "private", "copy") and entry.used_by and entry.why


def test_the_engine_dot_is_numpys_undispatched_dot():
    from rnn_lab.core import engine

    assert engine._dot is np.dot._implementation


def test_wrap_replaces_a_function_until_undone(monkeypatch):
    monkeypatch.setitem(
        RELIANCES, "test.dumps", Reliance("patch", (), "json", "dumps", "this test", "a test")
    )
    calls = []

    def wrapper(original, *args, **kwargs):
        calls.append(args)
        return "wrapped " + original(*args, **kwargs)

    undo = third_party.wrap("test.dumps", wrapper)
    try:
        assert json.dumps([1]) == "wrapped [1]" and calls == [([1],)]
        assert json.dumps.__wrapped__ is not None
    finally:
        undo()
    assert json.dumps([1]) == "[1]"


def test_wrap_of_a_method_gets_the_instance(monkeypatch):
    monkeypatch.setitem(
        RELIANCES,
        "test.method",
        Reliance("patch", (), "json", "JSONEncoder.encode", "this test", "a test"),
    )
    undo = third_party.wrap("test.method", lambda original, self, o: original(self, o) + "!")
    try:
        assert json.JSONEncoder().encode([2]) == "[2]!"
    finally:
        undo()
    assert json.JSONEncoder().encode([2]) == "[2]"


def test_wrap_of_a_missing_name_changes_nothing_unless_required(monkeypatch):
    monkeypatch.setitem(
        RELIANCES, "test.gone", Reliance("patch", (), "json", "no_such_name", "this test", "-")
    )
    third_party.wrap("test.gone", lambda original: None)()  # a no-op and its no-op undo
    with pytest.raises(AttributeError):
        third_party.wrap("test.gone", lambda original: None, missing_ok=False)
    with pytest.raises(ValueError, match="not a patch"):
        third_party.wrap("hydra.save_config", lambda original: None)


def test_imported_only_does_not_import(monkeypatch):
    module = RELIANCES["loky.executor"].module
    monkeypatch.delitem(sys.modules, module, raising=False)
    assert third_party.resolve("loky.executor", "absent", imported_only=True) == "absent"
    assert module not in sys.modules


# ---- nothing outside rnn_lab.third_party reaches for a private name ----------------------


def _private(dotted: str) -> bool:
    """An underscore name; not a dunder, nor a config key such as Hydra's ``_target_``."""
    return any(p.startswith("_") and not p.endswith("_") for p in dotted.split("."))


def _third_party_module(name: str) -> bool:
    top = name.split(".")[0]
    if name.startswith(OURS) or top in sys.stdlib_module_names or not top.isidentifier():
        return False
    return top == "hydra_plugins" or importlib.util.find_spec(top) is not None


def private_uses(path) -> list[str]:
    """Private modules or names of other libraries that ``path`` imports, names as a module
    alias's attribute, reads with getattr or writes as a dotted path in a string; and names of
    another library's modules or imported classes it assigns (a patch). An attribute of an
    object a library returned (``study._storage``) is beyond this scan: the registry lists it."""
    tree = ast.parse(path.read_text())
    aliases: dict[str, str] = {}
    imported: set[str] = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                if _third_party_module(a.name):
                    aliases[(a.asname or a.name).split(".")[0]] = a.name
                    if _private(a.name):
                        found.append(f"import {a.name}")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if not _third_party_module(node.module):
                continue
            for a in node.names:
                imported.add(a.asname or a.name)
                if _private(node.module) or _private(a.name):
                    found.append(f"from {node.module} import {a.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            root = node
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in aliases:
                found.append(f"{root.id}. ... .{node.attr}")
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "getattr":
            arg = node.args[1] if len(node.args) > 1 else None
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and _private(arg.value):
                found.append(f"getattr(..., {arg.value!r})")
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setattr":
            if getattr(node.args[0], "id", None) in {*aliases, *imported}:
                found.append(f"setattr({node.args[0].id}, ...)")
        elif isinstance(node, ast.Assign | ast.AugAssign):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                root = target
                while isinstance(root, ast.Attribute):
                    root = root.value
                if target is not root and getattr(root, "id", None) in {*aliases, *imported}:
                    found.append(f"assigns {root.id}. ... .{target.attr}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            if " " not in text and "." in text and _private(text) and _third_party_module(text):
                found.append(repr(text))
    return found


def test_no_other_module_names_a_private_api_of_another_library():
    offenders = {
        str(p.relative_to(PROJECT_ROOT)): uses for p in SOURCES if (uses := private_uses(p))
    }
    assert offenders == {}, "listed in rnn_lab.third_party and reached through it, or public"


def test_the_scan_sees_each_kind_of_private_use(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import numpy as np\n"
        "from hydra._internal.core_plugins import basic_sweeper\n"
        "from hydra.core.utils import _save_config\n"
        "x = np.dot._implementation\n"
        "y = getattr(np.dot, '_implementation', None)\n"
        "z = 'hydra_plugins.hydra_optuna_sweeper._impl.OptunaSweeperImpl'\n"
        "from submitit.local import local\n"
        "from hydra.core.utils import JobReturn\n"
        "local.start_controller = None\n"
        "setattr(np, 'dot', None)\n"
        "JobReturn.status = None\n"
    )
    assert len(private_uses(bad)) == 8
