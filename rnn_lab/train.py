"""``python -m rnn_lab.train [overrides]``: the Hydra entry point (see rnn_lab.app.main)."""

import sys

if __name__ == "__main__":
    from rnn_lab.run import init_drawer

    init_drawer.start(sys.argv[1:])  # before Hydra's import: torch loads meanwhile (if needed)

from rnn_lab.app.main import main_then_exit  # noqa: E402

if __name__ == "__main__":
    main_then_exit()
