"""Write the synchronous twins of the async modules: ``overlay/acr_blob/_async`` -> ``_sync``.

The async code is the source; its sync twin is this script's output, committed, with a header
that names the source. ``--check`` exits 1 when a committed twin differs from what the script
makes (``make check-sync``, part of ``make test``).

It is a short script of word substitutions, as httpcore's ``scripts/unasync.py`` is, rather than
the ``unasync`` package: the package renames only ``async``/``Async`` tokens, and this code also
needs its own names mapped (``arun_blocking``, ``abody_chunks``, the primitives of
``acr_blob._concurrency``), which are plainer to read as one table than as package rules.

Usage: python -m tools.unasync [--check] [--root PROJECT]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path("overlay") / "acr_blob"

# Applied in order, each to whole words; the first ones remove syntax, the rest rename.
SUBSTITUTIONS: list[tuple[str, str]] = [
    (r"async def ", "def "),
    (r"async with ", "with "),
    (r"async for ", "for "),
    (r"await ", ""),
    (r"__aenter__", "__enter__"),
    (r"__aexit__", "__exit__"),
    (r"__aiter__", "__iter__"),
    (r"StopAsyncIteration", "StopIteration"),
    (r"asynccontextmanager", "contextmanager"),
    (r"get_async_httpx_client", "get_httpx_client"),
    (r"async_sleep", "sleep"),
    (r"aiter_raw", "iter_raw"),
    (r"aiter_bytes", "iter_bytes"),
    (r"aclose", "close"),
    (r"aread", "read"),
    (r"anext", "next"),
    (r"asleep", "sleep"),
    (r"arun_blocking", "run_blocking"),
    (r"abody_chunks", "body_chunks"),
    (r"apart_pieces", "part_pieces"),
    (r"amap_bounded", "map_bounded"),
    (r"acr_blob\._async", "acr_blob._sync"),
    (r"Awaitable\[([\w.]+)\]", r"\1"),
    (r"Async([A-Z]\w*)", r"\1"),
]
_COMPILED = [(re.compile(rf"\b{pattern}"), replacement) for pattern, replacement in SUBSTITUTIONS]
HEADER = "# Generated from acr_blob/_async/{name} by tools/unasync.py: do not edit.\n"


def unasync(text: str) -> str:
    """The sync twin of one async module's text."""
    for pattern, replacement in _COMPILED:
        text = pattern.sub(replacement, text)
    return text


def twins(source: Path, target: Path) -> dict[Path, str]:
    """Every sync file's path and the text it must have."""
    return {
        target / module.name: HEADER.format(name=module.name) + unasync(module.read_text())
        for module in sorted(source.glob("*.py"))
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    parser.add_argument("--root", type=Path, default=ROOT, help="the project (default: this one)")
    args = parser.parse_args(argv)
    source, target = args.root / PACKAGE / "_async", args.root / PACKAGE / "_sync"
    wanted = twins(source, target)
    present = set(target.glob("*.py"))
    stale = sorted(
        str(path.relative_to(args.root))
        for path in present | set(wanted)
        if path not in wanted or not path.exists() or path.read_text() != wanted[path]
    )
    if args.check:
        if stale:
            print(
                f"{', '.join(stale)}: stale against acr_blob/_async; run 'make generate-sync'",
                file=sys.stderr,
            )
            return 1
        print("acr_blob/_sync matches acr_blob/_async")
        return 0
    target.mkdir(exist_ok=True)
    for path in present - set(wanted):
        path.unlink()
    for path, text in wanted.items():
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
