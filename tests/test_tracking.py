"""MLflow tracking (logger=mlflow): a sweep is a parent run with its jobs as children, each
child holding its run folder's config, history and summary; a broken tracker fails nothing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from cli_helpers import TINY, run_cli

mlflow = pytest.importorskip("mlflow")

from rnn_lab.app import tracking  # noqa: E402
from rnn_lab.app.cli import _study_dir_suffix  # noqa: E402

# A tiny study block: its name is the experiment, the `study` tag of every run.
STUDY = "study={name: tiny_tracking, question: q, metrics: [val_loss]}"


def _client(db: Path):
    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}")


def _runs(client) -> list:
    experiments = client.search_experiments()
    return [r for e in experiments for r in client.search_runs([e.experiment_id])]


def _flat(node, prefix=""):
    """.hydra/config.yaml flattened the way params are spelled (an independent rewrite)."""
    out = {}
    for key, value in node.items():
        if not prefix and key in ("hydra", "logger"):  # the tracker is not a run setting
            continue
        if isinstance(value, dict) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        elif isinstance(value, bool):
            out[f"{prefix}{key}"] = str(value).lower()
        elif value is None:
            out[f"{prefix}{key}"] = "null"
        elif isinstance(value, list):
            out[f"{prefix}{key}"] = json.dumps(value)
        else:
            out[f"{prefix}{key}"] = str(value)
    return out


def _job_dirs(sweep: Path) -> list[Path]:
    return sorted(p.parent for p in sweep.glob("*/seed=*/summary.json"))


def _check_child(client, run, run_dir: Path) -> None:
    """Params = the folder's config, metrics = its summary.json, history = its rows."""
    summary = json.loads((run_dir / "summary.json").read_text())
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert run.data.params == _flat(config)
    numeric = {k: v for k, v in summary.items() if isinstance(v, int | float) and k != "signal"}
    assert numeric and "val_loss" in numeric
    for key, value in numeric.items():
        assert run.data.metrics[key] == pytest.approx(float(value), rel=1e-12, abs=0), key
    tags = run.data.tags
    assert tags["status"] == summary["status"] == "ok"
    assert tags["study"] == "tiny_tracking"
    assert tags["seed"] == str(config["seed"])
    assert tags["arm"] == f"init={config['init']['name']}"
    assert run.info.run_name == f"init={config['init']['name']}, seed={config['seed']}"
    rows = (run_dir / "history.csv").read_text().strip().splitlines()[1:]
    history = client.get_metric_history(run.info.run_id, "loss")
    assert len(history) == len(rows) and history[-1].step == summary["steps_done"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"summary.json", "history.csv"} <= artifacts
    assert run.info.status == "FINISHED"


def test_sweep_is_a_parent_run_with_its_jobs_as_children(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *TINY, "init=orthogonal,xavier", "seed=1,2", STUDY, "logger=mlflow"]
    args += ["launcher=joblib", f"hydra.sweep.dir={sweep}"]  # jobs in worker processes
    proc = run_cli(args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MLflow" not in proc.stderr, proc.stderr[-3000:]  # no warning
    client = _client(sweep / "mlflow.db")
    runs = _runs(client)
    parents = [r for r in runs if r.data.tags.get("rnn_lab.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("rnn_lab.role") == "run"]
    assert len(parents) == 1 and len(children) == 4 and len(runs) == 5
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.info.run_name == "tiny_tracking"
    assert parent.data.metrics == {"runs": 4.0, "runs_ok": 4.0}
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {
        "report.md",
        "results.csv",
        "multirun.yaml",
        "plots",
    }
    # The jobs ran in joblib workers: they found the parent through the sweep folder.
    by_dir = {Path(r.data.tags["rnn_lab.run_dir"]): r for r in children}
    assert sorted(by_dir) == _job_dirs(sweep)
    for run_dir, run in by_dir.items():
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        _check_child(client, run, run_dir)
    # The default store and its artifacts live in the sweep folder.
    assert parent.info.artifact_uri.startswith((sweep / ".rnn_lab" / "mlartifacts").as_uri())


@pytest.mark.slow
def test_a_rerun_sweep_reuses_its_parent_and_logs_nothing_twice(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *TINY, "seed=1,2", "logger=mlflow", "resume=true", f"hydra.sweep.dir={sweep}"]
    args.append("hydra.sweep.subdir=job${hydra.job.num}")  # steps=60 below: the same folders
    assert run_cli(args).returncode == 0
    client = _client(sweep / "mlflow.db")
    first = sorted(r.info.run_id for r in _runs(client))
    assert len(first) == 3
    proc = run_cli(args)  # every run is finished: nothing trains, nothing is logged again
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = _runs(client)
    assert sorted(r.info.run_id for r in runs) == first
    assert all(r.info.status == "FINISHED" for r in runs)
    # A run trained further replaces its earlier MLflow run (its summary changed).
    proc = run_cli([*args, "steps=60"])  # later wins over TINY's steps=40
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = _runs(client)
    children = [r for r in runs if r.data.tags.get("rnn_lab.role") == "run"]
    assert len(runs) == 3 and all(r.data.metrics["steps_done"] == 60 for r in children)


def test_single_run_logs_into_its_own_folder(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli([*TINY, "logger=mlflow", f"hydra.run.dir={run_dir}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = _runs(_client(run_dir / "mlflow.db"))
    assert "mlflow.parentRunId" not in run.data.tags
    summary = json.loads((run_dir / "summary.json").read_text())
    assert run.data.tags["status"] == "ok"
    assert run.data.metrics["val_loss"] == summary["val_loss"]
    assert run.data.params["steps"] == "40" and "logger.name" not in run.data.params


@pytest.mark.parametrize("multirun", [False, True], ids=["run", "sweep"])
def test_an_unwritable_tracker_leaves_every_run_ok(tmp_path, multirun):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")  # a store under a file: unwritable, even for root
    uri = f"logger.tracking_uri=sqlite:///{blocker}/mlflow.db"
    out = tmp_path / "out"
    if multirun:
        args = ["-m", *TINY, "seed=1,2", f"hydra.sweep.dir={out}"]
    else:
        args = [*TINY, f"hydra.run.dir={out}"]
    proc = run_cli([*args, "logger=mlflow", uri])
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = [json.loads(p.read_text()) for p in out.rglob("summary.json")]
    assert len(summaries) == (2 if multirun else 1)
    assert all(s["status"] == "ok" and math.isfinite(s["val_loss"]) for s in summaries)
    warned = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "MLflow:" in ln]
    assert len(warned) == 1, warned  # said once (by the launcher in a sweep), not per job
    assert not blocker.with_name("mlflow.db").exists()
    if multirun:
        assert (out / "report.md").is_file()


def test_logger_is_bookkeeping():
    # Neither the job folders nor a study's folder depend on the tracker.
    assert _study_dir_suffix(["logger=mlflow", "logger.tracking_uri=sqlite:///x.db"]) == ""
    text = Path(tracking.__file__).parents[2].joinpath("conf", "config.yaml").read_text()
    assert "logger, logger.tracking_uri, logger.experiment]" in text


def test_params_are_spelled_as_the_config():
    config = {"a": {"b": True, "c": None}, "d": [1, 2], "e": 0.01, "hydra": {"x": 1}, "f": {}}
    config["logger"] = {"name": "mlflow", "tracking_uri": "http://user:secret@host"}
    assert tracking.flat_params(config) == {
        "a.b": "true",
        "a.c": "null",
        "d": "[1, 2]",
        "e": "0.01",
        "f": "{}",
    }
    assert tracking.default_tracking_uri("/x/y") == "sqlite:////x/y/mlflow.db"
    assert (
        tracking.artifact_location("sqlite:////x/y/mlflow.db") == "file:///x/y/.rnn_lab/mlartifacts"
    )
    assert tracking.artifact_location("http://127.0.0.1:5000") is None
