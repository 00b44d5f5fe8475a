"""A real text, as the walkthrough does it: Debian's fortunes (apt-get install fortunes).

    python benchmarks/real_text.py text fortunes.txt   # the text file only
    python benchmarks/real_text.py                     # train, sample, write docs/real_text.md

The implementation is rnn_lab.bench.real_text.main.
"""

from __future__ import annotations

import sys

from rnn_lab.bench.real_text import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
