"""The ``acr-blob`` command: verified downloads, HEAD and existence checks from the shell.

A blob is named by one image-style reference (``myregistry.azurecr.io/prod/bash@sha256:...``,
see :func:`~acr_blob.references.parse_blob_reference`) or by three arguments,
``ENDPOINT REPOSITORY DIGEST``.

``acr-blob manifest``, ``resolve`` and ``pull`` name an image or artifact by tag or digest
(:mod:`._cli_images`).

``acr-blob cache`` lists, measures, prunes and verifies a cache folder (``--cache-dir``, or
``$ACR_BLOB_CACHE_DIR``) that ``get --cache-dir`` fills; it takes no reference.

Exit codes: 0 verified success (``exists``: the blob is there), 1 any other failure (``cache
verify``: bad entries were found), 2 bad arguments or input, 3 not found, 4 authentication
refused, 5 integrity failure (digest or size mismatch), 130 interrupted. On any failure nothing
is left at the ``-o`` path.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._cli_images import (
    IMAGE_COMMANDS,
    add_image_commands,
    refuse_plain_http,
    run_image_command,
)
from ._version import __version__
from .errors import (
    AuthenticationError,
    BlobError,
    BlobNotFoundError,
    BlobSizeError,
    DigestMismatchError,
)

# What the commands need (the client, its settings, attrs, the progress bar and logs) is
# imported when a command runs, so that `acr-blob --help` costs little more than httpx.
if TYPE_CHECKING:
    from ._adaptive import Concurrency
    from ._cli_progress import ProgressBar
    from ._config import Credential
    from .cache import BlobCache
    from .models import BlobProperties
    from .references import BlobReference

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_AUTHENTICATION = 4
EXIT_INTEGRITY = 5
EXIT_INTERRUPTED = 130

USERNAME_VARIABLE = "ACR_BLOB_USERNAME"
PASSWORD_VARIABLE = "ACR_BLOB_PASSWORD"
# acr_blob.cache's CACHE_DIR_ENV and OFFLINE_ENV, named here so that --help imports no cache.
CACHE_DIR_VARIABLE = "ACR_BLOB_CACHE_DIR"
OFFLINE_VARIABLE = "ACR_BLOB_OFFLINE"

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


def _blob_count(text: str) -> int:
    """``--max-concurrency`` of ``pull``: blobs side by side."""
    from ._config import MAX_CONCURRENCY, check_concurrency

    try:
        return int(check_concurrency(int(text), auto=False))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a whole number from 1 to {MAX_CONCURRENCY}, got {text!r}"
        ) from None


def _connections(text: str) -> Concurrency:
    """``--max-concurrency`` of ``get``: connections for one blob, or ``auto``."""
    from ._config import MAX_CONCURRENCY, check_concurrency

    try:
        return check_concurrency(text.strip().lower() if text.strip().isalpha() else int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be auto or a whole number from 1 to {MAX_CONCURRENCY}, got {text!r}"
        ) from None


def _byte_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number of bytes, got {text!r}")
    return value


def _folder(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("must name a folder, got an empty string")
    return text


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

    # The blob a command is about; `cache` names none.
    blob = argparse.ArgumentParser(add_help=False)
    blob.add_argument("reference", metavar="REF|ENDPOINT", help=_REFERENCE_HELP)
    blob.add_argument(
        "repository", nargs="?", metavar="REPOSITORY", help="repository, e.g. library/ubuntu"
    )
    blob.add_argument(
        "digest",
        nargs="?",
        metavar="DIGEST",
        help="blob digest, sha256:<64 hex> or sha512:<128 hex>",
    )
    # The options of every command that makes a client.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--username", help=f"user name (default ${USERNAME_VARIABLE})")
    common.add_argument(
        "--password-stdin",
        action="store_true",
        help=f"read the password from standard input (default ${PASSWORD_VARIABLE})",
    )
    common.add_argument(
        "--anonymous",
        action="store_true",
        help="send the registry no credentials, not even Docker's",
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
    common.add_argument(
        "--mirror",
        action="append",
        metavar="URL",
        help="ask this registry mirror for blobs before the registry (repeatable, tried in "
        "order; the registry's credentials never go to it)",
    )
    common.add_argument(
        "--hosts-dir",
        type=_folder,
        metavar="DIR",
        help="containerd's hosts folder: the mirrors of DIR/<registry>/hosts.toml, after "
        "those of --mirror (e.g. /etc/containerd/certs.d)",
    )
    common.add_argument(
        "--no-fallback",
        action="store_true",
        help="ask the mirrors only, never the registry itself",
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

    # The options of the commands that download: the cache, and resumption.
    cached = argparse.ArgumentParser(add_help=False)
    cached.add_argument(
        "--no-resume",
        action="store_true",
        help="neither continue a partial file left by an earlier try nor keep one on failure",
    )
    cached.add_argument(
        "--cache-dir",
        type=_folder,
        metavar="DIR",
        help="keep the verified blob in this cache folder, shared with other processes, and "
        f"make the output from it next time (default ${CACHE_DIR_VARIABLE})",
    )
    cached.add_argument(
        "--max-cache-bytes",
        type=_byte_count,
        metavar="N",
        help="after a download into the cache, evict the least recently used blobs until the "
        "cache holds at most N bytes",
    )
    cached.add_argument(
        "--offline",
        action=argparse.BooleanOptionalAction,
        help="send nothing: take the blob from the cache or fail (default: on when "
        f"${OFFLINE_VARIABLE} is 1, true, yes or on)",
    )
    get = commands.add_parser(
        "get", parents=[blob, common, cached], help="download and verify a blob"
    )
    get.add_argument("-o", "--output", required=True, help="file to write, or - for stdout")
    get.add_argument(
        "--max-concurrency",
        type=_connections,
        metavar="N|auto",
        help="download over up to N connections (parallel ranges; to stdout, at most 32 MiB "
        "of parts wait in memory); auto (the default) starts with one and adds connections "
        "while they pay",
    )
    commands.add_parser("head", parents=[blob, common], help="show a blob's size, type and ETag")
    commands.add_parser(
        "exists", parents=[blob, common], help="exit 0 if the blob is there, 3 if it is not"
    )
    add_image_commands(commands, common, cached, _blob_count)

    cache = commands.add_parser(
        "cache",
        help="list, measure, prune or verify a blob cache folder",
        description="The cache folder that get --cache-dir fills (an OCI image layout).",
    )
    cache.set_defaults(quiet=False, verbose=0)
    folder = argparse.ArgumentParser(add_help=False)
    folder.add_argument(
        "--cache-dir",
        type=_folder,
        metavar="DIR",
        help=f"the cache folder (default ${CACHE_DIR_VARIABLE})",
    )
    actions = cache.add_subparsers(dest="cache_command", metavar="COMMAND", required=True)
    ls = actions.add_parser(
        "ls",
        parents=[folder],
        help="one line per blob, least recently used first: digest, size in bytes, last used",
    )
    ls.add_argument("--json", action="store_true", help="print a JSON list instead")
    du = actions.add_parser(
        "du", parents=[folder], help="the bytes all blobs take together, and how many there are"
    )
    du.add_argument("--json", action="store_true", help="print a JSON object instead")
    prune = actions.add_parser(
        "prune",
        parents=[folder],
        help="remove the least recently used blobs until the rest fit in --max-bytes; print "
        "each one removed (blobs being read stay)",
    )
    prune.add_argument(
        "--max-bytes", type=_byte_count, required=True, metavar="N", help="bytes to keep at most"
    )
    actions.add_parser(
        "verify",
        parents=[folder],
        help="hash every blob again, remove those whose content is not their digest and print "
        "them; exit 1 if there were any",
    )
    return parser


class _UsageError(Exception):
    pass


def _target(args: argparse.Namespace) -> BlobReference:
    """The blob the arguments name, checked, and refused over plain http beyond loopback."""
    from ._config import normalize_endpoint
    from .references import BlobReference, parse_blob_reference, parse_digest, validate_repository

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
    refuse_plain_http(target.endpoint, args.insecure)
    return target


def _credential(args: argparse.Namespace, endpoint: str) -> Credential:
    """Flags, then environment variables, then the Docker configuration."""
    from .credentials import BasicCredential
    from .docker_config import docker_config_credential

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
# The commands


def _print_properties(properties: BlobProperties, args: argparse.Namespace) -> None:
    import attrs

    if args.json:
        print(json.dumps(attrs.asdict(properties), indent=2))
    elif not args.quiet:
        for name, value in attrs.asdict(properties).items():
            print(f"{name}: {value}")


def _run(args: argparse.Namespace, bar: ProgressBar | None) -> int:
    if args.command == "cache":
        return _run_cache(args)
    if args.command in IMAGE_COMMANDS:
        return run_image_command(args, bar, lambda endpoint: _client_options(args, endpoint))

    import attrs

    from ._cli_logs import wait_notice
    from ._sync import BlobClient

    target = _target(args)
    if args.command == "get" and args.output == "-" and args.json:
        raise _UsageError("--json needs -o FILE: with -o - stdout carries the blob")
    with BlobClient(target.endpoint, **_client_options(args, target.endpoint)) as client:
        if args.command == "head":
            _print_properties(client.get_blob_properties(target.repository, target.digest), args)
            return EXIT_OK
        if args.command == "exists":
            found = client.blob_exists(target.repository, target.digest)
            if args.json:
                print(json.dumps({"exists": found, "digest": target.digest}))
            return EXIT_OK if found else EXIT_NOT_FOUND
        if args.output == "-":
            with client.download_blob(
                target.repository,
                target.digest,
                progress=bar,
                max_concurrency=args.max_concurrency,
            ) as download:
                size = download.readinto(sys.stdout.buffer)
                sys.stdout.buffer.flush()
            if bar is not None:
                bar.finish()
            if not args.quiet:
                print(f"verified {download.digest} ({size} bytes)", file=sys.stderr)
            return EXIT_OK
        with wait_notice(not (args.quiet or args.verbose)):
            properties = client.download_blob_to_file(
                target.repository,
                target.digest,
                args.output,
                progress=bar,
                max_concurrency=args.max_concurrency,
                resume=not args.no_resume,
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


def _client_options(args: argparse.Namespace, endpoint: str) -> dict[str, Any]:
    """The client's options from the command's arguments (and the environment)."""
    from ._config import DEFAULT_TIMEOUT

    return {
        "credential": _credential(args, endpoint),
        "timeout": DEFAULT_TIMEOUT if args.timeout is None else args.timeout,
        "verify": args.ca_cert or True,
        "allow_insecure": args.insecure,
        "mirrors": args.mirror,
        "hosts_dir": args.hosts_dir,
        "fallback_to_origin": False if args.no_fallback else None,
        **(_cache_options(args) if "cache_dir" in args else {}),
    }


def _cache_options(args: argparse.Namespace) -> dict[str, Any]:
    """``get``'s client options for the cache, checked (the client reads the environment for
    what is not given; so does this check)."""
    from .cache import env_cache_dir, env_offline

    cache_dir = args.cache_dir or env_cache_dir()
    offline = env_offline() if args.offline is None else args.offline
    if cache_dir is None:
        needs = None
        if args.max_cache_bytes is not None:
            needs = "--max-cache-bytes"
        elif offline:
            needs = "--offline" if args.offline else f"${OFFLINE_VARIABLE}"
        if needs is not None:
            raise _UsageError(
                f"{needs} needs a cache: give --cache-dir DIR or set ${CACHE_DIR_VARIABLE}"
            )
    return {
        "cache_dir": cache_dir,
        "max_cache_bytes": args.max_cache_bytes,
        "offline": offline,
        # The download into the cache follows --no-resume too.
        "resume": not args.no_resume,
    }


def _cache_folder(args: argparse.Namespace) -> BlobCache:
    from .cache import BlobCache, env_cache_dir

    root = args.cache_dir or env_cache_dir()
    if root is None:
        raise _UsageError(
            f"cache {args.cache_command}: which cache? give --cache-dir DIR or set "
            f"${CACHE_DIR_VARIABLE}"
        )
    return BlobCache(root)


def _when(timestamp: float) -> str:
    """A time as ISO 8601 in UTC, to the second: ``2026-12-02T02:24:54Z``."""
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _run_cache(args: argparse.Namespace) -> int:
    """``acr-blob cache ls|du|prune|verify``: a folder that does not exist is an empty cache."""
    cache = _cache_folder(args)
    if args.cache_command == "ls":
        entries = cache.entries()
        if args.json:
            listed = [
                {
                    "digest": entry.digest,
                    "size": entry.size,
                    "last_used": _when(entry.last_used),
                    "path": os.fspath(entry.path),
                }
                for entry in entries
            ]
            print(json.dumps(listed, indent=2))
        else:
            for entry in entries:
                print(f"{entry.digest}  {entry.size}  {_when(entry.last_used)}")
        return EXIT_OK
    if args.cache_command == "du":
        entries = cache.entries()
        total = sum(entry.size for entry in entries)
        if args.json:
            print(json.dumps({"bytes": total, "count": len(entries)}))
        else:
            print(f"{total} bytes in {len(entries)} blob{'' if len(entries) == 1 else 's'}")
        return EXIT_OK
    if args.cache_command == "prune":
        for entry in cache.prune(args.max_bytes):
            print(f"removed {entry.digest}  {entry.size}")
        return EXIT_OK
    bad = cache.verify()
    for entry in bad:
        what = "in use, not removed" if os.path.lexists(entry.path) else "removed"
        print(f"{what}: {entry.digest}  {entry.size}: its content is not its digest")
    return EXIT_FAILURE if bad else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``acr-blob`` console script; returns the exit code."""
    args = _parser().parse_args(argv)
    from ._cli_logs import request_logs, warnings_shown
    from ._cli_progress import ProgressBar

    # The bar only where someone watches, and not mixed into request logs.
    show_bar = (
        args.command in ("get", "pull") and not (args.quiet or args.verbose) and sys.stderr.isatty()
    )
    bar = ProgressBar(sys.stderr) if show_bar else None
    try:
        with request_logs(args.verbose), warnings_shown(not args.verbose):
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
