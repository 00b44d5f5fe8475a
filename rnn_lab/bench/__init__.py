"""The benchmarks, beside the library: nothing in rnn_lab's core, run, inspect, study or app
imports this package (tests/test_layout.py checks it); ``rnn-lab bench`` reaches it by name.

  speed          ``rnn-lab bench``: the report, its command line and docs/benchmarks.md
  contenders     the training loops it times (rnn_lab's step, a walkthrough-style loop, a
                 min-char-rnn-style loop, torch autograd)
  timing         interleaved best-of rounds, whole trainer runs, the trainer's in-run clock
  stacked_speed  ``rnn-lab bench --stacked``: the stacked engine against single runs
  memory_reuse   glibc malloc thresholds for the benchmarks' bare loops
"""
