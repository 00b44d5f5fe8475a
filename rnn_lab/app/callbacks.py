"""Hydra callback that builds the sweep report when a multirun ends.

Enable it in a config with

    hydra:
      callbacks:
        report:
          _target_: rnn_lab.app.callbacks.ReportCallback
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class ReportCallback(Callback):
    """Writes report.md, tables and plots into the sweep directory after the last job.

    A report that cannot be built is logged, never raised: the sweep's runs are already on
    disk and `rnn-lab report DIR` can rebuild the report later.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            sweep_dir = Path(str(config.hydra.sweep.dir))
            from rnn_lab.study.report import build_report  # imported late: matplotlib is slow

            report = build_report(sweep_dir)
            log.info("sweep report: %s", report)
            print(f"sweep report: {report}")
        except Exception:
            log.exception("could not build the sweep report (run `rnn-lab report DIR` to retry)")
