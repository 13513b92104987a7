"""parse_blob_reference: image-style blob references, REGISTRY/REPOSITORY@DIGEST."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from acr_blob.errors import InvalidDigestError, InvalidEndpointError, InvalidRepositoryError
from acr_blob.references import BlobReference, parse_blob_reference

HEX = "6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3b"
DIGEST = f"sha256:{HEX}"


@pytest.mark.parametrize(
    ("text", "endpoint", "repository"),
    [
        ("myregistry.azurecr.io/prod/bash", "https://myregistry.azurecr.io", "prod/bash"),
        ("myregistry.azurecr.io:443/prod/bash", "https://myregistry.azurecr.io:443", "prod/bash"),
        ("localhost/bash", "https://localhost", "bash"),
        ("localhost:5000/a/b/c", "https://localhost:5000", "a/b/c"),
        ("registry:5000/bash", "https://registry:5000", "bash"),
        ("[::1]:5000/bash", "https://[::1]:5000", "bash"),
        ("MyRegistry/bash", "https://myregistry", "bash"),  # uppercase: a host, as in Docker
        ("http://127.0.0.1:5000/library/busybox", "http://127.0.0.1:5000", "library/busybox"),
        ("HTTP://127.0.0.1:5000/busybox", "http://127.0.0.1:5000", "busybox"),
        ("https://registry/bash", "https://registry", "bash"),  # a scheme makes it a host
        ("http://[::1]/bash", "http://[::1]", "bash"),
        ("myregistry.azurecr.io/prod/bash:5.2", "https://myregistry.azurecr.io", "prod/bash"),
        ("docker.io/ubuntu", "https://registry-1.docker.io", "library/ubuntu"),
        ("index.docker.io/bitnami/redis", "https://registry-1.docker.io", "bitnami/redis"),
        ("registry-1.docker.io/library/ubuntu", "https://registry-1.docker.io", "library/ubuntu"),
        ("registry-1.docker.io/ubuntu", "https://registry-1.docker.io", "library/ubuntu"),
        ("Index.Docker.IO/ubuntu", "https://registry-1.docker.io", "library/ubuntu"),
        ("https://docker.io/ubuntu", "https://registry-1.docker.io", "library/ubuntu"),
    ],
)
def test_parses_references(text: str, endpoint: str, repository: str) -> None:
    parsed = parse_blob_reference(f"{text}@{DIGEST}")
    assert parsed == BlobReference(endpoint=endpoint, repository=repository, digest=DIGEST)
    # str() is canonical and parses back to the same reference.
    assert parse_blob_reference(str(parsed)) == parsed


def test_str_is_the_familiar_form() -> None:
    assert str(parse_blob_reference(f"myregistry.azurecr.io/prod/bash@{DIGEST}")) == (
        f"myregistry.azurecr.io/prod/bash@{DIGEST}"
    )
    assert str(parse_blob_reference(f"http://127.0.0.1:5000/a@{DIGEST}")) == (
        f"http://127.0.0.1:5000/a@{DIGEST}"
    )
    assert str(parse_blob_reference(f"https://registry/a@{DIGEST}")) == (
        f"https://registry/a@{DIGEST}"
    )


def test_is_frozen_and_accepts_sha512() -> None:
    parsed = parse_blob_reference("r.io/a@sha512:" + "ab" * 64)
    assert parsed.digest == "sha512:" + "ab" * 64
    with pytest.raises(AttributeError):
        parsed.repository = "b"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        (f"prod/bash@{DIGEST}", InvalidEndpointError, "no registry in blob reference"),
        (f"ubuntu@{DIGEST}", InvalidEndpointError, "Docker Hub is not assumed"),
        (f"library/ubuntu@{DIGEST}", InvalidEndpointError, "no registry"),
        (f"myregistry.azurecr.io@{DIGEST}", InvalidEndpointError, "no registry"),
        ("", InvalidEndpointError, "no registry"),
        (f"ftp://r.io/a@{DIGEST}", InvalidEndpointError, "only https:// and http://"),
        (f"r_1.io/a@{DIGEST}", InvalidEndpointError, "invalid registry 'r_1.io'"),
        (f"r.io:99999/a@{DIGEST}", InvalidEndpointError, "invalid registry 'r.io:99999'"),
        (f"r.io:0/a@{DIGEST}", InvalidEndpointError, "invalid registry"),
        (f"-r.io/a@{DIGEST}", InvalidEndpointError, "invalid registry"),
        (f"http:///a@{DIGEST}", InvalidEndpointError, "invalid registry ''"),
        ("r.io/prod/bash:latest", InvalidDigestError, "'latest' is a tag"),
        ("r.io:5000/prod/bash", InvalidDigestError, "no digest"),
        ("r.io/prod/bash@", InvalidDigestError, "no digest"),
        ("r.io/prod/bash@sha256:ABC", InvalidDigestError, "64 lowercase hex digits"),
        ("r.io/prod/bash@md5:" + "0" * 32, InvalidDigestError, "unsupported algorithm"),
        (f"r.io/@{DIGEST}", InvalidRepositoryError, "names no repository"),
        (f"http://127.0.0.1:5000@{DIGEST}", InvalidRepositoryError, "names no repository"),
        ("https://alice:hunter2@r.io", InvalidRepositoryError, "names no repository"),
        (f"r.io/Prod/bash@{DIGEST}", InvalidRepositoryError, "'Prod/bash'"),
        (f"r.io/prod//bash@{DIGEST}", InvalidRepositoryError, "'prod//bash'"),
        (f"r.io/prod/bash:-x@{DIGEST}", InvalidRepositoryError, "not a tag"),
        (f"r.io/a:b:c@{DIGEST}", InvalidRepositoryError, "'a:b'"),
    ],
)
def test_refuses_what_names_no_blob(text: str, error: type[Exception], message: str) -> None:
    with pytest.raises(error) as raised:
        parse_blob_reference(text)
    assert message in str(raised.value)
    assert isinstance(raised.value, ValueError)


@pytest.mark.parametrize(
    "text",
    [
        f"https://alice:hunter2@r.io/prod/bash@{DIGEST}",
        "http://alice:hunter2@r.io/prod/bash:latest",
        f"alice:hunter2@r.io/prod/bash@{DIGEST}",
    ],
)
def test_credentials_in_a_reference_are_refused_without_echo(text: str) -> None:
    with pytest.raises(InvalidEndpointError) as raised:
        parse_blob_reference(text)
    assert "credentials do not belong" in str(raised.value)
    assert "hunter2" not in str(raised.value) + repr(raised.value)


def test_not_a_string() -> None:
    with pytest.raises(InvalidEndpointError, match="a blob reference is a string"):
        parse_blob_reference(b"r.io/a@sha256:" + HEX.encode())  # type: ignore[arg-type]


_component = st.from_regex(r"[a-z0-9]{1,8}(?:[._-][a-z0-9]{1,8})?", fullmatch=True)
_host = st.one_of(
    st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]\.[a-z]{2,6}", fullmatch=True),
    st.sampled_from(["localhost", "127.0.0.1", "[::1]"]),
)


@given(
    scheme=st.sampled_from(["", "https://", "http://"]),
    host=_host,
    port=st.one_of(st.none(), st.integers(1, 65535)),
    components=st.lists(_component, min_size=1, max_size=4),
    tag=st.one_of(st.none(), st.from_regex(r"\w[\w.-]{0,20}", fullmatch=True)),
    hex_digits=st.from_regex(r"[0-9a-f]{64}", fullmatch=True),
)
def test_any_well_formed_reference_parses_back(
    scheme: str,
    host: str,
    port: int | None,
    components: list[str],
    tag: str | None,
    hex_digits: str,
) -> None:
    registry = host if port is None else f"{host}:{port}"
    repository = "/".join(components)
    text = f"{scheme}{registry}/{repository}{'' if tag is None else ':' + tag}@sha256:{hex_digits}"
    parsed = parse_blob_reference(text)
    assert parsed.endpoint == f"{scheme or 'https://'}{registry}"
    assert parsed.repository == repository
    assert parsed.digest == f"sha256:{hex_digits}"
    assert parse_blob_reference(str(parsed)) == parsed


@given(st.text(max_size=200))
def test_any_text_parses_or_raises_a_value_error(text: str) -> None:
    try:
        parsed = parse_blob_reference(text)
    except (InvalidEndpointError, InvalidDigestError, InvalidRepositoryError):
        return
    assert parsed.endpoint.startswith(("https://", "http://"))
    assert parse_blob_reference(str(parsed)) == parsed
