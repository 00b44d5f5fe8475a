"""Speed benchmark: rnn_lab against a walkthrough-style loop, a min-char-rnn-style loop and torch.

    python benchmarks/bench_speed.py                     # the full run (~4 minutes, idle machine)
    python benchmarks/bench_speed.py --quick             # a smoke run of a few seconds
    python benchmarks/bench_speed.py --profile-trainer   # where the trainer's time goes (cProfile)

The same as ``rnn-lab bench``; the implementation is rnn_lab.bench.speed.main_bench.
"""

from __future__ import annotations

import sys

from rnn_lab.bench.speed import main_bench

if __name__ == "__main__":
    raise SystemExit(main_bench(sys.argv[1:]))
