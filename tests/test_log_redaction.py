"""The filter ``import acr_blob`` puts on httpx's and httpcore's loggers: crafted records, then
whole downloads through the real S3 and token testbeds with the root logger at DEBUG."""

from __future__ import annotations

import base64
import io
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, quote

import httpcore
import httpx
import pytest

import acr_blob
from acr_blob._log_redaction import log_redaction_enabled, redact_text
from tests.drivers import Driver
from tools.testbed import BlobFactory, Deployment
from tools.testbed.motoserver import ACCESS_KEY, SECRET_KEY

SAS = (
    "https://acct.blob.core.windows.net/registry/docker/blob/data"
    "?sv=2022-11-02&se=2030-01-01T00%3A00%3A00Z&sr=b&sp=r&sig=Zm9vYmFy%2BYmF6%3D"
)
PRESIGNED = (
    "http://127.0.0.2:9000/bucket/docker/blob/data?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIAEXAMPLE%2F20300101%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Date=20300101T000000Z&X-Amz-Expires=1200&X-Amz-SignedHeaders=host"
    "&X-Amz-Security-Token=FwoGZXIvYXdzEXAMPLE&X-Amz-Signature=0123456789abcdef"
)
SECRETS = ("Zm9vYmFy", "AKIAEXAMPLE", "FwoGZXIvYXdzEXAMPLE", "0123456789abcdef", "2030-01-01T00")
HTTPX_FORMAT = 'HTTP Request: %s %s "%s %d %s"'


@pytest.fixture(autouse=True)
def redaction_on() -> Iterator[None]:
    """Every test starts and ends with the filter on, as ``import acr_blob`` leaves it."""
    acr_blob.enable_log_redaction()
    yield
    acr_blob.enable_log_redaction()


class Captured(logging.Handler):
    """Formats every record it sees, as a log file would keep it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
        self.stream = io.StringIO()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.stream.write(self.format(record) + "\n")

    def clear(self) -> None:
        self.records.clear()
        self.stream = io.StringIO()

    @property
    def text(self) -> str:
        return self.stream.getvalue()


@pytest.fixture
def captured() -> Iterator[Captured]:
    """A handler on the root logger, which is at DEBUG, as are httpx's and httpcore's."""
    handler = Captured()
    root = logging.getLogger()
    names = ["", "httpx", "httpcore", "acr_blob"]
    saved = [logging.getLogger(name).level for name in names]
    for name in names:
        logging.getLogger(name).setLevel(logging.DEBUG)
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        for name, level in zip(names, saved, strict=True):
            logging.getLogger(name).setLevel(level)


def httpx_line(url: httpx.URL | str) -> tuple[str, tuple[object, ...]]:
    return HTTPX_FORMAT, ("GET", url, "HTTP/1.1", 200, "OK")


def log_request(url: httpx.URL) -> None:
    """What httpx logs for each request."""
    msg, args = httpx_line(url)
    logging.getLogger("httpx").info(msg, *args)


# ---------------------------------------------------------------------------------------------
# Crafted records


def test_httpx_request_line_with_a_sas_url(captured: Captured) -> None:
    log_request(httpx.URL(SAS))
    [record] = captured.records
    assert isinstance(record.args, tuple) and isinstance(record.args[1], httpx.URL)
    assert record.getMessage() == (
        "HTTP Request: GET https://acct.blob.core.windows.net/registry/docker/blob/data"
        '?sv=2022-11-02&se=REDACTED&sr=b&sp=r&sig=REDACTED "HTTP/1.1 200 OK"'
    )


def test_httpx_request_line_with_an_s3_presigned_url(captured: Captured) -> None:
    log_request(httpx.URL(PRESIGNED))
    message = captured.records[0].getMessage()
    assert message == (
        "HTTP Request: GET http://127.0.0.2:9000/bucket/docker/blob/data"
        "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=REDACTED&X-Amz-Date=20300101T000000Z"
        "&X-Amz-Expires=1200&X-Amz-SignedHeaders=host&X-Amz-Security-Token=REDACTED"
        '&X-Amz-Signature=REDACTED "HTTP/1.1 200 OK"'
    )
    assert not any(secret in captured.text for secret in SECRETS)


def test_httpcore_child_loggers_headers(captured: Captured) -> None:
    headers = [
        (b"Location", PRESIGNED.encode()),
        (b"Set-Cookie", b"session=s3cret-cookie; Path=/"),
        (b"Content-Length", b"0"),
    ]
    logging.getLogger("httpcore.http11").debug(
        "receive_response_headers.complete return_value="
        + repr((b"HTTP/1.1", 307, b"Temporary Redirect", headers))
    )
    logging.getLogger("httpcore.proxy").debug(
        "send_request_headers.started headers="
        + repr([(b"Authorization", b"Bearer eyJhbGciOi.secret-jwt.sig"), (b"Host", b"r.io")])
    )
    logging.getLogger("httpcore.connection").debug(
        "connect_tcp.started host='r.io' port=443 local_address=None timeout=5"
    )
    first, second, third = (r.getMessage() for r in captured.records)
    assert "(b'Set-Cookie', b'REDACTED'), (b'Content-Length', b'0')" in first
    assert "X-Amz-Expires=1200&X-Amz-SignedHeaders=host" in first
    assert "X-Amz-Signature=REDACTED'), (b'Set-Cookie'" in first
    assert second == (
        "send_request_headers.started headers="
        "[(b'Authorization', b'Bearer REDACTED'), (b'Host', b'r.io')]"
    )
    assert third == "connect_tcp.started host='r.io' port=443 local_address=None timeout=5"
    for secret in (*SECRETS, "s3cret-cookie", "secret-jwt"):
        assert secret not in captured.text


def test_structured_arguments() -> None:
    record = logging.LogRecord("httpx", logging.DEBUG, __file__, 1, "%s %s %s", None, None)
    record.args = (
        [(b"authorization", b"Basic YWxpY2U6cw=="), (b"accept", b"*/*")],
        (("Cookie", "id=1"),),
        b"GET /v2/?token=abc",
    )
    logging.getLogger("httpx").handle(record)
    assert record.args == (
        [(b"authorization", b"Basic REDACTED"), (b"accept", b"*/*")],
        (("Cookie", "REDACTED"),),
        b"GET /v2/?token=REDACTED",
    )
    mapping = logging.LogRecord(
        "httpx", logging.INFO, __file__, 1, "%(url)s", ({"url": httpx.URL(SAS)},), None
    )
    logging.getLogger("httpx").handle(mapping)
    assert mapping.getMessage().endswith("sp=r&sig=REDACTED")


def test_a_record_without_secrets_is_left_as_it_is(captured: Captured) -> None:
    url = httpx.URL("https://r.io/v2/library/bash/blobs/sha256:" + "a" * 64 + "?n=1&last=x")
    msg, args = httpx_line(url)
    logging.getLogger("httpx").info(msg, *args)
    line = "receive_response_headers.complete return_value=(b'HTTP/1.1', 200, b'OK', [])"
    logging.getLogger("httpcore.http11").debug(line)
    httpx_record, httpcore_record = captured.records
    assert httpx_record.args == args and httpx_record.args[1] is url
    assert httpx_record.msg is msg
    assert httpcore_record.msg is line
    assert str(url) in captured.text


def test_other_loggers_are_left_alone(captured: Captured) -> None:
    logging.getLogger("myapp").info("GET %s", SAS)
    logging.getLogger("myapp").info(SAS)
    assert [r.getMessage() for r in captured.records] == [f"GET {SAS}", SAS]


def test_url_passwords_and_readable_urls() -> None:
    assert redact_text("https://alice:pw%40x@r.io:5000/v2/?q=1") == (
        "https://alice:REDACTED@r.io:5000/v2/?q=1"
    )
    assert redact_text("https://alice@r.io/v2/") == "https://alice@r.io/v2/"
    # httpx's URL objects are split on their own delimiters, whatever a value holds.
    record = logging.LogRecord("httpx", logging.INFO, __file__, 1, "%s", None, None)
    record.args = (httpx.URL("https://alice:pw@r.io/b?sp=r&sig=ab'c d\"e&se=1&flag"),)
    logging.getLogger("httpx").handle(record)
    assert record.getMessage() == "https://alice:REDACTED@r.io/b?sp=r&sig=REDACTED&se=REDACTED&flag"
    # Case does not matter, nor an encoded name; anything named like a signature is one.
    assert redact_text("/b?SIG=a&x-goog-signature=b&X%2DAmz%2DSignature=c&Token=d&sp=r") == (
        "/b?SIG=REDACTED&x-goog-signature=REDACTED&X%2DAmz%2DSignature=REDACTED&Token=REDACTED&sp=r"
    )
    # A relative Location, as httpcore shows it; and what is already redacted stays so.
    relative = "(b'Location', b'/v2/x/blobs/uploads/1?_state=abc&digest=sha256:00')"
    assert redact_text(relative) == relative
    done = "GET http://s/blob?<redacted> -> 200"
    assert redact_text(done) == done
    assert redact_text(redact_text(SAS)) == redact_text(SAS)
    challenge = "(b'WWW-Authenticate', b'Bearer realm=\"https://r.io/token\",service=\"r.io\"')"
    assert redact_text(challenge) == challenge
    assert redact_text("{'authorization': 'Bearer x.y.z', 'cookie': 'a=b'}") == (
        "{'authorization': 'Bearer REDACTED', 'cookie': 'REDACTED'}"
    )
    assert redact_text("[(b'Proxy-Authorization', b'opaque')]") == (
        "[(b'Proxy-Authorization', b'REDACTED')]"
    )


def test_turning_it_off_lets_the_secret_through(captured: Captured) -> None:
    assert log_redaction_enabled()
    acr_blob.disable_log_redaction()
    assert not log_redaction_enabled()
    log_request(httpx.URL(SAS))
    logging.getLogger("httpcore.http11").debug(f"return_value=[(b'Location', b'{PRESIGNED}')]")
    assert "sig=Zm9vYmFy" in captured.text
    assert "X-Amz-Signature=0123456789abcdef" in captured.text
    acr_blob.enable_log_redaction()
    acr_blob.enable_log_redaction()  # twice: still one filter
    assert len(logging.getLogger("httpx").filters) == 1
    log_request(httpx.URL(SAS))
    assert "sig=REDACTED" in captured.records[-1].getMessage()


def test_every_logger_httpx_and_httpcore_create_records_on_is_covered() -> None:
    # Read from the installed sources: a logger a new httpcore adds fails this test.
    names = {"httpx"}
    for module in (httpx, httpcore):
        assert module.__file__ is not None
        for path in Path(module.__file__).parent.rglob("*.py"):
            names.update(re.findall(r"getLogger\(\s*[\"']([\w.]+)[\"']", path.read_text()))
    assert {"httpcore.http11", "httpcore.connection", "httpcore.proxy"} <= names
    for name in names:
        assert [type(f).__name__ for f in logging.getLogger(name).filters] == [
            "_RedactingFilter"
        ], name


# ---------------------------------------------------------------------------------------------
# Whole downloads through the testbeds


def secrets_of(deployment: Deployment, sent: list[httpx.Request]) -> set[str]:
    """Every secret value the download handled: query signatures, tokens, the password."""
    assert deployment.auth is not None and deployment.proxy is not None
    user, password = deployment.auth
    found = {password, base64.b64encode(f"{user}:{password}".encode()).decode()}
    found |= {ACCESS_KEY, SECRET_KEY}
    presigned = deployment.proxy.presigned_requests
    assert presigned, "the download did not follow the redirect to storage"
    for request in presigned:
        for name, value in parse_qsl(request.query):
            if name in ("X-Amz-Signature", "X-Amz-Credential", "X-Amz-Security-Token"):
                found |= {value, quote(value, safe="")}
    for request in sent:
        authorization = request.headers.get("Authorization")
        if authorization is not None:
            found.add(authorization.split(" ", 1)[1])
    return found


@pytest.mark.parametrize("registry", ["s3_basic_registry", "token_s3_registry"])
def test_a_download_at_debug_logs_no_secret(
    registry: str,
    mode: str,
    blob_factory: BlobFactory,
    repository: str,
    tmp_path: Path,
    captured: Captured,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    caplog.set_level(logging.DEBUG)
    deployment: Deployment = request.getfixturevalue(registry)
    digest, data = blob_factory(deployment, 50_000)
    # Only the download's records: the testbed's own set-up (boto3 creating moto's bucket on
    # first use) logs its credentials at DEBUG.
    captured.clear()
    caplog.clear()
    sent: list[httpx.Request] = []
    driver = Driver(mode, deployment.url, credential=deployment.auth, record=sent)
    driver.to_file(repository, digest, tmp_path / "blob")
    assert (tmp_path / "blob").read_bytes() == data
    secrets = secrets_of(deployment, sent)
    if registry == "token_s3_registry":
        assert any(r.headers.get("Authorization", "").startswith("Bearer ") for r in sent)
    logs = captured.text + caplog.text
    for record in captured.records:
        logs += f"{record.msg!r} {record.args!r}\n"
    leaked = sorted(secret for secret in secrets if secret in logs)
    assert not leaked, f"secrets in the log: {leaked}\n{logs}"
    # Secret-free URLs stay readable, and the storage request was logged, only redacted.
    assert f'HTTP Request: GET {deployment.blob_url(repository, digest)} "HTTP/1.1 307' in logs
    assert "X-Amz-Signature=REDACTED" in logs and "X-Amz-Credential=REDACTED" in logs
    assert "X-Amz-Expires=" in logs
    assert "httpcore.http11 receive_response_headers.complete" in logs


def test_without_the_filter_the_same_download_leaks(
    s3_basic_registry: Deployment,
    blob_factory: BlobFactory,
    repository: str,
    tmp_path: Path,
    captured: Captured,
) -> None:
    """What the test above looks for is there to be found, should the filter fail."""
    digest, _ = blob_factory(s3_basic_registry, 1000)
    acr_blob.disable_log_redaction()
    sent: list[httpx.Request] = []
    driver = Driver("sync", s3_basic_registry.url, credential=s3_basic_registry.auth, record=sent)
    driver.to_file(repository, digest, tmp_path / "blob")
    assert s3_basic_registry.proxy is not None
    [presigned] = s3_basic_registry.proxy.presigned_requests
    signature = dict(parse_qsl(presigned.query))["X-Amz-Signature"]
    assert f"X-Amz-Signature={signature}" in captured.text
