"""Readable reprs: every error shows its class, its message and the attributes that tell errors of
one class apart; BlobProperties shows every field; nothing secret shows anywhere."""

from __future__ import annotations

import httpx
import pytest

import acr_blob
import acr_blob.errors
from acr_blob import (
    AuthenticationError,
    BasicCredential,
    BlobClient,
    BlobError,
    BlobNotFoundError,
    BlobProperties,
    BlobSizeError,
    CredentialHelperError,
    DigestMismatchError,
    DiskFullError,
    DockerConfigError,
    InvalidDigestError,
    RefreshTokenCredential,
    RegistryAuth,
    RegistryError,
    RetryPolicy,
    StorageError,
    TransportError,
)
from acr_blob_api.models import AcrErrorInfo

DIGEST = "sha256:" + "ab" * 32
OTHER = "sha256:" + "cd" * 32
SIGNATURE = "X-Amz-Signature=0123456789abcdef"


def test_every_error_class_has_the_readable_repr() -> None:
    exported = [getattr(acr_blob, name) for name in acr_blob.__all__]
    classes = [c for c in exported if isinstance(c, type) and issubclass(c, Exception)]
    assert len(classes) == 25
    # Every one is defined in errors.py and listed there, whichever module raises it.
    assert {c.__module__ for c in classes} == {"acr_blob.errors"}
    assert sorted(c.__name__ for c in classes) == sorted(acr_blob.errors.__all__)
    for cls in classes:
        assert cls.__repr__ is BlobError.__repr__, f"{cls.__name__} overrides the common repr"
        assert cls.__doc__ and "Example::" in cls.__doc__, cls.__name__


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (BlobError("this download has already been read or closed"),
         "BlobError('this download has already been read or closed')"),
        (TransportError("download broke off after 10 of 20 bytes"),
         "TransportError('download broke off after 10 of 20 bytes')"),
        (InvalidDigestError("sha256:1234", "sha256 takes 64 lowercase hex digits"),
         "InvalidDigestError(\"invalid digest 'sha256:1234': sha256 takes 64 lowercase hex "
         "digits\")"),
        (BlobNotFoundError(404, [AcrErrorInfo(code="BLOB_UNKNOWN", message="blob unknown")],
                           url="https://r.test/v2/a/blobs/" + DIGEST),
         f"BlobNotFoundError('registry answered 404 for https://r.test/v2/a/blobs/{DIGEST}: "
         "BLOB_UNKNOWN: blob unknown', status_code=404, codes=['BLOB_UNKNOWN'])"),
        (RegistryError(502, excerpt="<html>Bad Gateway</html>"),
         "RegistryError(\"registry answered 502: '<html>Bad Gateway</html>'\", status_code=502)"),
        (AuthenticationError(401, [AcrErrorInfo(code="UNAUTHORIZED")], scope="repository:a:pull"),
         "AuthenticationError('registry answered 401: UNAUTHORIZED (scope repository:a:pull)', "
         "status_code=401, codes=['UNAUTHORIZED'], scope='repository:a:pull')"),
        (StorageError(403, "AccessDenied", url="http://s.test/b?<redacted>"),
         "StorageError('storage answered 403 for http://s.test/b?<redacted>: AccessDenied', "
         "status_code=403, code='AccessDenied')"),
        # The service's ids end the message (what its support asks for); the client's does not.
        (StorageError(403, "AuthorizationPermissionMismatch", request_id="r-1",
                      client_request_id="c-1"),
         "StorageError('storage answered 403: AuthorizationPermissionMismatch "
         "[x-ms-request-id: r-1]', status_code=403, code='AuthorizationPermissionMismatch')"),
        (AuthenticationError(401, [AcrErrorInfo(code="UNAUTHORIZED")], scope="repository:a:pull",
                             correlation_id="k-2"),
         "AuthenticationError('registry answered 401: UNAUTHORIZED (scope repository:a:pull) "
         "[x-ms-correlation-request-id: k-2]', status_code=401, codes=['UNAUTHORIZED'], "
         "scope='repository:a:pull')"),
        (DigestMismatchError(DIGEST, OTHER, source="Docker-Content-Digest"),
         f"DigestMismatchError('digest mismatch: requested {DIGEST}, Docker-Content-Digest "
         f"header is {OTHER}', source='Docker-Content-Digest')"),
        (BlobSizeError(100, 90),
         "BlobSizeError('body ended early: Content-Length is 100 bytes, received 90')"),
        (DockerConfigError("Docker config /c.json is not valid JSON", path="/c.json"),
         "DockerConfigError('Docker config /c.json is not valid JSON', path='/c.json')"),
        (CredentialHelperError("helper failed", helper="docker-credential-x", exit_code=1),
         "CredentialHelperError('helper failed', helper='docker-credential-x', exit_code=1, "
         "path=None)"),
        (DiskFullError("/data/layer.tar", 1000, 10),
         "DiskFullError('no room for /data/layer.tar: the blob needs 1000 more bytes, 10 bytes "
         "free', needed=1000, free=10)"),
    ],
)  # fmt: skip
def test_error_reprs(error: BlobError, expected: str) -> None:
    assert repr(error) == expected


def test_blob_properties_repr_shows_every_field() -> None:
    properties = BlobProperties(DIGEST, 1234, "application/octet-stream", f'"{DIGEST}"')
    assert repr(properties) == (
        f"BlobProperties(digest='{DIGEST}', size=1234, media_type='application/octet-stream', "
        f"etag='\"{DIGEST}\"')"
    )
    assert repr(BlobProperties(DIGEST, None)) == (
        f"BlobProperties(digest='{DIGEST}', size=None, media_type=None, etag=None)"
    )


def test_reprs_from_real_answers_name_the_error_and_hide_signatures() -> None:
    """A 404 from the registry, and a 403 from storage behind a signed redirect."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "storage.test":
            return httpx.Response(403, content=b"<Error><Code>AuthenticationFailed</Code></Error>")
        if request.url.path.endswith(OTHER):
            location = f"https://storage.test/blob?sv=2024&{SIGNATURE}"
            return httpx.Response(307, headers={"Location": location})
        body = b'{"errors": [{"code": "BLOB_UNKNOWN", "message": "blob unknown to registry"}]}'
        return httpx.Response(404, content=body, headers={"Content-Type": "application/json"})

    transport = httpx.MockTransport(handler)
    with BlobClient("registry.test", ("user", "pw-secret"), transport=transport,
                    retry=RetryPolicy.never()) as client:  # fmt: skip
        with pytest.raises(BlobNotFoundError) as missing:
            client.get_blob_properties("prod/bash", DIGEST)
        with pytest.raises(StorageError) as refused:
            client.download_blob("prod/bash", OTHER)
    assert repr(missing.value) == (
        "BlobNotFoundError('registry answered 404 for https://registry.test/v2/prod/bash/blobs/"
        f"{DIGEST}: BLOB_UNKNOWN: blob unknown to registry', status_code=404, "
        "codes=['BLOB_UNKNOWN'])"
    )
    assert repr(refused.value) == (
        "StorageError('storage answered 403 for https://storage.test/blob?<redacted>: "
        "AuthenticationFailed', status_code=403, code='AuthenticationFailed')"
    )
    for error in (missing.value, refused.value):
        assert "pw-secret" not in repr(error)
        assert SIGNATURE not in repr(error)


def test_credential_reprs_hide_secrets() -> None:
    assert repr(BasicCredential("ci", "pw-secret")) == (
        "BasicCredential(username='ci', password=<redacted>)"
    )
    assert repr(RefreshTokenCredential("tok-secret")) == "RefreshTokenCredential(<redacted>)"
    assert repr(RegistryAuth(BasicCredential("ci", "pw-secret"))) == "RegistryAuth(BasicCredential)"
