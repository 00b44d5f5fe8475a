"""The speed benchmark runs end to end and prints its table (no timing is asserted)."""

from __future__ import annotations

from rnn_lab.bench import main_bench


def test_quick_bench_prints_every_section(capsys, tmp_path):
    out_json = tmp_path / "bench.json"
    code = main_bench(
        ["--quick", "--steps", "3", "--large-steps", "1", "--rounds", "1",
         "--trainer-steps", "30", "--json", str(out_json)]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    for expected in (
        "seed configuration",
        "rnn_lab engine",
        "seed-style loop",
        "torch autograd, 1 thread",
        "rnn_lab / seed-style loop =",
        "rnn_lab / torch (1 thread) =",
        "large configuration",
        "record=true (default)",
        "record=false",
        "recording overhead",
    ):
        assert expected in out, f"missing {expected!r} in:\n{out}"
    assert out_json.exists()
