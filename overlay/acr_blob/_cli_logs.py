"""``acr-blob --verbose``: request logs on stderr with every secret redacted."""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import Iterator

__all__ = ["redact", "request_logs"]

_URL_USERINFO = re.compile(r"(?P<keep>\b[a-zA-Z][a-zA-Z0-9+.\-]*://)[^/\s@'\"<>]*@")
_URL_QUERY = re.compile(
    r"(?P<keep>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s?#'\"<>]*)\?(?!<redacted>)[^\s'\"<>]*"
)
# A quoted relative URL (httpcore logs a Location header as b'/path?query').
_PATH_QUERY = re.compile(r"(?P<keep>['\"]/[^\s?'\"<>]*)\?(?!<redacted>)[^\s'\"<>]*")
_CREDENTIAL_HEADER = re.compile(
    r"(?P<keep>\b(?:proxy-)?authorization|\b(?:set-)?cookie)(?P<sep>['\"]?\s*[:,=]\s*(?-i:b)?['\"]?)"
    r"[^'\"\r\n]*",
    re.IGNORECASE,
)
_AUTH_SCHEME = re.compile(
    r"(?P<keep>\b(?:Bearer|Basic)\s+)(?![A-Za-z]+=\")[A-Za-z0-9._~+/=\-]+", re.IGNORECASE
)


def redact(text: str) -> str:
    """``text`` with URL query strings and user info, and credential headers, hidden.

    Example::

        >>> redact("GET https://storage/blob?sig=secret 200")
        'GET https://storage/blob?<redacted> 200'
    """
    text = _URL_USERINFO.sub(r"\g<keep><redacted>@", text)
    text = _URL_QUERY.sub(r"\g<keep>?<redacted>", text)
    text = _PATH_QUERY.sub(r"\g<keep>?<redacted>", text)
    text = _CREDENTIAL_HEADER.sub(r"\g<keep>\g<sep><redacted>", text)
    return _AUTH_SCHEME.sub(r"\g<keep><redacted>", text)


class _RedactingFormatter(logging.Formatter):
    """Redacts the whole formatted record: message, arguments and traceback alike.

    httpx logs every request's full URL at INFO, the signed query string of a storage redirect
    included, and httpcore logs response headers (a ``Location`` with its signature) at DEBUG.
    """

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


_LOGGERS = ("acr_blob", "httpx", "httpcore")


@contextlib.contextmanager
def request_logs(verbosity: int) -> Iterator[None]:
    """-v: acr-blob's own log and httpx's request lines; -vv: httpx and httpcore in detail."""
    if not verbosity:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_RedactingFormatter("%(name)s: %(message)s"))
    levels = {
        "acr_blob": logging.DEBUG,
        "httpx": logging.DEBUG if verbosity > 1 else logging.INFO,
        "httpcore": logging.DEBUG if verbosity > 1 else logging.WARNING,
    }
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
