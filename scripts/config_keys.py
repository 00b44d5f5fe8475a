"""docs/config_keys.md: every config key and group option, generated from the code.

    python scripts/config_keys.py           # (re)write docs/config_keys.md
    python scripts/config_keys.py --check   # exit 1 when the page is not what this would write

The page is built from the sources that define the keys, so it cannot drift from them:
``TrainSettings`` (rnn_lab/run/settings.py: each plain key's default, meaning, allowed values
and kind), and for the groups the option files in conf/ (each file's header comment says what
the option is; an option's own keys are its YAML lines with their comments). It holds no
measured number, so it carries no date or machine: it changes only when a key does.
tests/test_docs.py fails when the page is stale.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the checkout's rnn_lab, also when run without installing

from rnn_lab import CONF_DIR  # noqa: E402
from rnn_lab.run.settings import (  # noqa: E402
    GROUP_KEYS,
    Bool,
    Int,
    Num,
    OneOf,
    TrainSettings,
    ZeroOrInt,
)

PAGE = ROOT / "docs" / "config_keys.md"
COMMAND = "python scripts/config_keys.py"

# The groups a user picks from, in the order of conf/config.yaml's defaults list (schema/ and
# study_preset/ are internal; study (old name: experiment) is the studies, listed by
# `rnn-lab study --list`).
GROUPS = ("cell", "recipe", "init", "activation", "optim", "data", "launcher", "logger")
KINDS = {
    "result": "result",  # part of the run's identity: changes what it computes
    "record": "recording",  # part of the identity too: the recorded files differ
    "book": "bookkeeping",  # a resumed run may change it freely
}
# `key: value  # comment` at any indentation of an option file
OPTION_LINE = re.compile(
    r"^(?P<indent> *)(?P<key>[A-Za-z_][A-Za-z0-9_]*):\s*(?P<value>[^#]*?)\s*(?:#\s*(?P<note>.*))?$"
)


def allowed(check) -> str:
    """The allowed values of a plain key, in words, from its check in TrainSettings."""
    if check is None:
        return "any"
    if isinstance(check, ZeroOrInt):
        return f"0 or an integer >= {check.minimum}"
    if isinstance(check, Int):
        return f"an integer >= {check.minimum}"
    if isinstance(check, Bool):
        return "true, false"
    if isinstance(check, OneOf):
        return ", ".join(map(str, check.choices))
    if isinstance(check, Num):
        parts = []
        if check.low is not None:
            parts.append(f"{'>' if check.low_open else '>='} {check.low:g}")
        if check.high is not None:
            parts.append(f"{'<' if check.high_open else '<='} {check.high:g}")
        return "a number " + " and ".join(parts) if parts else "a finite number"
    return type(check).__name__


def yaml_value(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def cell(text: str) -> str:
    """Text for a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def header_comment(path: Path) -> str:
    """An option file's opening comment (what the option is), on one line."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if not text.startswith("@package"):
            lines.append(text)
    return " ".join(lines)


def option_keys(group: str, path: Path) -> list[tuple[str, str, str]]:
    """(dotted key, default, comment) of what an option sets. A group's own file: every key
    but `name` and `defaults`, under the group's name. A file packaged _global_ (recipe,
    launcher, logger) sets other nodes: its commented keys, by their full path."""
    text = path.read_text()
    is_global = "@package _global_" in text.split("\n", 1)[0]
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing mappings
    out = []
    for line in text.splitlines():
        m = OPTION_LINE.match(line)
        if not m:
            continue
        indent = len(m["indent"])
        stack = [(i, k) for i, k in stack if i < indent]
        if m["key"] == "_target_" or (m["key"] == "defaults" and not stack):
            continue
        path_keys = [k for _, k in stack] + [m["key"]]
        if not m["value"]:  # a mapping: its keys follow, indented
            stack.append((indent, m["key"]))
            continue
        if is_global and m["note"]:
            out.append((".".join(path_keys), m["value"], m["note"]))
        elif not is_global and path_keys != ["name"]:
            out.append((".".join([group, *path_keys]), m["value"], m["note"] or ""))
    return out


def default_option(group: str) -> str | None:
    """The option conf/config.yaml's defaults list picks for a group (None: none)."""
    config = yaml.safe_load((CONF_DIR / "config.yaml").read_text())
    for entry in config.get("defaults", []):
        if isinstance(entry, dict) and group in entry:
            return entry[group]
    return None


def group_lines(group: str) -> list[str]:
    default = default_option(group)
    lines = [f"### `{group}`", "", "| option | what it is | its own keys (default: meaning) |"]
    lines.append("| --- | --- | --- |")
    for path in sorted((CONF_DIR / group).glob("*.yaml")):
        name = f"`{path.stem}`" + (" (default)" if path.stem == default else "")
        keys = "<br>".join(
            f"`{k}={v}`" + (f": {note}" if note else "") for k, v, note in option_keys(group, path)
        )
        lines.append(f"| {name} | {cell(header_comment(path))} | {cell(keys)} |")
    if default is None:
        lines += ["", f"No `{group}` is chosen by default."]
    return [*lines, ""]


def key_lines() -> list[str]:
    lines = ["| key | default | allowed | kind | meaning |", "| --- | --- | --- | --- | --- |"]
    for key, info in TrainSettings.field_info().items():
        if key in GROUP_KEYS:
            continue
        lines.append(
            f"| `{key}` | `{yaml_value(info['default'])}` | {cell(allowed(info['check']))} | "
            f"{KINDS[info['kind']]} | {cell(info['help'])} |"
        )
    return lines


def page() -> str:
    lines = [
        "# Config keys",
        "",
        f"Written by `{COMMAND}` from `TrainSettings` (rnn_lab/run/settings.py) and",
        "the option files in conf/ (do not edit by hand: run it again; tests/test_docs.py fails",
        "when this page is stale). `python -m rnn_lab.train --help` lists the same keys.",
        "",
        "Any key is set on the command line (`python -m rnn_lab.train seq_len=50 clip=1.0`), in a",
        "study file, or swept with `-m` (`lr=0.001,0.01,0.1`). A bad value stops the run before",
        "any work, naming the key, the value and what is allowed.",
        "",
        "## Plain keys",
        "",
        "Kind: *result* keys are part of a run's identity (they change what it computes),",
        "*recording* keys too (the recorded files differ), *bookkeeping* keys are not (a resumed",
        "run may change them). `steps` and `budget_chars` say how long a run trains: a run can be",
        "extended by asking for more, never fewer.",
        "",
        *key_lines(),
        "",
        "## Groups",
        "",
        "A group picks code by name (`init=xavier`); an option's own keys follow it",
        "(`init=xavier init.scale=0.5`). Each option has its own structured schema, so an unknown",
        "or mistyped key is refused before anything runs. `study=NAME` (or `rnn-lab study NAME`;",
        "`experiment=NAME`, its old name, still works) picks a study, the file",
        "experiments/NAME.yaml: `rnn-lab study --list`.",
        "",
    ]
    for group in GROUPS:
        lines += group_lines(group)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is stale")
    args = parser.parse_args(argv)
    text = page()
    if args.check:
        current = PAGE.read_text() if PAGE.exists() else ""
        if current != text:
            print(f"{PAGE} is stale: run `{COMMAND}`", file=sys.stderr)
            return 1
        print(f"{PAGE} is up to date")
        return 0
    from rnn_lab.run.rundir import atomic_write_text

    atomic_write_text(PAGE, text)
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
