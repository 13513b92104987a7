"""``acr-blob manifest``, ``resolve`` and ``pull``: whole images and artifacts, by tag or digest.

They name an image as ``REGISTRY/REPOSITORY[:TAG][@DIGEST]`` (see
:func:`~acr_blob.references.parse_image_reference`) and take the client options of the blob
commands; ``pull`` also takes the cache's, and shows one progress bar for the whole pull.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._cli_progress import ProgressBar
    from .references import ImageReference

IMAGE_COMMANDS = frozenset({"manifest", "resolve", "pull"})

_IMAGE_HELP = (
    "the image or artifact, as REGISTRY/REPOSITORY:TAG, REGISTRY/REPOSITORY@DIGEST or both "
    "(http:// in front for a plain-http registry)"
)


def add_image_commands(
    commands: Any,
    common: argparse.ArgumentParser,
    cached: argparse.ArgumentParser,
    concurrency: Callable[[str], int],
) -> None:
    """Add the three commands to ``commands`` (the parser's subparsers)."""
    image = argparse.ArgumentParser(add_help=False)
    image.add_argument("reference", metavar="REF", help=_IMAGE_HELP)
    commands.add_parser(
        "manifest",
        parents=[image, common],
        help="print the manifest a tag or digest names, as the registry sent it (--json: its "
        "media type, digest and size with it)",
    )
    commands.add_parser("resolve", parents=[image, common], help="print the digest a tag points at")
    pull = commands.add_parser(
        "pull",
        parents=[image, common, cached],
        help="pull an image or artifact into an OCI image layout (or --files)",
    )
    pull.add_argument("-o", "--output", required=True, metavar="DIR", help="the folder to write")
    pull.add_argument(
        "--platform",
        metavar="OS/ARCH[/VARIANT]",
        help="the platform to take from an index (default: this machine's)",
    )
    pull.add_argument(
        "--files",
        action="store_true",
        help="write the layers titled org.opencontainers.image.title as files of that name, "
        "as oras pull does",
    )
    pull.add_argument(
        "--max-concurrency",
        type=concurrency,
        default=4,
        metavar="N",
        help="blobs downloaded side by side (default 4)",
    )


def refuse_plain_http(endpoint: str, insecure: bool) -> None:
    """Every command's check of its registry: plain http only to loopback, or ``--insecure``."""
    import httpx

    from ._protocol import is_loopback

    host = httpx.URL(endpoint).host
    if endpoint.startswith("http://") and not is_loopback(host) and not insecure:
        raise ValueError(
            f"refusing plain http to {endpoint}: anyone on the way could read or alter "
            "the traffic; use https, or --insecure if you must"
        )


def image_target(args: argparse.Namespace) -> ImageReference:
    """The image the arguments name, refused over plain http beyond loopback."""
    from .references import parse_image_reference

    target = parse_image_reference(args.reference)
    refuse_plain_http(target.endpoint, args.insecure)
    return target


def run_image_command(
    args: argparse.Namespace,
    bar: ProgressBar | None,
    options: Callable[[str], dict[str, Any]],
) -> int:
    """Run ``manifest``, ``resolve`` or ``pull``; ``options(endpoint)`` are the client's."""
    from ._sync import BlobClient

    target = image_target(args)
    with BlobClient(target.endpoint, **options(target.endpoint)) as client:
        if args.command == "resolve":
            if target.tag is None:
                raise ValueError("resolve takes a tag: REGISTRY/REPOSITORY:TAG")
            print(target.digest or client.resolve(target.repository, target.tag))
            return 0
        if args.command == "manifest":
            manifest = client.get_manifest(target.repository, target.reference)
            if args.json:
                document = json.loads(manifest.raw) if manifest.document is not None else None
                summary = {
                    "media_type": manifest.media_type,
                    "digest": manifest.digest,
                    "size": manifest.size,
                    "manifest": document,
                }
                print(json.dumps(summary, indent=2))
            else:
                sys.stdout.buffer.write(manifest.raw)
                sys.stdout.buffer.flush()
            return 0
        result = client.pull(
            args.reference,
            args.output,
            platform=args.platform,
            max_concurrency=args.max_concurrency,
            progress=bar,
            files=args.files,
        )
    if bar is not None:
        bar.finish()
    size = sum(blob.size or 0 for blob in result.blobs)
    if args.json:
        summary = {
            "manifest": result.manifest.digest,
            "index": result.index.digest if result.index else None,
            "path": str(result.path),
            "blobs": [blob.digest for blob in result.blobs],
            "files": [str(path) for path in result.files],
        }
        print(json.dumps(summary, indent=2))
    elif not args.quiet:
        written = f"{len(result.files)} files" if args.files else f"{len(result.blobs)} blobs"
        print(
            f"pulled {result.manifest.digest} ({written}, {size} bytes) -> {args.output}",
            file=sys.stderr,
        )
    return 0
