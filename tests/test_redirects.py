"""Redirect answers no real registry gives on demand: a broken ``Location``, every redirect
status, user info in the ``Location``.

Served by httpx.MockTransport as a misconfigured registry or proxy would answer; every case runs
against the sync and the async client and counts the requests sent.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from pathlib import Path

import httpx
import pytest

from acr_blob import (
    InsecureRedirectError,
    InvalidRedirectError,
    RedirectError,
    StorageError,
    TooManyRedirectsError,
    parse_digest,
)
from acr_blob._protocol import RedirectFollower
from tests.drivers import NO_WAIT, Driver, Handler, Recorder

REGISTRY = "https://reg.example"
DATA = bytes(range(250)) * 4  # the 1000-byte blob
DIGEST = "sha256:" + hashlib.sha256(DATA).hexdigest()
REPO = "team/app"
BLOB_URL = f"{REGISTRY}/v2/{REPO}/blobs/{DIGEST}"
SECRET = "pa55-SECRET-word"
SIGNATURE = "s1gn4tur3-SECRET"
REDIRECT_STATUSES = [301, 302, 303, 307, 308]


def driver(mode: str, handler: Handler, endpoint: str = REGISTRY, **args: object) -> Driver:
    # Retries without waits: a broken redirect that were retried would show in the count.
    args.setdefault("retry", NO_WAIT)
    return Driver(mode, endpoint, handler=handler, **args)


def blob(request: httpx.Request) -> httpx.Response:
    """Storage's answer: the blob, or the rest of it from where a ``Range`` asks."""
    range_ = request.headers.get("Range")
    first = int(range_.removeprefix("bytes=").partition("-")[0]) if range_ else 0
    headers = {"Content-Length": str(len(DATA) - first)}
    if range_:
        headers["Content-Range"] = f"bytes {first}-{len(DATA) - 1}/{len(DATA)}"
    body = b"" if request.method == "HEAD" else DATA[first:]
    return httpx.Response(206 if range_ else 200, headers=headers, content=body)


def redirect(status: int, location: str | bytes | None) -> httpx.Response:
    headers = [] if location is None else [(b"Location", _raw(location))]
    return httpx.Response(status, headers=headers)


def _raw(location: str | bytes) -> bytes:
    return location if isinstance(location, bytes) else location.encode("latin-1")


def registry_redirecting(status: int, location: str | bytes | None) -> Recorder:
    """The registry answers every request with this redirect; storage serves the blob."""

    def respond(request: httpx.Request) -> httpx.Response:
        if request.url.host == "reg.example":
            return redirect(status, location)
        return blob(request)

    return Recorder(respond)


# (Location as sent, what the message must say, the Location as the error shows it)
BROKEN = {
    "no-location": (None, "has no Location header", None),
    "empty": ("", "has an empty Location", ""),
    "blank": ("   ", "has an empty Location", "   "),
    "not-a-url": ("not a url", "not a URL (a URL may not hold a space)", "not a url"),
    "crlf": (
        "https://store.example/blob\r\nX-Injected: 1",
        "not a URL (a URL may not hold '\\r')",
        "https://store.example/blob\\r\\nX-Injected: 1",
    ),
    "nul": ("https://store.example/\x00blob", "a URL may not hold '\\x00'", None),
    "backslash": ("https://store.example\\@reg.example/", "a URL may not hold '\\'", None),
    "non-ascii": ("https://bücher.example/blob".encode(), "a URL may not hold 'ü'", None),
    "bad-escape": ("https://store.example/%zz", "a '%' without two hex digits", None),
    "bad-port": ("https://store.example:99999/blob", "port 99999 is out of range", None),
    "port-not-a-number": ("https://store.example:http/blob", "Invalid port: 'http'", None),
    "no-host": ("https:///blob", "not a URL (no host)", "https:///blob"),
    "file-scheme": (
        "file:///etc/passwd",
        "goes to unsupported scheme file: 'file:///etc/passwd'",
        "file:///etc/passwd",
    ),
    "ftp-scheme": ("ftp://store.example/blob", "goes to unsupported scheme ftp", None),
}


def check_broken(error: InvalidRedirectError, status: int, case: str, recorder: Recorder) -> None:
    location, says, shown = BROKEN[case]
    # One answer, no retry, and the error says what was wrong with which answer.
    assert len(recorder.requests) == 1
    assert error.status_code == status
    assert str(error).startswith(f"{status} redirect from {BLOB_URL} ")
    assert says in str(error)
    assert "\r" not in str(error) and "\n" not in str(error)
    if shown is not None:
        assert error.location == shown
    if location is None:
        assert error.location is None
    assert repr(error) == f"InvalidRedirectError({str(error)!r}, status_code={status})"


@pytest.mark.parametrize("status", REDIRECT_STATUSES)
@pytest.mark.parametrize("case", BROKEN)
def test_broken_redirect_fails_at_the_first_answer(mode: str, case: str, status: int) -> None:
    recorder = registry_redirecting(status, BROKEN[case][0])
    with pytest.raises(InvalidRedirectError) as caught:
        driver(mode, recorder).iterate(REPO, DIGEST)
    check_broken(caught.value, status, case, recorder)


@pytest.mark.parametrize("case", BROKEN)
def test_broken_redirect_of_a_head_fails_at_the_first_answer(mode: str, case: str) -> None:
    recorder = registry_redirecting(307, BROKEN[case][0])
    with pytest.raises(InvalidRedirectError) as caught:
        driver(mode, recorder).properties(REPO, DIGEST)
    check_broken(caught.value, 307, case, recorder)


def test_unsupported_scheme_is_not_called_insecure_nor_given_a_host(mode: str) -> None:
    recorder = registry_redirecting(307, "file:///etc/passwd")
    with pytest.raises(RedirectError) as caught:
        driver(mode, recorder).iterate(REPO, DIGEST)
    assert not isinstance(caught.value, InsecureRedirectError)
    assert "reg.example/etc/passwd" not in str(caught.value)
    assert "insecure" not in str(caught.value).lower()


def test_broken_redirect_from_storage_fails_at_its_first_answer(mode: str) -> None:
    """A hop after the first is checked the same way: storage's own broken 307 ends it."""

    def respond(request: httpx.Request) -> httpx.Response:
        if request.url.host == "reg.example":
            return redirect(307, f"https://store.example/blob?sig={SIGNATURE}")
        return redirect(307, "https://store.example/next\r\n")

    recorder = Recorder(respond)
    with pytest.raises(InvalidRedirectError) as caught:
        driver(mode, recorder).iterate(REPO, DIGEST)
    assert [r.url.host for r in recorder.requests] == ["reg.example", "store.example"]
    assert str(caught.value).startswith("307 redirect from https://store.example/blob?<redacted> ")
    assert SIGNATURE not in str(caught.value)


@pytest.mark.parametrize("status", REDIRECT_STATUSES)
@pytest.mark.parametrize(("action", "method"), [("iterate", "GET"), ("properties", "HEAD")])
def test_every_redirect_status_keeps_get_and_head(
    mode: str, status: int, action: str, method: str
) -> None:
    """GET stays GET and HEAD stays HEAD on all five, 303 included (it turns others to GET)."""
    recorder = registry_redirecting(status, "https://store.example/blob")
    result = getattr(driver(mode, recorder), action)(REPO, DIGEST)
    assert result == DATA if action == "iterate" else result.size == len(DATA)
    assert [(r.method, r.url.host) for r in recorder.requests] == [
        (method, "reg.example"),
        (method, "store.example"),
    ]


@pytest.mark.parametrize("status", REDIRECT_STATUSES)
def test_a_resumed_download_keeps_its_range_on_the_next_hop(
    mode: str, status: int, tmp_path: Path
) -> None:
    """A partial file from an earlier try: the download asks for the rest, through the
    registry's redirect, and storage gets the same ``Range``."""
    (tmp_path / f".sha256-{DIGEST[7:]}.partial").write_bytes(DATA[:400])
    recorder = registry_redirecting(status, "https://store.example/blob")
    target = tmp_path / "blob"
    driver(mode, recorder).to_file(REPO, DIGEST, target)
    assert target.read_bytes() == DATA
    assert [(r.method, r.url.host, r.headers.get("Range")) for r in recorder.requests] == [
        ("GET", "reg.example", "bytes=400-"),
        ("GET", "store.example", "bytes=400-"),
    ]


def test_a_broken_redirect_on_a_direct_part_falls_back_to_one_stream(
    mode: str, tmp_path: Path
) -> None:
    """Parallel parts ask storage directly; a broken redirect there is one more reason not to
    split (as any answer but the right 206 is), not the end of the download."""
    data = b"x" * (16 << 20)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()

    def respond(request: httpx.Request) -> httpx.Response:
        if request.url.host == "reg.example":
            return redirect(307, "https://store.example/blob")
        if "Range" in request.headers:
            return redirect(307, None)
        return httpx.Response(200, content=data)

    recorder = Recorder(respond)
    target = tmp_path / "blob"
    driver(mode, recorder).to_file(REPO, digest, target, max_concurrency=2)
    assert target.read_bytes() == data
    assert [r.headers.get("Range") is not None for r in recorder.requests] == [False, False, True]


def test_userinfo_in_a_location_is_sent_as_basic_auth_and_never_shown(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The registry's own credential for storage: Basic auth on that one request, the URL
    without it, and no log line of any logger (httpx's too) that shows it."""
    caplog.set_level(logging.DEBUG)
    location = f"https://storage-user:{SECRET}@store.example/blob?sig={SIGNATURE}"

    def respond(request: httpx.Request) -> httpx.Response:
        if request.url.host == "reg.example":
            if "Authorization" not in request.headers:
                return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
            return redirect(307, location)
        if request.url.path == "/blob":
            # Storage moves the blob once more, on its own origin, without user info.
            return redirect(307, "/moved")
        return blob(request)

    recorder = Recorder(respond)
    assert driver(mode, recorder, credential=("alice", "alice-pw")).iterate(REPO, DIGEST) == DATA
    challenged, registry, storage, moved = recorder.requests
    assert "Authorization" not in challenged.headers
    assert registry.headers["Authorization"] == basic("alice", "alice-pw")
    assert str(storage.url) == f"https://store.example/blob?sig={SIGNATURE}"
    assert storage.headers["Authorization"] == basic("storage-user", SECRET)
    # For that one request only: the next hop, even on storage's origin, carries nothing.
    assert str(moved.url) == "https://store.example/moved"
    assert "Authorization" not in moved.headers
    logged = "\n".join(f"{r.name} {r.getMessage()}" for r in caplog.records)
    assert "acr_blob GET https://store.example/blob?<redacted> -> 307" in logged
    assert SECRET not in logged
    assert base64.b64encode(f"storage-user:{SECRET}".encode()).decode() not in logged
    acr_blob_logged = [r.getMessage() for r in caplog.records if r.name == "acr_blob"]
    assert not any(SIGNATURE in line for line in acr_blob_logged)


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("location", "error", "says"),
    [
        (f"ftp://u:{SECRET}@store.example/blob", InvalidRedirectError, "'ftp://<redacted>@"),
        (f"https://u:{SECRET}@store.example/a b", InvalidRedirectError, "'https://<redacted>@"),
        (f"u:{SECRET}@store.example/blob", InvalidRedirectError, "scheme u: 'u:<redacted>@"),
        (f"http://u:{SECRET}@store.example/blob", InsecureRedirectError, "http://store.example/"),
    ],
    ids=["unsupported-scheme", "not-a-url", "no-slashes", "downgrade"],
)
def test_refused_redirects_never_show_the_userinfo(
    mode: str, caplog: pytest.LogCaptureFixture, location: str, error: type, says: str
) -> None:
    caplog.set_level(logging.DEBUG)
    recorder = registry_redirecting(307, location)
    with pytest.raises(error) as caught:
        driver(mode, recorder).iterate(REPO, DIGEST)
    assert len(recorder.requests) == 1
    assert says in str(caught.value)
    for shown in (str(caught.value), repr(caught.value), getattr(caught.value, "location", "")):
        assert SECRET not in shown
    assert SECRET not in "\n".join(r.getMessage() for r in caplog.records)


def test_errors_after_a_userinfo_redirect_never_show_it(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A storage error, and a loop, behind a Location with user info."""
    caplog.set_level(logging.DEBUG)
    location = f"https://u:{SECRET}@store.example/blob"

    def refuse(request: httpx.Request) -> httpx.Response:
        if request.url.host == "reg.example":
            return redirect(307, location)
        return httpx.Response(403, content=b"<Error><Code>AccessDenied</Code></Error>")

    with pytest.raises(StorageError) as refused:
        driver(mode, Recorder(refuse)).iterate(REPO, DIGEST)
    loop = Recorder(lambda request: redirect(307, location))
    with pytest.raises(TooManyRedirectsError) as looped:
        driver(mode, loop, max_redirects=2).iterate(REPO, DIGEST)
    assert len(loop.requests) == 3
    assert str(refused.value) == "storage answered 403 for https://store.example/blob: AccessDenied"
    assert str(looped.value) == "more than 2 redirects, last to https://store.example/blob"
    for shown in (repr(refused.value), repr(looped.value), caplog.text):
        assert SECRET not in shown


def test_userinfo_is_never_sent_over_plain_http_beyond_loopback(mode: str) -> None:
    recorder = Recorder(lambda request: redirect(307, f"http://u:{SECRET}@store.example/blob"))
    with pytest.raises(InsecureRedirectError) as caught:
        driver(mode, recorder, endpoint="http://reg.example").iterate(REPO, DIGEST)
    assert len(recorder.requests) == 1
    assert str(caught.value) == (
        "refusing to send a redirect's user info over plain http to http://store.example/blob"
    )


def test_userinfo_goes_over_plain_http_to_loopback(mode: str) -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        if request.url.port == 5000:
            return redirect(307, f"http://u:{SECRET}@127.0.0.1:9000/blob")
        return blob(request)

    recorder = Recorder(respond)
    assert driver(mode, recorder, endpoint="http://127.0.0.1:5000").iterate(REPO, DIGEST) == DATA
    assert str(recorder.requests[1].url) == "http://127.0.0.1:9000/blob"
    assert recorder.requests[1].headers["Authorization"] == basic("u", SECRET)


def test_urls_in_messages_keep_their_escapes(mode: str) -> None:
    """A ``%0d%0a`` in a followed URL's path stays escaped in the message, never a line break."""
    loop = Recorder(lambda request: redirect(307, "/v2/x%0d%0aInjected:%20yes"))
    with pytest.raises(TooManyRedirectsError) as caught:
        driver(mode, loop, max_redirects=1).iterate(REPO, DIGEST)
    assert str(caught.value) == (
        "more than 1 redirects, last to https://reg.example/v2/x%0d%0aInjected:%20yes"
    )


def test_the_follower_itself_refuses_a_redirect_without_location() -> None:
    """Without the clients' response hook too (a request sent by other code), the follower
    refuses a redirect it cannot follow rather than taking it for the final answer."""
    request = httpx.Request("GET", BLOB_URL)
    follower = RedirectFollower(request.url, parse_digest(DIGEST), max_redirects=10)
    with pytest.raises(InvalidRedirectError, match="has no Location header"):
        follower.next_request(httpx.Response(307, request=request))
    assert follower.next_request(httpx.Response(200, request=request)) is None


def test_userinfo_to_the_registry_itself_leaves_the_clients_credentials(mode: str) -> None:
    """On the registry's own origin the client's auth applies, over plain http too (where the
    client was allowed to send its own): the user info is dropped, not refused."""

    def respond(request: httpx.Request) -> httpx.Response:
        if "Authorization" not in request.headers:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})
        if request.url.path != "/moved":
            return redirect(307, f"http://u:{SECRET}@reg.example/moved")
        return blob(request)

    recorder = Recorder(respond)
    client = driver(
        mode, recorder, "http://reg.example", credential=("alice", "pw"), allow_insecure=True
    )
    assert client.iterate(REPO, DIGEST) == DATA
    moved = recorder.requests[-1]
    assert str(moved.url) == "http://reg.example/moved"
    assert moved.headers["Authorization"] == basic("alice", "pw")
