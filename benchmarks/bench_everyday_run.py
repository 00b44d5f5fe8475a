"""The everyday run: default `python -m rnn_lab.train`, its whole process against its training
time; writes docs/everyday_run.md.

    python benchmarks/bench_everyday_run.py                                     # ~3 minutes
    python benchmarks/bench_everyday_run.py --repeats 2 --out /tmp/everyday.md  # a quick look

The implementation is rnn_lab.bench.everyday_run.main.
"""

from __future__ import annotations

import sys

from rnn_lab.bench.everyday_run import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
