"""The ranking stage's progress on the console of ``train`` and ``evaluate``.

Fitting the stage (sources, the item-item grid, the ranker's trials) takes minutes on a large shop and reports
through the ``modeling`` loggers, which the console shows only from WARNING on: without this, the commands said
nothing between the last two-tower trial and the end.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

STAGE_LOGGERS = ("modeling.train", "modeling.grid_search")


class _StageEcho(logging.Handler):
    """Writes the stage's INFO lines (``ranking stage: ...``) and each grid value tried (the stage's item-item
    grid, and under ``evaluate`` the baselines' grids, each line naming its parameter) with ``write``."""

    def __init__(self, write: Callable[[str], None]) -> None:
        super().__init__(logging.INFO)
        self.write = write

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.name == "modeling.grid_search":
            self.write(f"    {message}")
        elif message.startswith("ranking stage:"):
            self.write(f"  {message}")


@contextmanager
def echo_stage_progress(write: Callable[[str], None], *, enabled: bool = True) -> Iterator[None]:
    """Within the block, the ranking stage's progress lines also go to ``write`` (a command's stdout)."""
    if not enabled:
        yield
        return
    handler = _StageEcho(write)
    loggers = [logging.getLogger(name) for name in STAGE_LOGGERS]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
