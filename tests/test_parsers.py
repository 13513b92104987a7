"""Property tests of everything that parses untrusted text: only the typed errors come out."""

from __future__ import annotations

import hashlib
import re

import httpx
from hypothesis import given
from hypothesis import strategies as st

from acr_blob import Digest, InvalidDigestError, InvalidRepositoryError, parse_digest
from acr_blob import validate_repository as check_repository
from acr_blob._protocol import RedirectFollower, error_for, excerpt
from acr_blob.errors import RegistryError, StorageError

REPOSITORY = re.compile(r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*")


@given(st.text())
def test_parse_digest_accepts_exactly_the_grammar(text: str) -> None:
    try:
        digest = parse_digest(text)
    except InvalidDigestError as error:
        assert isinstance(error, ValueError)
        return
    assert str(digest) == text
    assert re.fullmatch(r"sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}", text)


@given(st.sampled_from(["sha256", "sha512"]), st.binary())
def test_real_digests_parse(algorithm: str, data: bytes) -> None:
    text = f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"
    assert parse_digest(text) == Digest(algorithm, text.partition(":")[2])


@given(st.text(alphabet="abc019._-/", max_size=300) | st.text())
def test_validate_repository_accepts_exactly_the_grammar(text: str) -> None:
    try:
        assert check_repository(text) == text
    except InvalidRepositoryError as error:
        assert isinstance(error, ValueError)
        assert not REPOSITORY.fullmatch(text) or len(text) > 255
        return
    assert REPOSITORY.fullmatch(text) and len(text) <= 255


@given(st.binary(max_size=2000))
def test_excerpt_is_short_printable_text(body: bytes) -> None:
    text = excerpt(body)
    assert len(text) <= 200
    assert text.isprintable()


@given(st.text(alphabet="abcXYZ019-_", min_size=8, max_size=40), st.binary(max_size=200))
def test_excerpt_hides_query_values_and_auth_credentials(secret: str, noise: bytes) -> None:
    for body in (
        f"failed for https://s/x?sig={secret}&sv=1".encode(),
        f"<Message>https://s/x?X-Amz-Signature={secret}</Message>".encode(),
        f"header was Bearer {secret}".encode(),
        f"<ArgumentValue>Basic {secret}</ArgumentValue>".encode(),
    ):
        assert secret not in excerpt(noise.replace(b"\x00", b"") + b" " + body)


@given(st.integers(min_value=300, max_value=599), st.binary(max_size=500), st.booleans())
def test_error_for_any_body_is_typed(status: int, body: bytes, from_storage: bool) -> None:
    registry = httpx.URL("https://registry.test/v2/a/blobs/sha256:" + "0" * 64)
    url = httpx.URL("https://storage.test/x?sig=1") if from_storage else registry
    response = httpx.Response(status, content=body, request=httpx.Request("GET", url))
    follower = RedirectFollower(registry, parse_digest("sha256:" + "0" * 64), 10)
    error = error_for(response, body, follower)
    assert isinstance(error, StorageError if from_storage else RegistryError)
    assert error.status_code == status
    assert str(error) and repr(error)
