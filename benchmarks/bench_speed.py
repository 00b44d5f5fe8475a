"""Speed benchmark: rnn_lab's engine against a seed-style loop and torch autograd.

    python benchmarks/bench_speed.py            # the full run (about two minutes)
    python benchmarks/bench_speed.py --quick    # a smoke run of a few seconds

The same as ``rnn-lab bench``; the implementation is rnn_lab.bench.main_bench.
"""

from __future__ import annotations

import sys

from rnn_lab.bench import main_bench

if __name__ == "__main__":
    raise SystemExit(main_bench(sys.argv[1:]))
