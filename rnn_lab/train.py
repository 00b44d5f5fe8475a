"""``python -m rnn_lab.train [overrides]``: the Hydra entry point (see rnn_lab.app.main)."""

from rnn_lab.app.main import main

if __name__ == "__main__":
    main()
