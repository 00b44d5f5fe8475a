"""``python -m rnn_lab.train [overrides]``: the Hydra entry point (see rnn_lab.app.main)."""

from rnn_lab.app.main import main_then_exit

if __name__ == "__main__":
    main_then_exit()
