"""max_concurrency="auto": the controller's decisions on recorded and modelled rate sequences
(no clock: each sample is given its time), then downloads that use it, sync and async, to a
file and iterating, against the real registry behind the fault proxy."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from acr_blob import BlobClient
from acr_blob import _adaptive as adaptive
from acr_blob._adaptive import (
    BACKOFF_FIRST,
    CEILING,
    WINDOW,
    ConcurrencyController,
)
from acr_blob._config import check_concurrency
from acr_blob._ranges import MIN_PART
from tests.drivers import NO_WAIT, Driver
from tools.faultproxy import Fault, FaultProxy
from tools.testbed import Deployment

MB = 1e6
# A window's length in the samples: a hair over WINDOW, for float sums of it fall short.
STEP = WINDOW * (1 + 1e-9)


class Run:
    """A controller fed window by window: ``rate(target)`` bytes per second arrive, and the
    CPU is ``busy(target)`` or idle (process CPU time per wall second 1.0 or 0.1). Both models
    may be swapped between calls."""

    def __init__(
        self,
        rate: Callable[[int], float],
        busy: Callable[[int], bool] = lambda n: False,
        ceiling: int = CEILING,
    ) -> None:
        self.rate, self.busy = rate, busy
        self.now, self.received, self.cpu = 100.0, 0.0, 0.0
        self.controller = ConcurrencyController(ceiling, process_time=lambda: self.cpu)
        self.controller.observe(self.now, 0)
        self.window = 0
        self.changes: list[tuple[int, int]] = []
        """``(window, new target)`` for every change."""

    @property
    def target(self) -> int:
        return self.controller.target

    def windows(self, count: int) -> None:
        for _ in range(count):
            before = self.controller.target
            self.window += 1
            self.now += STEP
            self.received += self.rate(before) * STEP
            self.cpu += STEP * (1.0 if self.busy(before) else 0.1)
            after = self.controller.observe(self.now, int(self.received))
            if after != before:
                self.changes.append((self.window, after))

    def targets(self) -> list[int]:
        return [1] + [target for _, target in self.changes]


def capped_per_connection(n: int) -> float:
    return 45 * MB * n


def test_a_cpu_bound_stream_never_tries_a_second_connection() -> None:
    run = Run(lambda n: 1000 * MB, busy=lambda n: True)
    run.windows(40)
    assert run.changes == []


def test_a_per_connection_cap_doubles_the_connections_up_to_the_ceiling() -> None:
    run = Run(capped_per_connection)
    run.windows(20)
    assert run.targets() == [1, 2, 4, 8]
    # The stream's first window is measured; the first after a change lets it settle (half a
    # window, but the samples here come a window apart), and the next one decides.
    assert [window for window, _ in run.changes] == [1, 3, 5]


def test_a_change_settles_for_half_a_window_and_the_first_stream_not_at_all() -> None:
    controller = ConcurrencyController(process_time=lambda: 0.0)
    now, received, changes = 0.0, 0.0, []
    for _ in range(100):  # samples a tenth of a window apart, as chunks arrive
        before = controller.target
        now += WINDOW / 10 * (1 + 1e-9)
        received += capped_per_connection(before) * WINDOW / 10
        if controller.observe(now, int(received)) != before:
            changes.append(now)
    # The first sample starts the first window.
    assert changes[0] == pytest.approx(WINDOW / 10 + WINDOW, rel=0.02)
    assert changes[1] - changes[0] == pytest.approx(1.5 * WINDOW, rel=0.02)


def test_one_fewer_is_judged_once_the_connection_it_takes_away_has_stopped() -> None:
    # Connections capped at 40 MB/s each; at eight the process is CPU-bound and one fewer is
    # tried, but the eighth goes on for a few windows to finish its part. Measured meanwhile,
    # seven would look as fast as eight, and be kept.
    cpu = 0.0
    controller = ConcurrencyController(process_time=lambda: cpu)
    now, received, running = 0.0, 0.0, 1
    controller.observe(now, 0, running)
    stops_at: int | None = None
    targets = [1]
    for window in range(1, 30):
        now += STEP
        received += 40 * MB * running * STEP
        cpu += STEP * (1.0 if running == 8 else 0.1)
        target = controller.observe(now, int(received), running)
        if target != targets[-1]:
            targets.append(target)
        if target > running:
            running = target  # new workers start at once
        elif target < running and stops_at is None:
            stops_at = window + 4  # the eighth finishes its part later
        if stops_at is not None and window >= stops_at:
            running, stops_at = target, None
    # CPU-bound at eight, one fewer was tried; seven, measured alone, were slower.
    assert targets[:6] == [1, 2, 4, 8, 7, 8]


def test_the_ceiling_can_be_lower() -> None:
    run = Run(capped_per_connection, ceiling=3)
    run.windows(20)
    assert run.targets() == [1, 2, 3]


def test_one_at_a_time_a_linear_link_reaches_the_ceiling() -> None:
    # After a 429 ended the doubling, each connection more adds its share: 7 -> 8 brings a
    # seventh more, less than GAIN, yet more than half of what an eighth brings.
    run = Run(capped_per_connection)
    run.windows(2)
    run.controller.throttled(run.now, retry_after=0.0)
    run.windows(200)
    assert run.targets()[-7:] == [2, 3, 4, 5, 6, 7, 8]


def test_a_link_capped_in_total_keeps_the_count_that_paid_and_tries_again_later() -> None:
    # Two connections fill the link: 4 give nothing more, nor do 3.
    run = Run(lambda n: min(45 * MB * n, 90 * MB))
    run.windows(60)
    assert run.targets()[:6] == [1, 2, 4, 2, 3, 2]
    assert run.target == 2
    windows = [window for window, _ in run.changes]
    # Undone at window 5; the next trial comes BACKOFF_FIRST measured windows later (one
    # settles), and the one after that waits twice as long.
    assert windows[3] - windows[2] == BACKOFF_FIRST + 1
    assert windows[5] - windows[4] == 2 * BACKOFF_FIRST + 1


def test_a_window_that_stalled_does_not_make_a_trial_look_like_a_gain() -> None:
    # The link gives 200 MB/s however many connections; one window at one connection stalls
    # (a busy machine) just before the second trial up.
    # The first trial is undone at window 3; one window settles, then the backoff's measured
    # windows pass, the last of which stalls.
    stalled = 3 + 1 + BACKOFF_FIRST

    def rate(n: int) -> float:
        return 15 * MB if run.window == stalled else 200 * MB

    run = Run(rate)
    run.windows(40)
    assert run.targets()[:5] == [1, 2, 1, 2, 1]
    assert run.changes[2][0] == stalled


def test_when_cpu_bound_fewer_connections_are_kept_while_the_rate_holds() -> None:
    run = Run(capped_per_connection)
    run.windows(8)
    assert run.target == 8
    # The cap lifted: every connection is fast now, and the CPU is the limit.
    run.rate, run.busy = (lambda n: 400 * MB), (lambda n: True)
    run.windows(30)
    assert run.targets()[3:] == [8, 7, 6, 5, 4, 3, 2, 1]
    assert run.target == 1


def test_fewer_connections_are_undone_when_the_rate_falls() -> None:
    run = Run(capped_per_connection, ceiling=4)
    run.windows(6)
    assert run.target == 4
    run.busy = lambda n: True  # CPU-bound, yet each connection still adds its share
    run.windows(4)
    assert run.targets()[-2:] == [3, 4]
    tried = len(run.changes)
    run.windows(BACKOFF_FIRST - 1)
    assert len(run.changes) == tried, "fewer were tried again before the backoff ended"


def test_a_429_sheds_a_connection_and_holds_the_count() -> None:
    run = Run(capped_per_connection, ceiling=4)
    run.windows(6)
    assert run.target == 4
    assert run.controller.throttled(run.now, retry_after=5.0) == 3
    held = int(5.0 / WINDOW)
    run.windows(held - 1)
    assert run.target == 3, "a trial up came during Retry-After"
    run.windows(4)
    assert run.target == 4
    # Without Retry-After it still holds for a few windows.
    run.controller.throttled(run.now)
    run.windows(BACKOFF_FIRST - 1)
    assert run.target == 3


def test_repeated_connection_errors_shed_one_but_a_single_one_does_not() -> None:
    run = Run(capped_per_connection)
    run.windows(8)
    assert run.controller.connection_failed(run.now) == 8
    run.windows(10)
    assert run.controller.connection_failed(run.now) == 8
    assert run.controller.connection_failed(run.now) == 7


def test_a_throttled_trial_is_not_judged_on_its_window() -> None:
    run = Run(capped_per_connection)
    run.windows(2)  # 1 -> 2 under way
    assert run.target == 2
    run.controller.throttled(run.now, retry_after=1.0)
    assert run.target == 1
    run.windows(2)
    assert run.target == 1


def test_a_recorded_throttled_download() -> None:
    """Rates measured in a real run behind a 45 MB/s-per-connection proxy on this machine:
    the proxy itself ran out of CPU at about 80 MB/s, so 8 gave little more than 4."""
    recorded = {1: 36.1 * MB, 2: 54.0 * MB, 4: 79.4 * MB, 8: 85.7 * MB, 5: 80.2 * MB}
    run = Run(lambda n: recorded[n])
    run.windows(30)
    assert run.targets()[:6] == [1, 2, 4, 8, 4, 5]
    assert run.target == 4


def test_decisions_are_logged_with_their_rates(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "acr_blob")
    Run(lambda n: min(45 * MB * n, 90 * MB)).windows(6)
    messages = [r.getMessage() for r in caplog.records if r.getMessage().startswith("auto:")]
    assert "auto: 1 -> 2 connection(s), 45.0 MB/s: try more" in messages
    assert any(m.startswith("auto: 4 -> 2 connection(s), undone: 90.0 MB/s") for m in messages)


@pytest.mark.parametrize("value", ["auto", 1, 8, 64])
def test_max_concurrency_accepts_auto_and_counts(value: object) -> None:
    assert check_concurrency(value) == value


@pytest.mark.parametrize("value", ["Auto", "fast", 0, 65, 2.0, True, None])
def test_max_concurrency_refuses_anything_else(value: object) -> None:
    with pytest.raises(
        ValueError, match='max_concurrency must be an integer from 1 to 64 or "auto"'
    ):
        check_concurrency(value)
    with pytest.raises(ValueError):
        BlobClient("http://127.0.0.1:1", max_concurrency=value)  # type: ignore[arg-type]


# --- downloads -------------------------------------------------------------------------------

SIZE = 6 * MIN_PART + 4321
BLOBS = r"/blobs/"
# Slow enough per connection that a few windows pass, fast enough for a quick test.
DRIP = Fault.drip(64 << 10, (64 << 10) / (40 * MB))


@pytest.fixture(scope="module")
def blob(registry: Deployment) -> tuple[str, str, bytes]:
    pushed = registry.push_random("adaptive/blob", SIZE)
    return "adaptive/blob", pushed.digest, pushed.data


@pytest.fixture
def idle_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process with CPU to spare, whatever the test machine is doing."""
    monkeypatch.setattr(adaptive, "read_process_time", lambda: 0.0)


@pytest.fixture
def busy_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    # Two CPU seconds a second: every window is CPU-bound.
    monkeypatch.setattr(adaptive, "read_process_time", lambda: time.monotonic() * 2)


def _ranged(proxy: FaultProxy) -> list[str]:
    return [r.header("Range") or "" for r in proxy.requests if r.header("Range")]


def _decisions(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("auto:")]


# "auto" asked for, or left to the default (which it is).
@pytest.mark.parametrize(
    ("action", "setting"),
    [
        ("to_file", {"max_concurrency": "auto"}),
        ("iterate", {"max_concurrency": "auto"}),
        ("to_file", {}),
    ],
    ids=["to_file", "iterate", "to_file-by-default"],
)
def test_auto_adds_parts_behind_a_capped_link(
    mode: str,
    action: str,
    setting: dict[str, str],
    proxied: FaultProxy,
    blob: tuple[str, str, bytes],
    tmp_path: Path,
    idle_machine: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, "acr_blob")
    repository, digest, data = blob
    proxied.add(DRIP, method="GET", path=BLOBS)
    client = Driver(mode, proxied.url, retry=NO_WAIT, **setting)
    if action == "to_file":
        properties = client.to_file(repository, digest, tmp_path / "blob")
        assert properties.size == SIZE and (tmp_path / "blob").read_bytes() == data
    else:
        assert client.iterate(repository, digest) == data
    assert "auto: 1 -> 2 connection(s)" in " ".join(_decisions(caplog))
    # The stream asked for everything, then parts took the rest over from where it stopped.
    assert proxied.requests[0].header("Range") is None
    asked = sorted(
        (int(first), int(last) if last else None)
        for first, last in (r.removeprefix("bytes=").split("-") for r in _ranged(proxied))
    )
    assert len(asked) >= 2 and asked[0][0] > 0
    assert any(last is not None for _, last in asked), "no part was asked for"
    # Parts and the streams a hand-back opens (to the end, until parts take over again) tile
    # the rest of the blob, each byte asked for once.
    starts = [first for first, _ in asked[1:]] + [SIZE]
    for (first, last), following in zip(asked, starts, strict=True):
        assert (following - 1 if last is None else last) == following - 1 >= first


def test_auto_stays_one_stream_when_cpu_bound(
    mode: str,
    proxied: FaultProxy,
    blob: tuple[str, str, bytes],
    tmp_path: Path,
    busy_machine: None,
) -> None:
    repository, digest, data = blob
    proxied.add(DRIP, method="GET", path=BLOBS)
    Driver(mode, proxied.url, retry=NO_WAIT).to_file(
        repository, digest, tmp_path / "blob", max_concurrency="auto"
    )
    assert (tmp_path / "blob").read_bytes() == data
    assert len(proxied.requests) == 1 and not _ranged(proxied)


def test_auto_sheds_a_part_on_429(
    mode: str,
    proxied: FaultProxy,
    blob: tuple[str, str, bytes],
    tmp_path: Path,
    idle_machine: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, "acr_blob")
    repository, digest, data = blob
    proxied.add(DRIP, method="GET", path=BLOBS)
    too_many = Fault.respond(429, {"Retry-After": "0"}, '{"errors":[{"code":"TOOMANYREQUESTS"}]}')
    proxied.add(too_many, method="GET", path=BLOBS, ranged=True, times=2)
    Driver(mode, proxied.url, retry=NO_WAIT, max_concurrency="auto").to_file(
        repository, digest, tmp_path / "blob"
    )
    assert (tmp_path / "blob").read_bytes() == data
    assert any("shed (throttled)" in m for m in _decisions(caplog))


def test_auto_goes_on_as_one_stream_when_the_server_ignores_range(
    mode: str,
    proxied: FaultProxy,
    blob: tuple[str, str, bytes],
    tmp_path: Path,
    idle_machine: None,
) -> None:
    repository, digest, data = blob
    proxied.add(DRIP | Fault.ignore_range(), method="GET", path=BLOBS)
    Driver(mode, proxied.url, retry=NO_WAIT, max_concurrency="auto").to_file(
        repository, digest, tmp_path / "blob"
    )
    assert (tmp_path / "blob").read_bytes() == data
    # One probe for a part, refused at the stream's URL and through the registry; no part
    # after it.
    assert len(_ranged(proxied)) == 2


def test_auto_on_a_small_blob_is_one_request(
    mode: str, proxied: FaultProxy, registry: Deployment, tmp_path: Path, idle_machine: None
) -> None:
    pushed = registry.push_random("adaptive/small", 2 * MIN_PART - 1)
    proxied.add(DRIP, method="GET", path=BLOBS)
    Driver(mode, proxied.url, retry=NO_WAIT, max_concurrency="auto").to_file(
        "adaptive/small", pushed.digest, tmp_path / "blob"
    )
    assert (tmp_path / "blob").read_bytes() == pushed.data
    assert len(proxied.requests) == 1


class Scripted(ConcurrencyController):
    """Targets by the seconds since the first sample: 1, then 2 from 0.3 s, then 1 again
    from 0.6 s."""

    def __init__(self) -> None:
        super().__init__()
        self.first: float | None = None

    def observe(self, now: float, received: int, running: int | None = None) -> int:
        self.first = now if self.first is None else self.first
        self.target = 2 if 0.3 <= now - self.first < 0.6 else 1
        return self.target


@pytest.mark.parametrize("action", ["to_file", "iterate"])
def test_a_download_back_at_one_connection_goes_on_as_one_stream(
    mode: str,
    action: str,
    proxied: FaultProxy,
    blob: tuple[str, str, bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for flavour in ("_async", "_sync"):
        monkeypatch.setattr(f"acr_blob.{flavour}.download.ConcurrencyController", Scripted)
    repository, digest, data = blob
    # Slower than DRIP: the parts under way at 0.6 s leave more than two parts' worth.
    proxied.add(Fault.drip(64 << 10, (64 << 10) / (20 * MB)), method="GET", path=BLOBS)
    client = Driver(mode, proxied.url, retry=NO_WAIT, max_concurrency="auto")
    if action == "to_file":
        client.to_file(repository, digest, tmp_path / "blob")
        assert (tmp_path / "blob").read_bytes() == data
    else:
        assert client.iterate(repository, digest) == data
    ranges = [r.header("Range") for r in proxied.requests]
    assert ranges[0] is None
    # Parts, then one open-ended request from where the parts ended: the stream again.
    assert ranges[-1] is not None and ranges[-1].endswith("-")
    parts = [r for r in ranges[1:-1] if r is not None]
    assert len(parts) >= 2 and not any(r.endswith("-") for r in parts)
    last = max(int(r.removeprefix("bytes=").split("-")[1]) for r in parts)
    assert ranges[-1] == f"bytes={last + 1}-"
