"""`python -m tools.faultproxy --upstream URL [fault options]`: a fault proxy for experiments.

Prints its URL as the first line on stdout, then serves until Ctrl-C or SIGTERM. The fault
options combine into one rule; --times, --every, --ranged, --path and --method say which
requests it hits.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType

from tools.faultproxy.faults import NO_FAULT, Fault, Rule
from tools.faultproxy.server import FaultProxy


def _drip(text: str) -> tuple[int, float]:
    size, sep, interval = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return int(size), float(interval)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SIZE:INTERVAL, got {text!r}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.faultproxy",
        description="A fault-injecting HTTP reverse proxy on loopback.",
    )
    parser.add_argument("--upstream", required=True, help="http(s)://HOST:PORT on loopback")
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to listen on")
    parser.add_argument("--port", type=int, default=0, help="default: a free one")
    faults = parser.add_argument_group("faults (combined into one rule)")
    faults.add_argument("--cut-after", type=int, metavar="N", help="close after N body bytes")
    faults.add_argument("--reset", action="store_true", help="with --cut-after: RST, not FIN")
    faults.add_argument(
        "--flip-byte", type=int, action="append", metavar="OFFSET", help="xor 0xFF in (repeatable)"
    )
    faults.add_argument("--status", type=int, help="answer this status, upstream untouched")
    faults.add_argument("--retry-after", metavar="VALUE", help="with --status: Retry-After")
    faults.add_argument("--body", default="", help="with --status: the answer's body")
    faults.add_argument("--ignore-range", action="store_true", help="drop Range before relaying")
    faults.add_argument(
        "--shift-content-range", type=int, metavar="DELTA", help="on a 206, move its range"
    )
    faults.add_argument(
        "--drip", type=_drip, metavar="SIZE:INTERVAL", help="SIZE bytes every INTERVAL seconds"
    )
    faults.add_argument(
        "--drip-lasting",
        type=float,
        metavar="SECONDS",
        help="with --drip: end the drip this long after the rule first fired, open "
        "connections included",
    )
    faults.add_argument("--stall", type=float, metavar="SECONDS", help="wait before answering")
    which = parser.add_argument_group("which requests")
    which.add_argument("--times", type=int, help="only the first K matching requests")
    which.add_argument("--every", type=int, metavar="K", help="only every K-th matching request")
    which.add_argument(
        "--ranged",
        action=argparse.BooleanOptionalAction,
        help="only requests with (--ranged) or without (--no-ranged) a Range header",
    )
    which.add_argument("--path", metavar="REGEX", help="only paths this regex is found in")
    which.add_argument("--method", help="only this method")
    return parser


def _fault(args: argparse.Namespace) -> Fault:
    fault = NO_FAULT
    if args.stall is not None:
        fault |= Fault.stall_before_headers(args.stall)
    if args.status is not None:
        headers = {"Retry-After": args.retry_after} if args.retry_after is not None else {}
        fault |= Fault.respond(args.status, headers, args.body)
    if args.ignore_range:
        fault |= Fault.ignore_range()
    if args.shift_content_range is not None:
        fault |= Fault.shift_content_range(args.shift_content_range)
    for offset in args.flip_byte or ():
        fault |= Fault.flip_byte(offset)
    if args.drip is not None:
        fault |= Fault.drip(*args.drip, lasting=args.drip_lasting)
    if args.cut_after is not None:
        fault |= Fault.cut_after(args.cut_after, reset=args.reset)
    return fault


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.status is None and (args.retry_after is not None or args.body):
        parser.error("--retry-after and --body need --status")
    if args.reset and args.cut_after is None:
        parser.error("--reset needs --cut-after")
    if args.drip_lasting is not None and args.drip is None:
        parser.error("--drip-lasting needs --drip")
    which = {
        "method": args.method,
        "path": args.path,
        "ranged": args.ranged,
        "times": args.times,
        "every": args.every,
    }
    try:
        fault = _fault(args)
        proxy = FaultProxy(args.upstream, host=args.host, port=args.port)
        # Checked before the proxy starts, so that a bad option fails as a usage error.
        Rule(fault, **which)
    except (ValueError, re.error) as error:
        parser.error(str(error))
    # Whoever started us stops us with SIGTERM; it should shut down as cleanly as Ctrl-C.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with proxy:
            if fault != NO_FAULT:
                rule = proxy.add(fault, **which)
                print(f"fault proxy: {rule}", file=sys.stderr, flush=True)
            print(proxy.url, flush=True)
            print(f"fault proxy: {proxy.url} -> {args.upstream}", file=sys.stderr, flush=True)
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
