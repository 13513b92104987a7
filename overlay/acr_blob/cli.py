"""The ``acr-blob`` command: verified downloads and HEAD from the shell.

Exit codes: 0 verified success, 1 any other failure, 2 bad arguments or input, 3 not found,
4 authentication refused, 5 integrity failure (digest or size mismatch), 130 interrupted.
On any failure nothing is left at the ``-o`` path.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

import attrs

from ._config import Credential, __version__
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

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_AUTHENTICATION = 4
EXIT_INTEGRITY = 5
EXIT_INTERRUPTED = 130

USERNAME_VARIABLE = "ACR_BLOB_USERNAME"
PASSWORD_VARIABLE = "ACR_BLOB_PASSWORD"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="acr-blob",
        description="Download verified blobs from Azure Container Registry or any OCI registry.",
        epilog=f"Credentials: --username with --password-stdin, or ${USERNAME_VARIABLE} and "
        f"${PASSWORD_VARIABLE}, or else the Docker configuration ($DOCKER_CONFIG/config.json or "
        "~/.docker/config.json, with its credential helpers). Exit codes: 0 ok, 1 failure, "
        "2 bad input, 3 not found, 4 authentication, 5 digest or size mismatch, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"acr-blob {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "endpoint", help="registry, e.g. myregistry.azurecr.io or http://127.0.0.1:5000"
    )
    common.add_argument("repository", help="repository, e.g. library/ubuntu")
    common.add_argument("digest", help="blob digest, sha256:<64 hex> or sha512:<128 hex>")
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
        help="allow credentials over plain http to hosts other than loopback",
    )
    common.add_argument("--ca-cert", help="CA bundle (PEM) that signs the registry's certificate")
    common.add_argument("--timeout", type=float, default=60.0, help="seconds of silence allowed")
    common.add_argument("--json", action="store_true", help="print the blob's properties as JSON")
    common.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")

    get = commands.add_parser("get", parents=[common], help="download and verify a blob")
    get.add_argument("-o", "--output", required=True, help="file to write, or - for stdout")
    commands.add_parser("head", parents=[common], help="show a blob's size, type and ETag")
    return parser


def _credential(args: argparse.Namespace) -> Credential:
    """Flags, then environment variables, then the Docker configuration."""
    if args.anonymous:
        return None
    username = args.username or os.environ.get(USERNAME_VARIABLE)
    if args.password_stdin:
        password: str | None = sys.stdin.readline().rstrip("\r\n")
    else:
        password = os.environ.get(PASSWORD_VARIABLE)
    if username is None and password is None:
        return docker_config_credential(args.endpoint)
    if not username or password is None:
        raise _UsageError(
            "give both a user name and a password (--username with --password-stdin, or "
            f"${USERNAME_VARIABLE} and ${PASSWORD_VARIABLE})"
        )
    return BasicCredential(username, password)


class _UsageError(Exception):
    pass


def _run(args: argparse.Namespace) -> int:
    verify: bool | str = args.ca_cert or True
    with BlobClient(
        args.endpoint,
        _credential(args),
        timeout=args.timeout,
        verify=verify,
        allow_insecure=args.insecure,
    ) as client:
        if args.command == "head":
            properties = client.get_blob_properties(args.repository, args.digest)
            if args.json:
                print(json.dumps(attrs.asdict(properties), indent=2))
            elif not args.quiet:
                for name, value in attrs.asdict(properties).items():
                    print(f"{name}: {value}")
            return EXIT_OK
        if args.output == "-":
            with client.download_blob(args.repository, args.digest) as download:
                size = download.readinto(sys.stdout.buffer)
                sys.stdout.buffer.flush()
            if not args.quiet:
                print(f"verified {download.digest} ({size} bytes)", file=sys.stderr)
            return EXIT_OK
        properties = client.download_blob_to_file(args.repository, args.digest, args.output)
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
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("acr-blob: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (_UsageError, ValueError) as error:
        print(f"acr-blob: {error}", file=sys.stderr)
        return EXIT_USAGE
    except BlobNotFoundError as error:
        print(f"acr-blob: not found: {error}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except AuthenticationError as error:
        print(f"acr-blob: authentication failed: {error}", file=sys.stderr)
        return EXIT_AUTHENTICATION
    except (DigestMismatchError, BlobSizeError) as error:
        print(f"acr-blob: integrity check failed: {error}", file=sys.stderr)
        return EXIT_INTEGRITY
    except (BlobError, OSError) as error:
        print(f"acr-blob: {error}", file=sys.stderr)
        return EXIT_FAILURE
