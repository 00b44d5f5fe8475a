"""The typed config schema and the checks that run before any training.

Hydra composes ``conf/config.yaml`` on top of :class:`RnnLabSchema` (registered in the
ConfigStore as ``rnn_lab_schema``), so a wrong type (``seq_len=abc``) fails during
composition. :func:`settings_from_config` then checks values and ranges and turns the config
into a plain :class:`~rnn_lab.run.trainer.TrainSettings`; every mistake is a :class:`ConfigError`
whose one-paragraph message names the key, the bad value and what is allowed.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, fields
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from rnn_lab.core.data import DATA_NAMES
from rnn_lab.core.engine import ACTIVATIONS
from rnn_lab.core.inits import INIT_NAMES
from rnn_lab.core.optim import OPTIMIZERS
from rnn_lab.run.trainer import DTYPES, TrainSettings


class ConfigError(ValueError):
    """A bad setting: the message names the key, the value and what is allowed."""


@dataclass
class InitSchema:
    name: str = MISSING
    scale: float = 1.0
    path: str | None = None


@dataclass
class ActivationSchema:
    name: str = MISSING


@dataclass
class RnnLabSchema:
    # Group nodes: init and activation share one shape; optimiser and data settings differ
    # per option, so they are checked per option in settings_from_config.
    init: InitSchema = field(default_factory=InitSchema)
    activation: ActivationSchema = field(default_factory=ActivationSchema)
    optim: Any = MISSING
    data: Any = MISSING
    launcher: Any = None
    experiment: Any = None
    steps: int = 30000
    hidden_size: int = 64
    seq_len: int = 25
    lr: float = 0.01
    clip: float = 5.0
    clip_mode: str = "norm"
    seed: int = 42
    lr_decay_rate: float = 1.0
    lr_decay_every: int = 1000
    val_fraction: float = 0.1
    val_interval: int = 500
    temperature: float = 1.0
    freeze_whh: bool = False
    use_embedding: bool = False
    embed_dim: int = 16
    batch_size: int = 1
    dtype: str = "float64"
    checkpoint_interval: int = 5000
    resume: bool = False
    log_interval: int = 1000
    record: bool = True
    record_interval: int = 100
    record_dense_interval: int = 10
    record_dense_until: int = 500
    jacobian_interval: int = 2000
    jacobian_lags: int = 10
    sample_interval: int = 5000
    sample_length: int = 200
    record_weights: bool = False
    analyze: bool = True
    plots: bool = True
    study: Any = None


def register_schema() -> None:
    ConfigStore.instance().store(name="rnn_lab_schema", node=RnnLabSchema)
    if not OmegaConf.has_resolver("rnn_lab.dirname"):
        OmegaConf.register_new_resolver("rnn_lab.dirname", job_dirname)


MAX_DIRNAME = 200


def job_dirname(override_dirname: str) -> str:
    """A sweep job's folder name: its overrides, shortened deterministically when too long."""
    name = override_dirname or "defaults"
    if len(name) <= MAX_DIRNAME:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    return f"{name[: MAX_DIRNAME - 11]}-{digest}"


# Each optimiser's own keys and their types (the optim group's per-option schema).
OPTIM_KEYS: dict[str, dict[str, type]] = {
    "sgd": {"momentum": float, "dampening": float, "nesterov": bool},
    "adagrad": {"eps": float, "initial_accumulator_value": float},
    "adam": {"beta1": float, "beta2": float, "eps": float},
}
DATA_KEYS: dict[str, dict[str, type]] = {
    "elman": {"seed": int, "num_sentences": int},
    "text": {"path": str, "normalize": bool},
}
CLIP_MODES = ("norm", "value")
# Every optimiser and data source has its key table (checked once, at import).
assert set(OPTIM_KEYS) == set(OPTIMIZERS) and set(DATA_KEYS) == set(DATA_NAMES)


def _err(key: str, value, allowed: str) -> ConfigError:
    return ConfigError(f"{key}={value!r} is not valid: {allowed}.")


def _check_group(group: str, node: dict, keys: dict[str, dict[str, type]]) -> dict:
    name = node.get("name")
    if name not in keys:
        raise _err(f"{group}.name", name, f"choose one of {', '.join(keys)}")
    allowed = keys[name]
    out = {"name": name}
    for k, v in node.items():
        if k == "name":
            continue
        if k not in allowed:
            raise ConfigError(
                f"{group}.{k} is not a setting of {group}={name}; its settings are "
                f"{', '.join(allowed) or 'none'}."
            )
        want = allowed[k]
        if v is None:
            out[k] = None
            continue
        if want is float and isinstance(v, int | float) and not isinstance(v, bool):
            out[k] = float(v)
        elif want is int and isinstance(v, int) and not isinstance(v, bool):
            out[k] = v
        elif want is bool and isinstance(v, bool) or want is str and isinstance(v, str):
            out[k] = v
        else:
            raise _err(f"{group}.{k}", v, f"expected a {want.__name__}")
    return out


def settings_from_config(cfg: DictConfig | dict) -> TrainSettings:
    """Check every value and return plain TrainSettings; raise ConfigError on the first mistake."""
    if isinstance(cfg, DictConfig):
        try:
            # The hydra node (present in tests that compose with it) is Hydra's, not ours.
            ours = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
            c = OmegaConf.to_container(ours, resolve=True, throw_on_missing=True)
        except Exception as e:  # a ??? left unset, e.g. data.path for data=text
            key = getattr(e, "full_key", None) or str(e)
            raise ConfigError(
                f"{key} is required but was not given (it is ??? in the config); set it on "
                f"the command line, e.g. {key}=..."
            ) from None
    else:
        c = dict(cfg)

    def positive_int(key, minimum=1):
        v = c[key]
        if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
            raise _err(key, v, f"must be an integer >= {minimum}")
        return v

    def number(key, *, low=None, high=None, low_open=False, high_open=False, text=""):
        v = c[key]
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise _err(key, v, f"must be a finite number{text}")
        if low is not None and (v < low or (low_open and v == low)):
            raise _err(key, v, f"must be {'>' if low_open else '>='} {low}{text}")
        if high is not None and (v > high or (high_open and v == high)):
            raise _err(key, v, f"must be {'<' if high_open else '<='} {high}{text}")
        return float(v)

    for key in (
        "steps",
        "hidden_size",
        "seq_len",
        "batch_size",
        "embed_dim",
        "sample_length",
        "jacobian_lags",
    ):
        positive_int(key)
    for key in (
        "val_interval",
        "checkpoint_interval",
        "log_interval",
        "record_interval",
        "record_dense_interval",
        "record_dense_until",
        "jacobian_interval",
        "sample_interval",
        "lr_decay_every",
    ):
        positive_int(key, minimum=0)
    positive_int("seed", minimum=0)
    number("lr", low=0, low_open=True)
    number("clip", low=0, text=" (0 disables clipping)")
    number("val_fraction", low=0, high=1, low_open=True, high_open=True)
    number("lr_decay_rate", low=0, high=1, low_open=True)
    number("temperature", low=0, text=" (0 = argmax)")
    if c["clip_mode"] not in CLIP_MODES:
        raise _err("clip_mode", c["clip_mode"], f"choose one of {', '.join(CLIP_MODES)}")
    if c["dtype"] not in DTYPES:
        raise _err("dtype", c["dtype"], f"choose one of {', '.join(DTYPES)}")

    init = dict(c["init"])
    if init.get("name") not in INIT_NAMES:
        raise _err("init.name", init.get("name"), f"choose one of {', '.join(INIT_NAMES)}")
    if not isinstance(init.get("scale", 1.0), int | float) or init.get("scale", 1.0) <= 0:
        raise _err("init.scale", init.get("scale"), "must be a number > 0")
    if init["name"] == "file" and not init.get("path"):
        raise ConfigError("init.path is required with init=file: init.path=weights.npz.")
    activation = c["activation"]["name"] if isinstance(c["activation"], dict) else c["activation"]
    if activation not in ACTIVATIONS:
        raise _err("activation", activation, f"choose one of {', '.join(ACTIVATIONS)}")
    optim = _check_group("optim", dict(c["optim"]), OPTIM_KEYS)
    if (
        optim["name"] == "sgd"
        and optim.get("nesterov")
        and (optim.get("dampening") or not optim.get("momentum"))
    ):
        raise ConfigError(
            f"optim.nesterov=true needs optim.momentum > 0 and optim.dampening=0 (as in "
            f"torch.optim.SGD); got momentum={optim.get('momentum')!r}, "
            f"dampening={optim.get('dampening')!r}."
        )
    assert set(OPTIM_KEYS) == set(OPTIMIZERS)
    data = _check_group("data", dict(c["data"]), DATA_KEYS)
    if data["name"] == "elman":
        for k in ("num_sentences",):
            if data.get(k, 1) < 1:
                raise _err(f"data.{k}", data[k], "must be an integer >= 1")

    names = {f.name for f in fields(TrainSettings)}
    values = {k: v for k, v in c.items() if k in names}
    values.update(init=init, activation=activation, optim=optim, data=data)
    for k in ("lr", "clip", "val_fraction", "lr_decay_rate", "temperature"):
        values[k] = float(values[k])
    return TrainSettings(**values)


def check_inputs(settings: TrainSettings):
    """Checks that need the data: the text file, its length, init.path shapes. Returns the task."""
    from rnn_lab.run.trainer import TrainError, build_params, build_task

    try:
        task = build_task(settings)
        if settings.init.get("name") == "file":
            build_params(settings, task)
    except TrainError as e:
        raise ConfigError(str(e)) from None
    return task
