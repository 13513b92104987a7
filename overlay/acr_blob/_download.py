"""What the sync and async downloads share: properties, one-pass state, and the decisions of
resumption (when to try again, and when to give up saying how far it got)."""

from __future__ import annotations

import time

import attrs
import httpx

from ._progress import ProgressReporter
from ._protocol import properties_from
from ._verify import BodyVerifier
from .errors import BlobError, DeadlineExceededError, TransportError
from .retry import Resumptions, RetryPolicy


class DownloadBase:
    """A response whose headers are in, its properties, and the verifier for its body."""

    def __init__(
        self,
        response: httpx.Response,
        verifier: BodyVerifier,
        policy: RetryPolicy,
        deadline: float | None,
        reporter: ProgressReporter | None = None,
    ) -> None:
        self._response = response
        self._reporter = reporter
        self._verifier = verifier
        self._policy = policy
        self._deadline = deadline
        self._started = False
        self._resumptions = Resumptions(policy, verifier.received)
        self.properties = attrs.evolve(
            properties_from(response, verifier.digest), size=verifier.size
        )

    @property
    def size(self) -> int | None:
        """The blob's size, as announced by the server, or ``None`` when it sent none."""
        return self.properties.size

    @property
    def digest(self) -> str:
        """The requested digest, which the content is verified against."""
        return self.properties.digest

    def _start(self) -> None:
        if self._started:
            raise BlobError("this download has already been read or closed")
        self._started = True

    def _received(self) -> None:
        """After each chunk: the deadline, and progress."""
        self._check_deadline()
        if self._reporter is not None:
            self._reporter.update(self._verifier.received, self._verifier.size)

    def _verified(self) -> None:
        """After the last chunk: the verdict, and the final progress report."""
        self._verifier.finish()
        if self._reporter is not None:
            self._reporter.finish(self._verifier.received)

    def _check_deadline(self) -> None:
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise DeadlineExceededError(
                f"deadline passed after {self._progress()}; the server is too slow"
            )

    def _progress(self) -> str:
        size = self._verifier.size
        return f"{self._verifier.received} of {size if size is not None else '?'} bytes"

    def _resume_delay(self, error: Exception) -> float:
        """How long to wait before resuming after ``error``; raises when it is time to stop."""
        delay = self._resumptions.next_delay(error, self._verifier.received)
        if delay is None:
            failures = self._resumptions.failures
            tries = f" and {failures - 1} resumptions" if failures > 1 else ""
            raise TransportError(f"download broke off after {self._progress()}{tries}: {error!r}")
        self._check_deadline()
        return delay
