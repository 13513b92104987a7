"""``acr-blob --verbose``: request logs on stderr with every secret redacted."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

from ._log_redaction import disable_log_redaction, enable_log_redaction, log_redaction_enabled

__all__ = ["request_logs", "wait_notice", "warnings_shown"]


@contextlib.contextmanager
def request_logs(verbosity: int) -> Iterator[None]:
    """-v: acr-blob's own log and httpx's request lines; -vv: httpx and httpcore in detail.

    acr-blob's own records carry no secrets; httpx's and httpcore's are redacted by the filter
    ``import acr_blob`` attaches, turned on here even where a host program turned it off.
    """
    if not verbosity:
        yield
        return
    levels = {
        "acr_blob": logging.DEBUG,
        "httpx": logging.DEBUG if verbosity > 1 else logging.INFO,
        "httpcore": logging.DEBUG if verbosity > 1 else logging.WARNING,
    }
    redacting = log_redaction_enabled()
    enable_log_redaction()
    try:
        with _to_stderr("%(name)s: %(message)s", levels):
            yield
    finally:
        if not redacting:
            disable_log_redaction()


@contextlib.contextmanager
def wait_notice(show: bool) -> Iterator[None]:
    """One line on stderr while ``get`` waits for another download of the same blob (the
    ``acr_blob.wait`` logger's records), where no request log shows it already."""
    if not show:
        yield
        return
    with _to_stderr("acr-blob: %(message)s", {"acr_blob.wait": logging.INFO}):
        yield


@contextlib.contextmanager
def warnings_shown(show: bool) -> Iterator[None]:
    """acr-blob's warnings (a cache folder passed by, an entry that cannot be evicted) on
    stderr as ``acr-blob: <message>`` lines, where no request log shows them already."""
    if not show:
        yield
        return
    with _to_stderr("acr-blob: %(message)s", {"acr_blob": logging.WARNING}):
        yield


@contextlib.contextmanager
def _to_stderr(form: str, levels: dict[str, int]) -> Iterator[None]:
    """The loggers named in ``levels`` at those levels, to stderr only, for the block."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(form))
    saved = {}
    for name, level in levels.items():
        logger = logging.getLogger(name)
        saved[name] = (logger.level, logger.propagate)
        logger.setLevel(level)
        logger.propagate = False
        logger.addHandler(handler)
    try:
        yield
    finally:
        for name, (level, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate
