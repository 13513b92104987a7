"""``acr-blob --verbose``: request logs on stderr with every secret redacted."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

from ._log_redaction import disable_log_redaction, enable_log_redaction, log_redaction_enabled

__all__ = ["request_logs"]

_LOGGERS = ("acr_blob", "httpx", "httpcore")


@contextlib.contextmanager
def request_logs(verbosity: int) -> Iterator[None]:
    """-v: acr-blob's own log and httpx's request lines; -vv: httpx and httpcore in detail.

    acr-blob's own records carry no secrets; httpx's and httpcore's are redacted by the filter
    ``import acr_blob`` attaches, turned on here even where a host program turned it off.
    """
    if not verbosity:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    levels = {
        "acr_blob": logging.DEBUG,
        "httpx": logging.DEBUG if verbosity > 1 else logging.INFO,
        "httpcore": logging.DEBUG if verbosity > 1 else logging.WARNING,
    }
    redacting = log_redaction_enabled()
    enable_log_redaction()
    saved = {}
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        saved[name] = (logger.level, logger.propagate)
        logger.setLevel(levels[name])
        logger.propagate = False
        logger.addHandler(handler)
    try:
        yield
    finally:
        for name in _LOGGERS:
            logger = logging.getLogger(name)
            logger.removeHandler(handler)
            logger.setLevel(saved[name][0])
            logger.propagate = saved[name][1]
        if not redacting:
            disable_log_redaction()
