"""``python -m rnn_lab.bench``: the same as ``rnn-lab bench``."""

if __name__ == "__main__":  # not when a test imports every module of the package
    from rnn_lab.bench.speed import main_bench

    raise SystemExit(main_bench())
