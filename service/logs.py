"""Log lines of the `digitserve` logger on stderr, one line per event, no tracebacks for
clients' mistakes."""

from __future__ import annotations

import logging
import os
import sys

FORMAT = "%(asctime)s %(levelname)s digitserve[%(process)d]: %(message)s"


def configure_logging(level: str | None = None) -> None:
    logger = logging.getLogger("digitserve")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level or os.environ.get("DIGITSERVE_LOG_LEVEL", "INFO"))
