"""Signatures, tokens and passwords kept out of httpx's and httpcore's log records.

httpx logs every request at INFO with its full URL (``HTTP Request: GET https://...?sig=...``),
and httpcore logs, at DEBUG, the response headers, a redirect's signed ``Location`` among them.
Anyone who starts with ``logging.basicConfig(level=logging.INFO)`` would otherwise write working
SAS tokens and S3 signatures into their logs. Importing acr_blob attaches one filter to those
libraries' loggers; it replaces secret values with ``REDACTED`` and leaves the rest readable:

- the value of a query parameter named ``sig`` or ``se``, or whose name contains ``signature``,
  ``credential``, ``token``, ``password``, ``secret`` or ``accesskey`` (any case:
  ``X-Amz-Signature``, ``X-Amz-Credential``, ``X-Amz-Security-Token``, ``token``, ...);
- the password of a URL's user info (``https://user:REDACTED@host``);
- the value of an ``Authorization`` or ``Proxy-Authorization`` header, whose scheme is kept
  (``Bearer REDACTED``), and of a ``Cookie`` or ``Set-Cookie`` header.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

import httpx

__all__ = ["disable_log_redaction", "enable_log_redaction", "log_redaction_enabled", "redact_text"]

REDACTED = "REDACTED"

_SECRET_NAMES = frozenset({"sig", "se"})
_SECRET_PARTS = ("signature", "credential", "token", "password", "secret", "accesskey")
_PARAMETER = re.compile(r"(?P<keep>[?&](?P<name>[^=&?#\s'\"<>]+)=)(?P<value>[^&#\s'\"<>]*)")
_PASSWORD = re.compile(r"(?P<keep>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^/?#@:\s'\"<>]*:)[^/?#@\s'\"<>]+@")
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
# A header in a repr: httpcore's (b'Location', b'...') tuples, or a dict's 'name': 'value'.
_HEADER = re.compile(
    r"(?P<name>(?P<q1>['\"])(?:proxy-)?authorization(?P=q1)|(?P<q2>['\"])(?:set-)?cookie(?P=q2))"
    r"(?P<sep>,\s*b?|:\s*b?)(?P<q>['\"])(?P<value>(?:\\.|(?!(?P=q)).)*)(?P=q)",
    re.IGNORECASE,
)
_SCHEME = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9._~+\-]*)\s+\S")

# Filters on a logger only see the records created on that very logger: a record propagating to
# its parents' handlers skips the parents' filters. httpcore logs on child loggers, so the filter
# goes on each logger httpx 0.28 and httpcore 1.0 create records on, and on any other httpx.* or
# httpcore.* logger that exists when it is attached (their modules create them at import, before
# acr_blob is imported). A filter on handlers would not need this, but the handlers are the
# application's; a record factory would touch every record of the process.
_LOGGERS = (
    "httpx",
    "httpcore",
    "httpcore.connection",
    "httpcore.http11",
    "httpcore.http2",
    "httpcore.proxy",
    "httpcore.socks",
)


def _is_secret(parameter: str) -> bool:
    """Whether a query parameter (``name`` or ``name=value``) holds a secret."""
    name = unquote(parameter.partition("=")[0]).lower()
    return name in _SECRET_NAMES or any(part in name for part in _SECRET_PARTS)


def _parameter(match: re.Match[str]) -> str:
    return match["keep"] + REDACTED if _is_secret(match["name"]) else match[0]


def _credential(value: str, name: str) -> str:
    if "authorization" in name.lower():
        scheme = _SCHEME.match(value)
        if scheme is not None:
            return f"{scheme['scheme']} {REDACTED}"
    return REDACTED


def _header(match: re.Match[str]) -> str:
    value = _credential(match["value"], match["name"])
    return f"{match['name']}{match['sep']}{match['q']}{value}{match['q']}"


def redact_text(text: str) -> str:
    """``text`` with secret query values, URL passwords and credential headers redacted.

    Example::

        >>> redact_text("GET https://a.blob.core.windows.net/c/b?sv=2022-11-02&sig=abc%3D")
        'GET https://a.blob.core.windows.net/c/b?sv=2022-11-02&sig=REDACTED'
        >>> redact_text("[(b'Authorization', b'Bearer eyJ.x.y'), (b'Cookie', b'id=1')]")
        "[(b'Authorization', b'Bearer REDACTED'), (b'Cookie', b'REDACTED')]"
    """
    text = _PARAMETER.sub(_parameter, text)
    text = _PASSWORD.sub(lambda m: m["keep"] + REDACTED + "@", text)
    return _HEADER.sub(_header, text)


def _redact(value: Any) -> Any:
    """``value`` with its secrets redacted: the very same object when it holds none."""
    if isinstance(value, str):
        redacted = redact_text(value)
        return value if redacted == value else redacted
    if isinstance(value, httpx.URL):
        return _redact_url(value)
    if isinstance(value, bytes):
        # latin-1 maps every byte to one character and back.
        redacted = redact_text(value.decode("latin-1"))
        return value if redacted == value.decode("latin-1") else redacted.encode("latin-1")
    if isinstance(value, tuple | list):
        if len(value) == 2 and isinstance(value[0], str | bytes) and _is_credential(value[0]):
            items = [value[0], _redact_header_value(value[1], value[0])]
        else:
            items = [_redact(item) for item in value]
        if all(new is old for new, old in zip(items, value, strict=True)):
            return value
        return tuple(items) if isinstance(value, tuple) else items
    if isinstance(value, Mapping):
        changed = {key: _redact(item) for key, item in value.items()}
        if all(changed[key] is item for key, item in value.items()):
            return value
        return changed
    return value


def _redact_url(url: httpx.URL) -> httpx.URL:
    # Split rather than searched: the query's own delimiters, whatever a value contains.
    pairs = url.query.decode("ascii", "replace").split("&") if url.query else []
    redacted = [
        f"{pair.partition('=')[0]}={REDACTED}" if "=" in pair and _is_secret(pair) else pair
        for pair in pairs
    ]
    changes: dict[str, Any] = {}
    if redacted != pairs:
        changes["query"] = "&".join(redacted).encode("ascii")
    if url.password:
        changes.update(username=url.username, password=REDACTED)
    return url.copy_with(**changes) if changes else url


def _is_credential(name: str | bytes) -> bool:
    text = name.decode("latin-1") if isinstance(name, bytes) else name
    return text.lower() in _CREDENTIAL_HEADERS


def _redact_header_value(value: Any, name: str | bytes) -> Any:
    text_name = name.decode("latin-1") if isinstance(name, bytes) else name
    if isinstance(value, bytes):
        return _credential(value.decode("latin-1"), text_name).encode("latin-1")
    if isinstance(value, str):
        return _credential(value, text_name)
    return value


class _RedactingFilter(logging.Filter):
    """Redacts a record's arguments or, when it has none, its message, and lets it through.

    httpx passes the URL as an argument; httpcore formats its message itself and passes none.
    A message with arguments is left as it is: it is a format string, whose ``%s`` must stay.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            args = _redact(record.args)
            if args is not record.args:
                record.args = args
        elif isinstance(record.msg, str):
            msg = redact_text(record.msg)
            if msg != record.msg:
                record.msg = msg
        return True


_FILTER = _RedactingFilter()


def _loggers() -> list[logging.Logger]:
    names = set(_LOGGERS)
    names.update(
        name for name in logging.root.manager.loggerDict if name.startswith(("httpx.", "httpcore."))
    )
    return [logging.getLogger(name) for name in sorted(names)]


def enable_log_redaction() -> None:
    """Redact secrets in the log records of httpx and httpcore (done on ``import acr_blob``).

    Signature-bearing query values (``sig``, ``se``, ``X-Amz-Signature``, ``X-Amz-Credential``,
    ``X-Amz-Security-Token``, ``token``, any ``*signature*``, ...), URL passwords, and
    ``Authorization``, ``Proxy-Authorization``, ``Cookie`` and ``Set-Cookie`` header values become
    ``REDACTED``; hosts, paths and other parameters stay readable. Calling it again does nothing.

    Example::

        import logging

        import acr_blob

        logging.basicConfig(level=logging.INFO)
        acr_blob.enable_log_redaction()  # after a disable_log_redaction()
        # httpx logs: HTTP Request: GET https://s.blob.core.windows.net/b?sv=...&sig=REDACTED ...
    """
    for logger in _loggers():
        logger.addFilter(_FILTER)


def disable_log_redaction() -> None:
    """Let httpx's and httpcore's log records through unchanged, secrets and all.

    For debugging a signature locally; never where logs are kept.

    Example::

        import acr_blob

        acr_blob.disable_log_redaction()
        try:
            ...  # httpx's log lines show full signed URLs here
        finally:
            acr_blob.enable_log_redaction()
    """
    for logger in _loggers():
        logger.removeFilter(_FILTER)


def log_redaction_enabled() -> bool:
    """Whether httpx's log records are being redacted."""
    return _FILTER in logging.getLogger("httpx").filters
