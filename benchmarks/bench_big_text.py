"""A big text with default settings: a 400 MB text, 2,000 steps; writes docs/big_text.md.

    python benchmarks/bench_big_text.py                              # ~3 minutes, idle machine
    python benchmarks/bench_big_text.py --mb 40 --steps 500 --out /tmp/big_text.md  # a quick look

The implementation is rnn_lab.bench.big_text.main.
"""

from __future__ import annotations

import sys

from rnn_lab.bench.big_text import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
