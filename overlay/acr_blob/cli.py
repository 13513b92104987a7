"""The ``acr-blob`` command: verified downloads, HEAD and existence checks from the shell.

A blob is named by one image-style reference (``myregistry.azurecr.io/prod/bash@sha256:...``,
see :func:`~acr_blob.references.parse_blob_reference`) or by three arguments,
``ENDPOINT REPOSITORY DIGEST``.

Exit codes: 0 verified success (``exists``: the blob is there), 1 any other failure, 2 bad
arguments or input, 3 not found, 4 authentication refused, 5 integrity failure (digest or size
mismatch), 130 interrupted. On any failure nothing is left at the ``-o`` path.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TextIO

import attrs
import httpx

from ._config import DEFAULT_TIMEOUT, MAX_CONCURRENCY, Credential, __version__, normalize_endpoint
from ._protocol import is_loopback
from ._sync import BlobClient
from .credentials import BasicCredential
from .docker_config import docker_config_credential
from .errors import (
    AuthenticationError,
    BlobError,
    BlobNotFoundError,
    BlobSizeError,
    DigestMismatchError,
)
from .models import BlobProperties
from .references import (
    BlobReference,
    parse_blob_reference,
    parse_digest,
    validate_repository,
)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_AUTHENTICATION = 4
EXIT_INTEGRITY = 5
EXIT_INTERRUPTED = 130

USERNAME_VARIABLE = "ACR_BLOB_USERNAME"
PASSWORD_VARIABLE = "ACR_BLOB_PASSWORD"

_REFERENCE_HELP = (
    "the blob, as REGISTRY/REPOSITORY@DIGEST (myregistry.azurecr.io/prod/bash@sha256:..., "
    "with http:// in front for a plain-http registry), or the registry when REPOSITORY and "
    "DIGEST follow"
)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _concurrency(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= MAX_CONCURRENCY:
        raise argparse.ArgumentTypeError(f"must be from 1 to {MAX_CONCURRENCY}, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="acr-blob",
        description="Download verified blobs from Azure Container Registry or any OCI registry.",
        epilog=f"Credentials: --username with --password-stdin, or ${USERNAME_VARIABLE} and "
        f"${PASSWORD_VARIABLE}, or else the Docker configuration ($DOCKER_CONFIG/config.json or "
        "~/.docker/config.json, with its credential helpers). Plain http:// only to loopback, "
        "unless --insecure. Exit codes: 0 ok, 1 failure, 2 bad input, 3 not found, "
        "4 authentication, 5 digest or size mismatch, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"acr-blob {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("reference", metavar="REF|ENDPOINT", help=_REFERENCE_HELP)
    common.add_argument(
        "repository", nargs="?", metavar="REPOSITORY", help="repository, e.g. library/ubuntu"
    )
    common.add_argument(
        "digest",
        nargs="?",
        metavar="DIGEST",
        help="blob digest, sha256:<64 hex> or sha512:<128 hex>",
    )
    common.add_argument("--username", help=f"user name (default ${USERNAME_VARIABLE})")
    common.add_argument(
        "--password-stdin",
        action="store_true",
        help=f"read the password from standard input (default ${PASSWORD_VARIABLE})",
    )
    common.add_argument(
        "--anonymous", action="store_true", help="send no credentials, not even Docker's"
    )
    common.add_argument(
        "--insecure",
        action="store_true",
        help="allow plain http (and credentials over it) to hosts other than loopback",
    )
    common.add_argument(
        "--ca-cert", metavar="FILE", help="CA bundle (PEM) that signs the registry's certificate"
    )
    common.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="seconds a connection may stay silent (default: 10 to connect, 60 to read)",
    )
    common.add_argument("--json", action="store_true", help="print the blob's properties as JSON")
    common.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar, nothing printed on success"
    )
    common.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log requests on stderr, secrets redacted, instead of the progress bar "
        "(-vv: connection-level detail too)",
    )

    get = commands.add_parser("get", parents=[common], help="download and verify a blob")
    get.add_argument("-o", "--output", required=True, help="file to write, or - for stdout")
    get.add_argument(
        "--max-concurrency",
        type=_concurrency,
        metavar="N",
        help="download over up to N connections (parallel ranges; with -o FILE)",
    )
    commands.add_parser("head", parents=[common], help="show a blob's size, type and ETag")
    commands.add_parser(
        "exists", parents=[common], help="exit 0 if the blob is there, 3 if it is not"
    )
    return parser


class _UsageError(Exception):
    pass


def _target(args: argparse.Namespace) -> BlobReference:
    """The blob the arguments name, checked, and refused over plain http beyond loopback."""
    if args.repository is None:
        target = parse_blob_reference(args.reference)
    elif args.digest is None:
        raise _UsageError(
            "give one blob reference (REGISTRY/REPOSITORY@DIGEST), or ENDPOINT REPOSITORY DIGEST"
        )
    else:
        target = BlobReference(
            normalize_endpoint(args.reference),
            validate_repository(args.repository),
            str(parse_digest(args.digest)),
        )
    host = httpx.URL(target.endpoint).host
    if target.endpoint.startswith("http://") and not is_loopback(host) and not args.insecure:
        raise _UsageError(
            f"refusing plain http to {target.endpoint}: anyone on the way could read or alter "
            "the traffic; use https, or --insecure if you must"
        )
    return target


def _credential(args: argparse.Namespace, endpoint: str) -> Credential:
    """Flags, then environment variables, then the Docker configuration."""
    if args.anonymous:
        return None
    username = args.username or os.environ.get(USERNAME_VARIABLE)
    if args.password_stdin:
        password: str | None = sys.stdin.readline().rstrip("\r\n")
    else:
        password = os.environ.get(PASSWORD_VARIABLE)
    if username is None and password is None:
        return docker_config_credential(endpoint)
    if not username or password is None:
        raise _UsageError(
            "give both a user name and a password (--username with --password-stdin, or "
            f"${USERNAME_VARIABLE} and ${PASSWORD_VARIABLE})"
        )
    return BasicCredential(username, password)


# ---------------------------------------------------------------------------------------------
# Progress bar


def _size(count: float) -> str:
    """``1023 B``, ``1.5 KiB``, ``12.3 MiB``, ``1.2 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def _duration(seconds: float) -> str:
    """``0:07``, ``12:34``, ``1:02:03``."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


class ProgressBar:
    """A one-line progress display on a terminal: percentage, bar, bytes, rate and ETA.

    Use it as the ``progress`` callback of a download; it redraws its line with ``\\r`` at
    most every ``interval`` seconds. :meth:`finish` draws the final line (size, average rate,
    time taken) and ends it; :meth:`abort` ends the line where it is, so that an error message
    starts on a line of its own.
    """

    WINDOW = 3.0

    def __init__(
        self,
        stream: TextIO,
        *,
        interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
        columns: Callable[[], int] | None = None,
    ) -> None:
        self._stream = stream
        self._interval = interval
        self._clock = clock
        self._columns = columns or self._terminal_columns
        self._lock = threading.Lock()
        self._started = clock()
        self._first: int | None = None
        self._done = 0
        self._total: int | None = None
        self._samples: collections.deque[tuple[float, int]] = collections.deque()
        self._next_draw = 0.0
        self._shown = 0  # characters of the line now on screen; 0: none
        self._ended = False

    def __call__(self, done: int, total: int | None) -> None:
        with self._lock:
            if self._ended:
                return
            now = self._clock()
            if self._first is None:
                # Bytes a resumed download already had do not count towards the rate.
                self._first, self._started = done, now
            self._done, self._total = done, total
            self._samples.append((now, done))
            while len(self._samples) > 2 and now - self._samples[0][0] > self.WINDOW:
                self._samples.popleft()
            if now >= self._next_draw or done == total:
                self._next_draw = now + self._interval
                self._draw(self._line(now))

    def finish(self) -> None:
        """The final line: the size, the average rate and the time taken."""
        with self._lock:
            if self._ended or self._first is None:
                return
            elapsed = self._clock() - self._started
            received = self._done - self._first
            parts = [f"{_size(self._done)}"]
            if elapsed > 0 and received:
                parts.append(f"{_size(received / elapsed)}/s")
            parts.append(f"in {_duration(elapsed)}")
            self._draw(self._with_bar(100, 1.0, "  ".join(parts)))
            self._end()

    def abort(self) -> None:
        """End the line as it is (the download failed or was interrupted)."""
        with self._lock:
            if not self._ended and self._shown:
                self._end()

    def _end(self) -> None:
        self._ended = True
        self._stream.write("\n")
        self._stream.flush()

    def _rate(self, now: float) -> float | None:
        if len(self._samples) < 2:
            return None
        (then, before), (_, latest) = self._samples[0], self._samples[-1]
        return (latest - before) / (now - then) if now - then >= 0.2 else None

    def _line(self, now: float) -> str:
        rate = self._rate(now)
        speed = f"{_size(rate)}/s" if rate is not None else "--/s"
        total = self._total
        if total is None or total <= 0:
            return f"{_size(self._done)}  {speed}"
        fraction = min(self._done / total, 1.0)
        eta = _duration((total - self._done) / rate) if rate else "--:--"
        text = f"{_size(self._done)} / {_size(total)}  {speed}  ETA {eta}"
        return self._with_bar(int(fraction * 100), fraction, text)

    def _with_bar(self, percent: int, fraction: float, text: str) -> str:
        head = f"{percent:3d}% "
        room = self._columns() - 1 - len(head) - len(text) - 3
        if room < 10:
            return f"{head}{text}"
        width = min(room, 40)
        filled = int(fraction * width)
        bar = "=" * filled + (">" if filled < width else "") + " " * (width - filled - 1)
        return f"{head}[{bar}] {text}"

    def _draw(self, line: str) -> None:
        line = line[: max(self._columns() - 1, 1)]
        self._stream.write("\r" + line.ljust(self._shown))
        self._stream.flush()
        self._shown = len(line)

    def _terminal_columns(self) -> int:
        try:
            return os.get_terminal_size(self._stream.fileno()).columns or 80
        except (OSError, ValueError, AttributeError):
            return 80


# ---------------------------------------------------------------------------------------------
# Request logs for --verbose


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
def _request_logs(verbosity: int) -> Iterator[None]:
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


# ---------------------------------------------------------------------------------------------
# The commands


def _print_properties(properties: BlobProperties, args: argparse.Namespace) -> None:
    if args.json:
        print(json.dumps(attrs.asdict(properties), indent=2))
    elif not args.quiet:
        for name, value in attrs.asdict(properties).items():
            print(f"{name}: {value}")


def _run(args: argparse.Namespace, bar: ProgressBar | None) -> int:
    target = _target(args)
    if args.command == "get" and args.output == "-" and args.json:
        raise _UsageError("--json needs -o FILE: with -o - stdout carries the blob")
    verify: bool | str = args.ca_cert or True
    with BlobClient(
        target.endpoint,
        _credential(args, target.endpoint),
        timeout=DEFAULT_TIMEOUT if args.timeout is None else args.timeout,
        verify=verify,
        allow_insecure=args.insecure,
    ) as client:
        if args.command == "head":
            _print_properties(client.get_blob_properties(target.repository, target.digest), args)
            return EXIT_OK
        if args.command == "exists":
            found = client.blob_exists(target.repository, target.digest)
            if args.json:
                print(json.dumps({"exists": found, "digest": target.digest}))
            return EXIT_OK if found else EXIT_NOT_FOUND
        if args.output == "-":
            with client.download_blob(target.repository, target.digest, progress=bar) as download:
                size = download.readinto(sys.stdout.buffer)
                sys.stdout.buffer.flush()
            if bar is not None:
                bar.finish()
            if not args.quiet:
                print(f"verified {download.digest} ({size} bytes)", file=sys.stderr)
            return EXIT_OK
        properties = client.download_blob_to_file(
            target.repository,
            target.digest,
            args.output,
            progress=bar,
            max_concurrency=args.max_concurrency,
        )
        if bar is not None:
            bar.finish()
        if args.json:
            print(json.dumps(attrs.asdict(properties), indent=2))
        elif not args.quiet:
            print(
                f"verified {properties.digest} ({properties.size} bytes) -> {args.output}",
                file=sys.stderr,
            )
        return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``acr-blob`` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    # The bar only where someone watches, and not mixed into request logs.
    show_bar = args.command == "get" and not (args.quiet or args.verbose) and sys.stderr.isatty()
    bar = ProgressBar(sys.stderr) if show_bar else None
    try:
        with _request_logs(args.verbose):
            return _run(args, bar)
    except KeyboardInterrupt:
        _end_line(bar)
        print("acr-blob: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (_UsageError, ValueError) as error:
        _end_line(bar)
        print(f"acr-blob: {error}", file=sys.stderr)
        return EXIT_USAGE
    except BlobNotFoundError as error:
        _end_line(bar)
        print(f"acr-blob: not found: {error}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except AuthenticationError as error:
        _end_line(bar)
        print(f"acr-blob: authentication failed: {error}", file=sys.stderr)
        return EXIT_AUTHENTICATION
    except (DigestMismatchError, BlobSizeError) as error:
        _end_line(bar)
        print(f"acr-blob: integrity check failed: {error}", file=sys.stderr)
        return EXIT_INTEGRITY
    except BrokenPipeError:
        # The reader of `-o -` went away (`| head -c 100`): stop quietly, and keep Python
        # from failing again when it flushes stdout at exit.
        _end_line(bar)
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print("acr-blob: output closed before the end of the blob", file=sys.stderr)
        return EXIT_FAILURE
    except (BlobError, OSError) as error:
        _end_line(bar)
        print(f"acr-blob: {error}", file=sys.stderr)
        return EXIT_FAILURE


def _end_line(bar: ProgressBar | None) -> None:
    if bar is not None:
        bar.abort()
