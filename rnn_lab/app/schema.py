"""The Hydra schema, derived from TrainSettings, and the checks that run before any work.

Hydra composes ``conf/config.yaml`` on top of :data:`RnnLabSchema`, which is generated from
:class:`~rnn_lab.run.settings.TrainSettings` (one source of keys, types and defaults), so a
wrong type (``seq_len=abc``) fails during composition. Each option of the ``cell``, ``init``,
``optim`` and ``data`` groups has its own structured schema in the ConfigStore (group
``schema/<group>``, included by the option's YAML file), so an unknown or mistyped option key is
refused by Hydra (and a key added with ``+`` by :func:`settings_from_config`).
:func:`settings_from_config` then checks values and ranges and returns plain TrainSettings;
every mistake is a :class:`ConfigError` naming the key, the bad value and what is allowed.
"""

from __future__ import annotations

import hashlib
import typing
from dataclasses import dataclass, field, fields, make_dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from rnn_lab.core.cells import CELL_NAMES, check_activation
from rnn_lab.core.data import DATA_NAMES
from rnn_lab.core.engine import ACTIVATIONS
from rnn_lab.core.inits import INIT_NAMES
from rnn_lab.core.optim import OPTIMIZERS
from rnn_lab.run.settings import GROUP_KEYS, Int, Num, SettingsError, TrainSettings, check_settings


class ConfigError(ValueError):
    """A bad setting: the message names the key, the value and what is allowed."""


# ---- per-option schemas of the groups ------------------------------------------------------


@dataclass
class InitSchema:
    name: str = MISSING
    scale: float = 1.0
    path: str | None = None


@dataclass
class CellSchema:
    name: str = MISSING


@dataclass
class LstmCellSchema:
    name: str = "lstm"
    forget_bias: float | None = None  # null: torch's init of the biases; 1.0 = Jozefowicz et al.


@dataclass
class ActivationSchema:
    name: str = MISSING


@dataclass
class ElmanDataSchema:
    name: str = "elman"
    seed: int = 42
    num_sentences: int = 600


@dataclass
class TextDataSchema:
    name: str = "text"
    path: str = MISSING
    normalize: bool = True


# The sequence tasks (rnn_lab.core.tasks); their defaults are TASK_DEFAULTS (a test checks).
@dataclass
class CopyDataSchema:
    name: str = "copy"
    seed: int = 42
    length: int = 10
    symbols: int = 8
    delay: int = 20
    val_sequences: int = 1000


@dataclass
class AddingDataSchema:
    name: str = "adding"
    seed: int = 42
    length: int = 100
    val_sequences: int = 1000


@dataclass
class MemoryCapacityDataSchema:
    name: str = "memory_capacity"
    seed: int = 42
    length: int = 200
    max_delay: int = 100
    val_sequences: int = 50


@dataclass
class LoggerSchema:
    """The logger group (conf/logger/): not a setting of a run, it never changes results."""

    name: str = MISSING  # none | mlflow
    tracking_uri: str | None = None  # null: sqlite:///<sweep or run dir>/mlflow.db
    experiment: str | None = None  # null: the study's name, else rnn_lab


def _optimizer_schema(name: str, cls) -> type:
    """The optim option's schema from the optimiser's own dataclass (its hyperparameters)."""
    hints = typing.get_type_hints(cls)
    specs = [("name", str, field(default=name))]
    for f in fields(cls):
        if f.name != "state":
            specs.append((f.name, hints[f.name], field(default=f.default)))
    return make_dataclass(f"{cls.__name__}Schema", specs)


OPTION_SCHEMAS: dict[str, dict[str, type]] = {
    "cell": {"rnn": CellSchema, "gru": CellSchema, "lstm": LstmCellSchema},
    "init": {name: InitSchema for name in INIT_NAMES},
    "optim": {name: _optimizer_schema(name, cls) for name, cls in OPTIMIZERS.items()},
    "data": {
        "elman": ElmanDataSchema,
        "text": TextDataSchema,
        "copy": CopyDataSchema,
        "adding": AddingDataSchema,
        "memory_capacity": MemoryCapacityDataSchema,
    },
}
OPTION_SCHEMAS["logger"] = {"none": LoggerSchema, "mlflow": LoggerSchema}  # rnn_lab.app.tracking
# Every optimiser and data source has its schema (checked once, at import).
assert set(OPTION_SCHEMAS["data"]) == set(DATA_NAMES)

# Range checks of the group options' own keys (types are Hydra's job).
OPTION_CHECKS = {
    "init.scale": Num(0, low_open=True),
    "data.num_sentences": Int(1),
    "data.seed": Int(0),
    "data.length": Int(1),  # adding: >= 2, memory_capacity: > max_delay (the task checks)
    "data.symbols": Int(2),
    "data.delay": Int(1),
    "data.max_delay": Int(1),
    "data.val_sequences": Int(1),
    "optim.momentum": Num(0, 1, high_open=True),
    "optim.dampening": Num(0, 1),
    "optim.eps": Num(0, low_open=True),
    "optim.initial_accumulator_value": Num(0),
    "optim.beta1": Num(0, 1, high_open=True),
    "optim.beta2": Num(0, 1, high_open=True),
}


# ---- the top-level schema: TrainSettings' keys, types and defaults -------------------------


def _top_level_schema() -> type:
    hints = typing.get_type_hints(TrainSettings)
    specs: list[tuple] = []
    for f in fields(TrainSettings):
        if f.name in GROUP_KEYS:
            kind = ActivationSchema if f.name == "activation" else Any
            default = field(default_factory=ActivationSchema) if kind is not Any else MISSING
            specs.append((f.name, kind, default))
        else:
            specs.append((f.name, hints[f.name], field(default=f.default)))
    # Not settings of a run: Hydra's launcher choice, the old name of the study group (study=
    # is the group; its files fill the `study` node, the description), that node.
    specs += [("launcher", Any, None), ("experiment", Any, None), ("study", Any, None)]
    specs += [("logger", Any, None)]  # the experiment tracker (conf/logger/): no result changes
    return make_dataclass("RnnLabSchema", specs)


RnnLabSchema = _top_level_schema()


def register_schema() -> None:
    cs = ConfigStore.instance()
    cs.store(name="rnn_lab_schema", node=RnnLabSchema)
    for group, options in OPTION_SCHEMAS.items():
        for name, node in options.items():
            cs.store(group=f"schema/{group}", name=name, node=node)
    if not OmegaConf.has_resolver("rnn_lab.dirname"):
        OmegaConf.register_new_resolver("rnn_lab.dirname", job_dirname)
    if not OmegaConf.has_resolver("rnn_lab.absolute"):
        # Ray wants its temp dir absolute; a study's sweep folder is relative (multirun/NAME)
        OmegaConf.register_new_resolver("rnn_lab.absolute", lambda p: str(Path(p).absolute()))
    if not OmegaConf.has_resolver("rnn_lab.keys_help"):
        # --help lists every key with its default and meaning (hydra.help.template)
        OmegaConf.register_new_resolver("rnn_lab.keys_help", keys_help_text)
        OmegaConf.register_new_resolver("rnn_lab.groups_help", groups_help_text)


MAX_DIRNAME = 200


def job_dirname(override_dirname: str) -> str:
    """A sweep job's folder name: its overrides, shortened deterministically when too long."""
    name = override_dirname or "defaults"
    if len(name) <= MAX_DIRNAME:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    return f"{name[: MAX_DIRNAME - 11]}-{digest}"


# ---- config -> settings ------------------------------------------------------------------


def _container(cfg: DictConfig | dict) -> dict:
    if not isinstance(cfg, DictConfig):
        return dict(cfg)
    try:
        # The hydra node (present in tests that compose with it) is Hydra's, not ours.
        ours = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        return OmegaConf.to_container(ours, resolve=True, throw_on_missing=True)
    except Exception as e:  # a ??? left unset, e.g. data.path for data=text
        key = getattr(e, "full_key", None) or str(e)
        raise ConfigError(
            f"{key} is required but was not given (it is ??? in the config); set it on the "
            f"command line, e.g. {key}=..."
        ) from None


def _check_group(group: str, node: Any, valid_names) -> dict:
    node = {"name": node} if isinstance(node, str) else dict(node or {})
    name = node.get("name")
    if name not in valid_names:
        raise ConfigError(
            f"{group}={name!r} is not valid: choose one of {', '.join(sorted(valid_names))}."
        )
    schema = OPTION_SCHEMAS.get(group, {}).get(name)
    known = {f.name for f in fields(schema)} if schema is not None else set(node)
    unknown = sorted(set(node) - known)
    if unknown:  # a key added with +group.key=...: Hydra's struct mode lets `+` through
        raise ConfigError(
            f"{group}.{unknown[0]}={node[unknown[0]]!r} is not valid: {group}={name} has no key "
            f"{unknown[0]!r} (choose among its keys: {', '.join(sorted(known))})."
        )
    for key, value in node.items():
        check = OPTION_CHECKS.get(f"{group}.{key}")
        if check is not None and value is not None:
            node[key] = check(f"{group}.{key}", value)
    return node


def settings_from_config(cfg: DictConfig | dict) -> TrainSettings:
    """Check every value and return plain TrainSettings; raise ConfigError on the first mistake."""
    c = _container(cfg)
    names = {f.name for f in fields(TrainSettings)}
    values = {k: v for k, v in c.items() if k in names}
    try:
        values = check_settings(values)
        values["cell"] = _check_group("cell", c.get("cell") or "rnn", CELL_NAMES)
        values["init"] = _check_group("init", c.get("init"), INIT_NAMES)
        values["activation"] = _check_group("activation", c.get("activation"), ACTIVATIONS)["name"]
        values["optim"] = _check_group("optim", c.get("optim"), OPTIMIZERS)
        values["data"] = _check_group("data", c.get("data"), DATA_NAMES)
    except SettingsError as e:
        raise ConfigError(str(e)) from None
    init, optim = values["init"], values["optim"]
    try:
        check_activation(values["cell"]["name"], values["activation"])
    except ValueError as e:
        raise ConfigError(f"{e}.") from None
    if init["name"] == "file" and not init.get("path"):
        raise ConfigError("init.path is required with init=file: init.path=weights.npz.")
    if optim["name"] == "sgd" and optim.get("nesterov"):
        if optim.get("dampening") or not optim.get("momentum"):
            raise ConfigError(
                f"optim.nesterov=true needs optim.momentum > 0 and optim.dampening=0 (as in "
                f"torch.optim.SGD); got momentum={optim.get('momentum')!r}, "
                f"dampening={optim.get('dampening')!r}."
            )
    return TrainSettings(**values)


def check_inputs(settings: TrainSettings):
    """Checks that need the data: the text file, its length, init.path shapes and values.
    Returns the task (built once: the trainer reuses it)."""
    from rnn_lab.run.lifecycle import TrainError, build_params, build_task

    try:
        task = build_task(settings)
        if settings.init.get("name") == "file":
            build_params(settings, task)
    except TrainError as e:
        raise ConfigError(str(e)) from None
    return task


# Config groups a user picks from (schema/ and study_preset/ are internal).
USER_GROUPS = (
    "cell",
    "recipe",
    "init",
    "activation",
    "optim",
    "data",
    "launcher",
    "logger",
    "study",  # experiment= (its old name) still works, not listed twice
)


def keys_help_text() -> str:
    rows = [(k, "null" if d is None else str(d).lower() if isinstance(d, bool) else str(d), h)
            for k, d, h in config_keys_help()]  # fmt: skip
    width = max(len(k) + len(d) for k, d, _ in rows) + 3
    return "\n".join(f"  {f'{k}={d}':<{width}} {h}" for k, d, h in rows)


def groups_help_text() -> str:
    from rnn_lab import CONF_DIR

    lines = []
    for group in USER_GROUPS:
        options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        lines.append(f"  {group}: {', '.join(options)}")
    return "\n".join(lines)


def config_keys_help() -> list[tuple[str, Any, str]]:
    """(key, default, meaning) for every plain key: the --help listing."""
    info = TrainSettings.field_info()
    return [(k, v["default"], v["help"]) for k, v in info.items() if k not in GROUP_KEYS]


__all__ = [
    "ConfigError",
    "RnnLabSchema",
    "check_inputs",
    "config_keys_help",
    "register_schema",
    "settings_from_config",
]
