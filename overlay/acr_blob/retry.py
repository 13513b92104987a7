"""When and how long to wait before trying again: the retry policy and its parsers."""

from __future__ import annotations

import random
import ssl
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import attrs
import httpx

from ._concurrency import asleep
from .errors import RegistryError, StorageError, TransportError

__all__ = ["RETRYABLE_STATUSES", "RetryPolicy", "parse_retry_after"]

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
"""Answers that say "not now" rather than "no"; every other 4xx is final.

Example::

    >>> 429 in RETRYABLE_STATUSES, 404 in RETRYABLE_STATUSES
    (True, False)
"""


@attrs.frozen
class RetryPolicy:
    """How a client retries requests that failed before their body began, and resumes bodies.

    ``attempts`` is how often a request is tried in all (1: never retried). Waits grow
    exponentially from ``base`` with full jitter, follow a server's ``Retry-After`` when it gives
    one, and never exceed ``cap`` each nor ``total`` together; a ``Retry-After`` beyond ``cap``
    ends the retries at once. A body that breaks off is resumed from its last byte up to
    ``resume_attempts`` times in a row without progress. ``sleep`` and ``async_sleep`` are what
    waits call (tests record them).

    Example::

        BlobClient(endpoint, retry=RetryPolicy(attempts=6, base=1.0, cap=60.0))
        BlobClient(endpoint, retry=RetryPolicy.never())
    """

    attempts: int = attrs.field(default=4, validator=attrs.validators.ge(1))
    base: float = attrs.field(default=0.5, validator=attrs.validators.ge(0))
    cap: float = attrs.field(default=30.0, validator=attrs.validators.ge(0))
    total: float = attrs.field(default=120.0, validator=attrs.validators.ge(0))
    resume_attempts: int = attrs.field(default=5, validator=attrs.validators.ge(0))
    sleep: Callable[[float], object] = attrs.field(default=time.sleep, repr=False)
    async_sleep: Callable[[float], Awaitable[object]] = attrs.field(default=asleep, repr=False)
    random: Callable[[], float] = attrs.field(default=random.random, repr=False)

    @classmethod
    def never(cls) -> RetryPolicy:
        """No retries and no resumption: every failure is final.

        Example::

            >>> RetryPolicy.never()
            RetryPolicy(attempts=1, base=0.5, cap=30.0, total=120.0, resume_attempts=0)
        """
        return cls(attempts=1, resume_attempts=0)

    def once(self) -> RetryPolicy:
        """This policy without retries or resumption (what a mirror gets: its failures move
        on to the next host at once).

        Example::

            >>> RetryPolicy().once().attempts
            1
        """
        return attrs.evolve(self, attempts=1, resume_attempts=0)

    def delay(self, failures: int, retry_after: float | None, waited: float) -> float | None:
        """The wait before the next try after ``failures`` failures, or ``None``: give up.

        Example::

            >>> RetryPolicy(attempts=3).delay(1, retry_after=2.0, waited=0.0)
            2.0
            >>> RetryPolicy(attempts=3).delay(3, retry_after=None, waited=0.0) is None
            True
        """
        if failures >= self.attempts:
            return None
        if retry_after is not None:
            if retry_after > self.cap:
                return None
            wait = retry_after
        else:
            wait = self.random() * min(self.cap, self.base * 2 ** (failures - 1))
        return wait if waited + wait <= self.total else None

    def resume_delay(self, failures: int) -> float | None:
        """The wait before resuming a body after ``failures`` tries in a row without progress.

        Example::

            >>> RetryPolicy().resume_delay(1)  # the first resumption is immediate
            0.0
        """
        if failures > self.resume_attempts:
            return None
        # The first resumption is immediate: a dropped connection is usually just that.
        return 0.0 if failures <= 1 else self.random() * min(self.cap, self.base * 2**failures)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from ``Retry-After`` (delta-seconds or an HTTP date); ``None`` if unusable.

    Example::

        >>> parse_retry_after("120")
        120.0
    """
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(text)
    # Imported here: dateutil costs start-up time, and most answers say seconds or nothing.
    from dateutil.parser import ParserError
    from dateutil.parser import parse as parse_date

    try:
        when = parse_date(text)
    except (ParserError, ValueError, OverflowError):
        return None
    if when.tzinfo is None:
        return None  # an HTTP date is always GMT; anything without a zone is not one
    current = now or datetime.now(UTC)
    try:
        return max((when - current).total_seconds(), 0.0)
    except OverflowError:
        return None


def retryable_transport_error(error: httpx.TransportError) -> bool:
    """Connection trouble is worth another try; a certificate that fails verification is not."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(
            cause
        ):
            return False
        cause = cause.__cause__ or cause.__context__
    return not isinstance(error, httpx.UnsupportedProtocol | httpx.ProxyError)


class Resumptions:
    """Resumptions of one body (or one part of it) in a row without progress, against a policy.

    Shared by single streams and parallel parts: a resumption that got further than the last
    one starts the count again, so only a body that stops moving runs out of tries.
    """

    def __init__(self, policy: RetryPolicy, position: int) -> None:
        self._policy = policy
        self._mark = position
        self.failures = 0

    def next_delay(self, error: Exception, position: int) -> float | None:
        """The wait before resuming at ``position`` after ``error``; ``None``: give up."""
        if position > self._mark:
            self.failures, self._mark = 0, position
        self.failures += 1
        delay = self._policy.resume_delay(self.failures)
        resumable = not isinstance(error, httpx.TransportError) or retryable_transport_error(error)
        return delay if resumable else None


def retry_delay(
    policy: RetryPolicy,
    error: Exception,
    failures: int,
    waited: float,
    deadline: float | None,
) -> float | None:
    """The wait before trying a request again after ``error``, or ``None``: raise it."""
    if isinstance(error, RegistryError | StorageError):
        if error.status_code not in RETRYABLE_STATUSES:
            return None
        delay = policy.delay(failures, error.retry_after, waited)
    elif type(error) is TransportError and isinstance(error.__cause__, httpx.TransportError):
        if not retryable_transport_error(error.__cause__):
            return None
        delay = policy.delay(failures, None, waited)
    else:
        return None
    if delay is not None and deadline is not None and time.monotonic() + delay > deadline:
        return None
    return delay
