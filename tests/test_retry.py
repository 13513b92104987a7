"""The retry policy: its schedule, what it retries, and its parsers (property-tested)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from acr_blob import BlobClient, RegistryError, RetryPolicy, TransportError
from acr_blob._protocol import parse_content_range
from acr_blob.retry import parse_retry_after

DATA = b"retry me"
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()


class Schedule:
    """A policy whose waits are recorded instead of slept."""

    def __init__(self, **policy: float) -> None:
        self.waits: list[float] = []
        self.policy = RetryPolicy(sleep=self.waits.append, random=lambda: 1.0, **policy)  # type: ignore[arg-type]


def run(answers: list[httpx.Response | Exception], schedule: Schedule) -> tuple[int, object]:
    """Download against scripted answers; return (requests sent, result or exception)."""
    sent = 0

    def respond(request: httpx.Request) -> httpx.Response:
        nonlocal sent
        sent += 1
        answer = answers[min(sent, len(answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    with BlobClient(
        "https://registry.test", retry=schedule.policy, transport=httpx.MockTransport(respond)
    ) as client:
        try:
            result: object = client.download_blob("a/b", DIGEST).readall()
        except Exception as error:
            result = error
    return sent, result


def ok() -> httpx.Response:
    return httpx.Response(200, content=DATA)


def test_exponential_backoff_with_full_jitter_until_success() -> None:
    schedule = Schedule(base=0.5, cap=30, attempts=5)
    sent, result = run([httpx.Response(503)] * 3 + [ok()], schedule)
    assert (sent, result) == (4, DATA)
    assert schedule.waits == [0.5, 1.0, 2.0]  # random() == 1.0: the top of each jitter range


def test_retry_after_seconds_and_http_date_are_honoured() -> None:
    schedule = Schedule()
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    answers = [
        httpx.Response(429, headers={"Retry-After": "3"}),
        httpx.Response(503, headers={"Retry-After": later}),
        ok(),
    ]
    sent, result = run(answers, schedule)
    assert (sent, result) == (3, DATA)
    assert schedule.waits[0] == 3.0
    assert 18 <= schedule.waits[1] <= 20


def test_storm_gives_up_after_the_policy_attempts() -> None:
    schedule = Schedule(attempts=3)
    sent, result = run([httpx.Response(503)], schedule)
    assert sent == 3
    assert isinstance(result, RegistryError) and result.status_code == 503
    assert len(schedule.waits) == 2


def test_retry_after_beyond_the_cap_is_not_waited_for() -> None:
    schedule = Schedule(cap=10)
    sent, result = run([httpx.Response(429, headers={"Retry-After": "3600"}), ok()], schedule)
    assert sent == 1
    assert isinstance(result, RegistryError) and result.retry_after == 3600
    assert schedule.waits == []


def test_total_wait_is_capped() -> None:
    schedule = Schedule(attempts=10, total=5)
    sent, _ = run([httpx.Response(429, headers={"Retry-After": "2"})], schedule)
    assert schedule.waits == [2.0, 2.0]
    assert sent == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404, 405, 416, 501])
def test_other_errors_are_never_retried(status: int) -> None:
    schedule = Schedule()
    sent, result = run([httpx.Response(status)], schedule)
    assert sent == 1
    assert isinstance(result, RegistryError) and result.status_code == status


def test_connection_errors_are_retried_and_zero_retries_is_possible() -> None:
    refused = httpx.ConnectError("connection refused")
    schedule = Schedule()
    assert run([refused, refused, ok()], schedule) == (3, DATA)
    never = Schedule(attempts=1)
    sent, result = run([refused, ok()], never)
    assert sent == 1 and isinstance(result, TransportError)
    assert RetryPolicy.never().attempts == 1


@given(st.text(max_size=60))
def test_parse_retry_after_never_raises(text: str) -> None:
    value = parse_retry_after(text)
    assert value is None or value >= 0


@given(st.integers(min_value=0, max_value=10**12))
def test_parse_retry_after_seconds(seconds: int) -> None:
    assert parse_retry_after(str(seconds)) == seconds


@given(st.text(max_size=80))
def test_parse_content_range_never_raises(text: str) -> None:
    parsed = parse_content_range(text)
    if parsed is not None:
        start, end, size = parsed
        assert 0 <= start <= end and (size is None or end < size)


@given(
    st.integers(min_value=0, max_value=2**40),
    st.integers(min_value=0, max_value=2**40),
    st.integers(min_value=1, max_value=2**41),
)
def test_parse_content_range_reads_what_servers_send(start: int, length: int, extra: int) -> None:
    end = start + length
    size = end + extra
    assert parse_content_range(f"bytes {start}-{end}/{size}") == (start, end, size)
    assert parse_content_range(f"bytes {start}-{end}/*") == (start, end, None)
    assert parse_content_range(f"bytes {start}-{end}/{end}") is None


@pytest.mark.parametrize("text", ["²", "٣", "1.5", "-1", "", "  ", "Mon, 32 Foo 2026"])
def test_parse_retry_after_odd_values(text: str) -> None:
    assert parse_retry_after(text) is None
