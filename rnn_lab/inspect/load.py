"""Read one run directory back exactly as the trainer wrote it (docs/run_directory.md).

    >>> run = load_run("outputs/2026-01-01/12-00-00"); run.history[["step", "loss"]].tail()

``load_run`` does no computation: the summary, settings, vocabulary, history and diagnostics
are the recorded values, unchanged (history.csv floats are written with ``repr``, so they
read back bit for bit). The convenience frames reshape the diagnostics arrays into tables.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from rnn_lab.core import cells
from rnn_lab.run.rundir import (
    ANALYSIS_FILE,
    CHECKPOINT_FILE,
    DIAGNOSTICS_FILE,
    HISTORY_FILE,
    HYDRA_CONFIG_FILE,
    HYDRA_DIR,
    SETTINGS_FILE,
    SUMMARY_FILE,
    VOCAB_FILE,
    RunDirError,
)

# diagnostics.npz arrays recorded as (record step, chunk position): profile_frame() kinds.
PROFILE_KINDS = ("last_loss_grad_norm", "per_step_grad_norm", "position_accuracy")


@dataclass
class Run:
    """The recordings of one run. Load with :func:`load_run`.

    summary: summary.json; settings: settings.json (the trainer's plain settings; from
    .hydra/config.yaml when settings.json is absent); history: history.csv as a DataFrame
    (empty when absent); diagnostics: the arrays of diagnostics.npz ({} with record=false);
    analysis: analysis.json or None; vocab: the characters of vocab.json, in index order.
    """

    path: Path
    summary: dict
    settings: dict = field(repr=False)
    history: pd.DataFrame = field(repr=False)
    diagnostics: dict[str, np.ndarray] = field(repr=False)
    analysis: dict | None = field(repr=False)
    vocab: list[str] = field(repr=False)

    # ---- small accessors -------------------------------------------------------------

    @property
    def status(self) -> str | None:
        return self.summary.get("status")

    @property
    def activation(self) -> str:
        return _activation_name(self.settings.get("activation", "tanh"))

    @property
    def cell(self) -> str:
        """The recurrent cell: "rnn", "gru" or "lstm" (runs written before cells existed have
        no `cell` setting: the vanilla rnn)."""
        return cell_name(self.settings)

    @property
    def gated(self) -> bool:
        return self.cell != "rnn"

    @property
    def has_checkpoint(self) -> bool:
        return (self.path / CHECKPOINT_FILE).exists()

    def params(self):
        """The weights of checkpoint.npz (the last checkpoint written) as the run's cell's
        parameters: engine.Params (rnn), gated.GRUParams or gated.LSTMParams."""
        path = self.path / CHECKPOINT_FILE
        if not path.exists():
            raise RunDirError(f"{self.path}: no {CHECKPOINT_FILE} (the run saved no weights)")
        cell = self.cell
        with np.load(path, allow_pickle=False) as z:
            missing = [n for n in cells.param_names(cell) if n not in z.files]
            if missing:
                raise RunDirError(f"{path}: missing arrays {', '.join(missing)} (cell={cell})")
            return cells.params_from_arrays(cell, z)

    def checkpoint_step(self) -> int | None:
        """The training step at which checkpoint.npz was written (None without one)."""
        path = self.path / CHECKPOINT_FILE
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as z:
            return int(z["step"]) if "step" in z.files else None

    # ---- diagnostics as tables -------------------------------------------------------

    def eigenvalues_frame(self) -> pd.DataFrame:
        """Eigenvalues of W_hh at each record step (gated cells: of the candidate block,
        cells.CANDIDATE_BLOCK): columns step, index, real, imag, abs."""
        columns = ["step", "index", "real", "imag", "abs"]
        eig = self.diagnostics.get("eigenvalues")
        if eig is None or eig.size == 0:
            return pd.DataFrame(columns=columns)
        steps = self.diagnostics["record_step"]
        n, H = eig.shape
        return pd.DataFrame(
            {
                "step": np.repeat(steps, H),
                "index": np.tile(np.arange(H), n),
                "real": eig.real.ravel(),
                "imag": eig.imag.ravel(),
                "abs": np.abs(eig).ravel(),
            }
        )

    def profile_frame(self, kind: str = "last_loss_grad_norm") -> pd.DataFrame:
        """A (record step x chunk position) array as a DataFrame: index step, columns 1..T.

        kind: "last_loss_grad_norm" (||dL_T/dh_t||, the vanishing-gradient profile),
        "per_step_grad_norm" (||dL/dh_t|| of the whole chunk loss) or "position_accuracy".
        For gated cells the norms are over the state s_t: h_t (GRU) or (h_t, c_t) (LSTM).
        """
        if kind not in PROFILE_KINDS:
            raise ValueError(f"kind: unknown {kind!r}; valid: {', '.join(PROFILE_KINDS)}")
        values = self.diagnostics.get(kind)
        if values is None or values.size == 0:
            return pd.DataFrame(
                index=pd.Index([], name="step"), columns=pd.Index([], name="position")
            )
        frame = pd.DataFrame(
            values,
            index=pd.Index(self.diagnostics["record_step"], name="step"),
            columns=pd.Index(np.arange(1, values.shape[1] + 1), name="position"),
        )
        return frame

    def jacobian_frame(self) -> pd.DataFrame:
        """Jacobian products per recorded step and lag k = 1..K: columns step, lag,
        step_norm (||J_{T-k+1}||), product_norm (||J_T ... J_{T-k+1}||), product_radius."""
        columns = ["step", "lag", "step_norm", "product_norm", "product_radius"]
        norm = self.diagnostics.get("jacobian_product_norm")
        if norm is None or norm.size == 0:
            return pd.DataFrame(columns=columns)
        m, K = norm.shape
        return pd.DataFrame(
            {
                "step": np.repeat(self.diagnostics["jacobian_step"], K),
                "lag": np.tile(np.arange(1, K + 1), m),
                "step_norm": self.diagnostics["jacobian_step_norm"].ravel(),
                "product_norm": norm.ravel(),
                "product_radius": self.diagnostics["jacobian_product_radius"].ravel(),
            }
        )

    def samples_frame(self) -> pd.DataFrame:
        """Text sampled during training: columns step, text."""
        steps = self.diagnostics.get("sample_step")
        if steps is None or steps.size == 0:
            return pd.DataFrame(columns=["step", "text"])
        return pd.DataFrame(
            {"step": steps, "text": [str(t) for t in self.diagnostics["sample_text"]]}
        )


def load_run(run_dir: str | Path) -> Run:
    """Load a run directory's recordings (see :class:`Run`).

    Example: ``load_run("outputs/2026-01-01/12-00-00").profile_frame().iloc[-1]`` is the
    vanishing-gradient profile at the last record step.
    Raises RunDirError when run_dir is not a directory or holds neither summary.json nor
    settings.json nor a checkpoint (nothing to read).
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirError(f"{run_dir}: not a directory")
    summary = _read_json(path / SUMMARY_FILE) or {}
    settings = _read_json(path / SETTINGS_FILE)
    if settings is None:
        settings = _settings_from_hydra(path / HYDRA_DIR / HYDRA_CONFIG_FILE) or {}
    if not summary and not settings and not (path / CHECKPOINT_FILE).exists():
        raise RunDirError(
            f"{run_dir}: not a run directory (no {SUMMARY_FILE}, {SETTINGS_FILE} or "
            f"{CHECKPOINT_FILE})"
        )
    vocab_doc = _read_json(path / VOCAB_FILE)
    vocab = list(vocab_doc["chars"]) if vocab_doc and "chars" in vocab_doc else []
    history_path = path / HISTORY_FILE
    # round_trip: pandas' default float parser can be off by an ulp; this one is exact.
    history = (
        pd.read_csv(history_path, float_precision="round_trip")
        if history_path.exists()
        else pd.DataFrame()
    )
    diagnostics: dict[str, np.ndarray] = {}
    if (path / DIAGNOSTICS_FILE).exists():
        with np.load(path / DIAGNOSTICS_FILE, allow_pickle=False) as z:
            diagnostics = {k: z[k] for k in z.files}
    return Run(
        path=path,
        summary=summary,
        settings=settings,
        history=history,
        diagnostics=diagnostics,
        analysis=_read_json(path / ANALYSIS_FILE),
        vocab=vocab,
    )


def cell_name(settings: dict) -> str:
    """The cell of a run's settings: settings.json holds {"name": ...}; a Hydra config the
    group node; absent (runs written before cells existed): "rnn"."""
    value = (settings or {}).get("cell")
    if isinstance(value, dict):
        return str(value.get("name") or "rnn")
    return str(value) if value else "rnn"


def cell_options(settings: dict) -> dict:
    """build_params' cell keywords from a run's settings: the cell and the LSTM forget bias."""
    node = settings.get("cell")
    forget_bias = node.get("forget_bias") if isinstance(node, dict) else None
    return {"cell": cell_name(settings), "forget_bias": forget_bias}


def _read_json(path: Path):
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _activation_name(value) -> str:
    # settings.json holds the name; a Hydra config holds the group node {name: ...}.
    return str(value.get("name", "tanh")) if isinstance(value, dict) else str(value)


def _settings_from_hydra(path: Path) -> dict | None:
    """The trainer's settings shape from .hydra/config.yaml (runs without settings.json)."""
    if not path.exists():
        return None
    import yaml

    config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(config, dict):
        return None
    config = dict(config)
    config["activation"] = _activation_name(config.get("activation", "tanh"))
    return config
