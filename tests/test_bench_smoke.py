"""The speed benchmark runs end to end and prints its table (no timing is asserted)."""

from __future__ import annotations

import json
import math
import sys
import types

import pytest

from rnn_lab.bench import memory_reuse as bench_memory
from rnn_lab.bench.contenders import (
    BenchConfig,
    GatedCoreLoop,
    MinCharRnnLoop,
    RnnLabLoop,
    TorchGatedLoop,
    gated_contender,
    min_char_config,
)
from rnn_lab.bench.speed import TARGET_TRAINER_OVERHEAD, main_bench
from rnn_lab.core.data import generate_elman_corpus


def test_quick_bench_prints_every_section(capsys, tmp_path):
    out_json, page = tmp_path / "bench.json", tmp_path / "docs" / "benchmarks.md"
    argv = ["--quick", "--steps", "3", "--large-steps", "1", "--rounds", "1",
            "--trainer-steps", "30", "--min-char-trainer-steps", "30", "--json", str(out_json),
            "--page", str(page)]  # fmt: skip
    code = main_bench(argv)
    assert code == 0
    out = capsys.readouterr().out
    # the page: its provenance, then the report exactly as printed
    text = page.read_text()
    assert text.startswith("# Speed benchmark\n\nWritten by `rnn-lab bench --quick --steps 3 ")
    assert "- commit: " in text and "logical CPUs" in text
    report = out.split(f"  wrote {page}")[0]
    assert f"```text\n{report.rstrip()}\n```\n" in text
    # the header's memory line is printed once the setting is applied: the state it leaves
    assert f"  memory: {bench_memory.describe()}\n" in out
    for expected in (
        "walkthrough configuration",
        "rnn_lab engine",
        "walkthrough-style loop",
        "torch autograd, 1 thread",
        "rnn_lab / walkthrough-style loop =",
        "rnn_lab / torch (1 thread) =",
        "large configuration",
        "record=true (default)",
        "record=false",
        "recording overhead",
        "gated cells, walkthrough configuration",
        "gated cells, large configuration",
        "rnn_lab GRU / torch GRU =",
        "rnn_lab LSTM / torch LSTM =",
        "torch LSTM, 1 thread",
        "min-char-rnn comparison",
        "min-char-rnn-style loop",
        "rnn_lab trainer / min-char loop =",
        "trainer overhead per step, inside its runs =",
        "trainer overhead per step, whole runs =",
    ):
        assert expected in out, f"missing {expected!r} in:\n{out}"
    results = json.loads(out_json.read_text())
    assert {"seed", "large", "trainer", "gated", "min_char"} <= set(results)
    for config in ("seed", "large"):
        gated = results["gated"][config]
        assert set(gated["ratios"]) == {"gru", "lstm"}
        assert len(gated["timings"]) == 4
    assert [r["hidden_size"] for r in results["min_char"]] == [64, 100]
    for r in results["min_char"]:
        assert r["trainer_vs_min_char"] > 0 and math.isfinite(r["trainer_overhead"])
        # the trainer's loop holds its engine part and more: its overhead is positive (and
        # finite: over 30 steps the loop's fixed costs weigh several engine steps; measured
        # 3.8 to 11.8 at load 5-10 on 2 cores, so the old bound of 10 failed now and then)
        assert all(0 < x < 100 for x in r["trainer_overhead_in_run_all"]), r
        # whole runs of each contender, alternating with the trainer's
        assert set(r["long_runs"]) == {"rnn_lab engine", "min-char-rnn-style loop"}
    # The overhead target (H=64 only) is judged by the in-run measure, the printed median of
    # the runs; the whole-runs figure is printed beside it without a verdict.
    sections = out.split("min-char-rnn comparison")[1:]
    for r, section in zip(results["min_char"], sections, strict=True):
        lines = section.splitlines()
        in_run = next(x for x in lines if "trainer overhead per step, inside its runs =" in x)
        whole = next(x for x in lines if "trainer overhead per step, whole runs =" in x)
        assert f"= {100 * r['trainer_overhead_in_run']:+.1f}% of the engine step" in in_run
        assert f"= {100 * r['trainer_overhead']:+.1f}% of the engine step" in whole
        assert "meets" not in whole and "MISSES" not in whole and "target" not in whole
        if r["hidden_size"] == 64:
            verdict = (
                "meets" if r["trainer_overhead_in_run"] <= TARGET_TRAINER_OVERHEAD else "MISSES"
            )
            assert f"judged by this in-run measure: {verdict})" in in_run, in_run
        else:
            assert "target" not in in_run
    # the in-run clock's wrappers are gone once the benchmark is done
    from rnn_lab.run import step as step_module
    from rnn_lab.run import trainer as trainer_module

    assert trainer_module.train_step.__module__ == "rnn_lab.run.step"
    assert step_module.measure_step.__module__ == "rnn_lab.run.step"


def test_a_full_run_writes_docs_benchmarks_md_and_a_quick_one_does_not(
    monkeypatch, tmp_path, capsys
):
    from rnn_lab.bench import speed

    monkeypatch.setattr(speed, "DEFAULT_PAGE", tmp_path / "benchmarks.md")
    few = ["--steps", "2", "--large-steps", "1", "--rounds", "1", "--no-gated", "--no-min-char",
           "--no-trainer"]  # fmt: skip
    assert main_bench(["--quick", *few]) == 0
    assert not speed.DEFAULT_PAGE.exists()
    assert main_bench([*few, "--no-page"]) == 0
    assert not speed.DEFAULT_PAGE.exists()
    assert main_bench(few) == 0
    assert "walkthrough configuration" in speed.DEFAULT_PAGE.read_text()
    assert capsys.readouterr().out.rstrip().endswith(f"wrote {speed.DEFAULT_PAGE}")


def test_min_char_loop_starts_from_the_rnn_lab_rows_weights_and_loss():
    """The min-char-rnn-style contender computes the same first loss as rnn_lab's step
    (same text, same weights) and keeps learning: it is a fair baseline, not a broken one."""
    text = generate_elman_corpus(num_sentences=60)
    cfg = min_char_config(16)
    ours = RnnLabLoop(cfg, text)
    theirs = MinCharRnnLoop(cfg, text, ours.state.params)
    ours.step()
    theirs.step()
    assert theirs.loss == pytest.approx(ours.loss, rel=1e-12)
    for _ in range(200):
        theirs.step()
    assert theirs.loss < ours.loss


def test_stacked_flag_hands_the_other_arguments_to_the_stacked_benchmark(monkeypatch):
    calls = []
    module = types.ModuleType("rnn_lab.bench.stacked_speed")
    module.main = lambda argv: calls.append(argv) or 0
    monkeypatch.setitem(sys.modules, "rnn_lab.bench.stacked_speed", module)
    assert main_bench(["--quick", "--stacked", "--json", "x.json"]) == 0
    assert calls == [["--quick", "--json", "x.json"]]


def test_profile_trainer_prints_where_the_time_goes(capsys):
    assert main_bench(["--profile-trainer", "30"]) == 0
    out = capsys.readouterr().out
    assert "trainer profile: H=64, 30 steps" in out
    assert "train_step" in out


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_gated_contenders_train_the_same_network_as_torch(cell):
    """rnn_lab's gated step (core calls) and the torch contender start from the same weights:
    the same first loss; the contender the benchmark picks runs and learns."""
    text = generate_elman_corpus(num_sentences=60)
    cfg = BenchConfig("t", hidden_size=8, seq_len=5, batch_size=2, dtype="float64", lr=0.1)
    ours, theirs = GatedCoreLoop(cell, cfg, text), TorchGatedLoop(cell, cfg, text)
    ours.step()
    with theirs.thread_context():
        theirs.step()
    assert ours.loss == pytest.approx(theirs.loss, rel=1e-10)
    picked = gated_contender(cell, cfg, text)
    assert picked.path in ("train_step", "core calls")
    first = picked.loss
    for _ in range(50):
        picked.step()
    assert math.isfinite(picked.loss) and picked.loss < first


def test_everyday_run_bench_writes_its_page(tmp_path, capsys):
    """A quick look (2 short runs): both modes measured, the page has its provenance, the
    table (ratio, spread, load) and the verdict on the 1.4x target."""
    from rnn_lab.bench.everyday_run import MODES, main

    out = tmp_path / "everyday.md"
    assert main(["--repeats", "1", "--steps", "100", "--out", str(out)]) == 0
    page = out.read_text()
    assert page.startswith("# The everyday run") and "steps=100 (not the default" in page
    assert "Written by `python benchmarks/bench_everyday_run.py --repeats 1" in page
    assert "- commit: " in page and "- machine: " in page
    for mode in MODES:
        row = next(line for line in page.splitlines() if line.startswith(f"| {mode} |"))
        ratio = float(row.split("|")[2].split()[0])
        assert ratio > 1.0  # the whole process outlasts its training loop
    assert "Target (issue 21)" in page and "1-minute load" in page
    assert "analysis_workers=0" in capsys.readouterr().out
