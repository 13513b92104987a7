"""Credentials from Docker's config.json and from real (fake) credential helper programs."""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from acr_blob.credentials import BasicCredential, RefreshTokenCredential
from acr_blob.docker_config import (
    CredentialHelperError,
    DockerConfigError,
    docker_config_credential,
    docker_config_path,
)
from acr_blob.errors import BlobError, InvalidEndpointError
from acr_blob.references import (
    DOCKER_HUB_CONFIG_KEY,
    DOCKER_HUB_ENDPOINT,
    DOCKER_HUB_HOSTS,
    parse_blob_reference,
)

ACR = "myregistry.azurecr.io"
SECRET = "s3cret-Secret-9f2c"

# The helper answers from <name>.json next to it and logs every request to <name>.log (one JSON
# string per line), so that tests see exactly what was written to its stdin. An answer with a
# "Username" is a credential; otherwise it is a set of misbehaviours: "sleep", "grandchild"
# (sleeps too, holding the pipes), "stdout", "stderr", "exit".
HELPER_SOURCE = """\
import json, pathlib, subprocess, sys, time

here = pathlib.Path(__file__).resolve().parent
name = pathlib.Path(__file__).name.removeprefix("docker-credential-")
answers = json.loads((here / (name + ".json")).read_text())
if sys.argv[1:] != ["get"]:
    sys.stderr.write("unexpected arguments: %r" % sys.argv[1:])
    sys.exit(2)
server = sys.stdin.read()
with open(here / (name + ".log"), "a") as log:
    log.write(json.dumps(server) + "\\n")
answer = answers.get(server)
if answer is None:
    print("credentials not found in native keychain")
    sys.exit(1)
if "Username" in answer:
    print(json.dumps(dict(answer, ServerURL=server)))
    sys.exit(0)
if "grandchild" in answer:
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(%d)" % answer["grandchild"]])
if "sleep" in answer:
    time.sleep(answer["sleep"])
sys.stdout.write(answer.get("stdout", ""))
sys.stderr.write(answer.get("stderr", ""))
sys.exit(answer.get("exit", 0))
"""

Helper = Callable[..., Path]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    path = tmp_path / "bin"
    path.mkdir()
    return path


@pytest.fixture
def environ(bin_dir: Path, tmp_path: Path) -> dict[str, str]:
    """Only the fake helpers are on PATH; HOME points away from the real user's config."""
    return {"PATH": str(bin_dir), "HOME": str(tmp_path / "home")}


@pytest.fixture
def helper(bin_dir: Path) -> Helper:
    """install(name, answers) writes docker-credential-<name>; returns the path of its log."""
    if os.name == "nt":
        pytest.skip("the fake helper is a script with a shebang line")

    def install(name: str, answers: dict[str, dict[str, Any]]) -> Path:
        script = bin_dir / f"docker-credential-{name}"
        # sys.executable, not `env python3`: the helper runs with the venv's interpreter even
        # though PATH holds nothing but bin_dir.
        script.write_text(f"#!{sys.executable}\n{HELPER_SOURCE}")
        script.chmod(0o755)
        (bin_dir / f"{name}.json").write_text(json.dumps(answers))
        return bin_dir / f"{name}.log"

    return install


def requests(log: Path) -> list[str]:
    """What the helper read on stdin, one entry per run."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def write_config(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(document))
    return path


def lookup(
    registry: str, config: Path, environ: dict[str, str], **kwargs: Any
) -> BasicCredential | RefreshTokenCredential | None:
    return docker_config_credential(registry, config_path=config, environ=environ, **kwargs)


# auths


def test_auth_field_is_base64_user_colon_password_split_at_the_first_colon(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    config = write_config(tmp_path, {"auths": {ACR: {"auth": b64(f"alice:{SECRET}:x")}}})
    assert lookup(ACR, config, environ) == BasicCredential("alice", f"{SECRET}:x")


def test_auth_field_without_padding_is_accepted(tmp_path: Path, environ: dict[str, str]) -> None:
    auth = b64("al:pw").rstrip("=")
    assert len(auth) % 4, "the test needs a value whose padding was dropped"
    config = write_config(tmp_path, {"auths": {ACR: {"auth": auth}}})
    assert lookup(ACR, config, environ) == BasicCredential("al", "pw")


def test_separate_username_and_password(tmp_path: Path, environ: dict[str, str]) -> None:
    config = write_config(tmp_path, {"auths": {ACR: {"username": "bob", "password": SECRET}}})
    assert lookup(ACR, config, environ) == BasicCredential("bob", SECRET)


def test_identitytoken_wins_over_auth(tmp_path: Path, environ: dict[str, str]) -> None:
    entry = {"auth": b64("00000000-0000-0000-0000-000000000000:"), "identitytoken": SECRET}
    config = write_config(tmp_path, {"auths": {ACR: entry}})
    assert lookup(ACR, config, environ) == RefreshTokenCredential(SECRET)


def test_empty_identitytoken_is_ignored(tmp_path: Path, environ: dict[str, str]) -> None:
    entry = {"auth": b64("carol:pw"), "identitytoken": ""}
    config = write_config(tmp_path, {"auths": {ACR: entry}})
    assert lookup(ACR, config, environ) == BasicCredential("carol", "pw")


@pytest.mark.parametrize(
    ("key", "registry"),
    [
        (f"https://{ACR}/v1/", ACR),
        (f"https://{ACR}", ACR),
        (ACR, f"https://{ACR}"),
        (ACR, f"https://{ACR}/v2/"),
        ("MyRegistry.AzureCR.io", ACR),
        (ACR, "MYREGISTRY.azurecr.io"),
        ("127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("http://127.0.0.1:5000", "127.0.0.1:5000"),
        ("http://127.0.0.1:5000/", "https://127.0.0.1:5000"),
        ("localhost:5000", "localhost:5000/library/ubuntu"),
    ],
)
def test_key_forms_match_after_normalising_both_sides(
    tmp_path: Path, environ: dict[str, str], key: str, registry: str
) -> None:
    config = write_config(tmp_path, {"auths": {key: {"auth": b64("u:p")}}})
    assert lookup(registry, config, environ) == BasicCredential("u", "p")


@pytest.mark.parametrize(
    ("key", "registry"),
    [
        ("127.0.0.1:5000", "127.0.0.1:5001"),
        ("127.0.0.1:5000", "127.0.0.1"),
        (ACR, "other.azurecr.io"),
        (ACR, f"{ACR}.evil.example"),
    ],
)
def test_other_hosts_and_ports_do_not_match(
    tmp_path: Path, environ: dict[str, str], key: str, registry: str
) -> None:
    config = write_config(tmp_path, {"auths": {key: {"auth": b64("u:p")}}})
    assert lookup(registry, config, environ) is None


def test_exact_key_wins_over_a_normalised_one(tmp_path: Path, environ: dict[str, str]) -> None:
    auths = {f"https://{ACR}": {"auth": b64("first:1")}, ACR: {"auth": b64("exact:2")}}
    config = write_config(tmp_path, {"auths": auths})
    assert lookup(ACR, config, environ) == BasicCredential("exact", "2")
    assert lookup(f"https://{ACR}/", config, environ) == BasicCredential("first", "1")


@pytest.mark.parametrize(
    "registry",
    ["docker.io", "index.docker.io", "registry-1.docker.io", "https://registry-1.docker.io/v2/"],
)
def test_docker_hub_aliases_match_the_v1_key(
    tmp_path: Path, environ: dict[str, str], registry: str
) -> None:
    config = write_config(
        tmp_path, {"auths": {"https://index.docker.io/v1/": {"auth": b64("hubuser:hubpass")}}}
    )
    assert lookup(registry, config, environ) == BasicCredential("hubuser", "hubpass")


# Docker Hub's names: each one a credential may be stored under, and each one a registry may be
# named by (the legacy config key included, as docker accepts it for `docker login`).
HUB_NAMES = [*sorted(DOCKER_HUB_HOSTS), DOCKER_HUB_CONFIG_KEY]


def test_docker_hub_names_are_docker_cli_and_containerd_ones() -> None:
    assert {"docker.io", "index.docker.io", "registry-1.docker.io"} == DOCKER_HUB_HOSTS
    assert DOCKER_HUB_CONFIG_KEY == "https://index.docker.io/v1/"


@pytest.mark.parametrize("named", HUB_NAMES)
@pytest.mark.parametrize("stored", HUB_NAMES)
def test_docker_hub_names_agree_with_blob_references(
    tmp_path: Path, environ: dict[str, str], stored: str, named: str
) -> None:
    config = write_config(tmp_path, {"auths": {stored: {"auth": b64("hubuser:hubpass")}}})
    assert lookup(named, config, environ) == BasicCredential("hubuser", "hubpass")
    # A blob reference naming Docker Hub by any of its hosts gets the endpoint whose credential
    # is that one (the CLI looks credentials up by the reference's endpoint).
    host = named.removeprefix("https://").partition("/")[0]
    reference = parse_blob_reference(f"{host}/ubuntu@sha256:{'ab' * 32}")
    assert (reference.endpoint, reference.repository) == (DOCKER_HUB_ENDPOINT, "library/ubuntu")
    assert lookup(reference.endpoint, config, environ) == BasicCredential("hubuser", "hubpass")


@pytest.mark.parametrize("stored", sorted(DOCKER_HUB_HOSTS))
def test_docker_hub_helpers_under_any_name_are_asked_for_the_v1_url(
    tmp_path: Path, environ: dict[str, str], helper: Helper, stored: str
) -> None:
    log = helper("hub", {DOCKER_HUB_CONFIG_KEY: {"Username": "hub", "Secret": "pw"}})
    config = write_config(tmp_path, {"credHelpers": {stored: "hub"}})
    for named in HUB_NAMES:
        assert lookup(named, config, environ) == BasicCredential("hub", "pw")
    assert requests(log) == [DOCKER_HUB_CONFIG_KEY] * len(HUB_NAMES)


def test_no_entry_for_the_host_is_none(tmp_path: Path, environ: dict[str, str]) -> None:
    config = write_config(tmp_path, {"auths": {"other.azurecr.io": {"auth": b64("u:p")}}})
    assert lookup(ACR, config, environ) is None


@pytest.mark.parametrize(
    "entry", [{}, None, {"auth": ""}, {"email": "a@example.com"}, {"username": "", "password": ""}]
)
def test_entry_with_nothing_usable_is_none(
    tmp_path: Path, environ: dict[str, str], entry: object
) -> None:
    config = write_config(tmp_path, {"auths": {ACR: entry}})
    assert lookup(ACR, config, environ) is None


def test_missing_file_is_none(tmp_path: Path, environ: dict[str, str]) -> None:
    assert lookup(ACR, tmp_path / "absent" / "config.json", environ) is None


@pytest.mark.parametrize("text", ["", "  \n", "null"])
def test_empty_file_is_an_empty_configuration(
    tmp_path: Path, environ: dict[str, str], text: str
) -> None:
    config = tmp_path / "config.json"
    config.write_text(text)
    assert lookup(ACR, config, environ) is None


# Broken files


def assert_no_leak(error: BaseException, *secrets: str) -> None:
    """Neither the message, the repr nor a chained exception may carry a secret."""
    for secret in secrets:
        assert secret not in str(error)
        assert secret not in repr(error)
    assert error.__cause__ is None
    assert error.__context__ is None


def test_invalid_json_names_the_file_without_its_content(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    config = tmp_path / "config.json"
    # Truncated, as a write interrupted half way leaves it.
    config.write_text(json.dumps({"auths": {ACR: {"auth": b64(f"u:{SECRET}")}}})[:-2])
    with pytest.raises(DockerConfigError) as caught:
        lookup(ACR, config, environ)
    assert str(config) in str(caught.value)
    assert "not valid JSON" in str(caught.value)
    assert caught.value.path == config
    assert isinstance(caught.value, BlobError)
    assert_no_leak(caught.value, SECRET, b64(f"u:{SECRET}"))


def test_non_utf8_file_is_a_config_error(tmp_path: Path, environ: dict[str, str]) -> None:
    config = tmp_path / "config.json"
    config.write_bytes(b'{"auths": {"x": {"password": "\xff\xfe' + SECRET.encode() + b'"}}}')
    with pytest.raises(DockerConfigError, match="not UTF-8") as caught:
        lookup(ACR, config, environ)
    assert_no_leak(caught.value, SECRET)


def test_unreadable_path_is_a_config_error(tmp_path: Path, environ: dict[str, str]) -> None:
    directory = tmp_path / "config.json"
    directory.mkdir()
    with pytest.raises(DockerConfigError, match="cannot read Docker config"):
        lookup(ACR, directory, environ)


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ([], "the top level"),
        ({"auths": []}, '"auths"'),
        ({"auths": {ACR: "u:p"}}, f"auths['{ACR}']"),
        ({"auths": {ACR: {"auth": 12}}}, f"auths['{ACR}'].auth"),
        ({"auths": {ACR: {"password": ["x"]}}}, f"auths['{ACR}'].password"),
        ({"auths": {ACR: {"identitytoken": True}}}, f"auths['{ACR}'].identitytoken"),
        ({"credHelpers": ["acr"]}, '"credHelpers"'),
        ({"credHelpers": {ACR: 1}}, f"credHelpers['{ACR}']"),
        ({"credsStore": {"name": "desktop"}}, '"credsStore"'),
    ],
)
def test_fields_of_the_wrong_type_are_config_errors(
    tmp_path: Path, environ: dict[str, str], document: object, field: str
) -> None:
    config = write_config(tmp_path, document)
    with pytest.raises(DockerConfigError) as caught:
        lookup(ACR, config, environ)
    assert field in str(caught.value)
    assert str(config) in str(caught.value)


@pytest.mark.parametrize(
    "auth", [f"!!{SECRET}!!", b64(f"no-colon-{SECRET}"), base64.b64encode(b"\xff\xfe:x").decode()]
)
def test_bad_auth_value_is_a_config_error_without_the_value(
    tmp_path: Path, environ: dict[str, str], auth: str
) -> None:
    config = write_config(tmp_path, {"auths": {ACR: {"auth": auth}}})
    with pytest.raises(DockerConfigError) as caught:
        lookup(ACR, config, environ)
    assert "auth is not the base64" in str(caught.value)
    assert ACR in str(caught.value)
    assert_no_leak(caught.value, SECRET, auth)


@pytest.mark.parametrize("name", ["../../bin/sh", "a/b", "..", "x\\y"])
def test_helper_names_with_separators_are_refused(
    tmp_path: Path, environ: dict[str, str], name: str
) -> None:
    config = write_config(tmp_path, {"credsStore": name})
    with pytest.raises(DockerConfigError, match="not a credential helper name"):
        lookup(ACR, config, environ)


@pytest.mark.parametrize("registry", ["", "   ", "https://", "/library/ubuntu"])
def test_registry_without_a_host_is_refused(
    tmp_path: Path, environ: dict[str, str], registry: str
) -> None:
    config = write_config(tmp_path, {})
    with pytest.raises(InvalidEndpointError):
        lookup(registry, config, environ)


# Where the file is


def test_docker_config_env_is_respected_via_environ(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    directory = tmp_path / "ci-docker"
    directory.mkdir()
    write_config(directory, {"auths": {ACR: {"username": "ci", "password": "pw"}}})
    env = dict(environ, DOCKER_CONFIG=str(directory))
    assert docker_config_path(env) == directory / "config.json"
    assert docker_config_credential(ACR, environ=env) == BasicCredential("ci", "pw")


@pytest.mark.skipif(os.name == "nt", reason="the home directory comes from USERPROFILE")
@pytest.mark.parametrize("docker_config", [None, ""])
def test_home_docker_config_json_when_docker_config_is_unset_or_empty(
    tmp_path: Path, environ: dict[str, str], docker_config: str | None
) -> None:
    home = Path(environ["HOME"])
    (home / ".docker").mkdir(parents=True)
    (home / ".docker" / "config.json").write_text(
        json.dumps({"auths": {ACR: {"username": "me", "password": "pw"}}})
    )
    env = environ if docker_config is None else dict(environ, DOCKER_CONFIG=docker_config)
    assert docker_config_path(env) == home / ".docker" / "config.json"
    assert docker_config_credential(ACR, environ=env) == BasicCredential("me", "pw")


def test_config_path_overrides_docker_config(tmp_path: Path, environ: dict[str, str]) -> None:
    config = write_config(tmp_path, {"auths": {ACR: {"username": "explicit", "password": "pw"}}})
    env = dict(environ, DOCKER_CONFIG=str(tmp_path / "elsewhere"))
    assert lookup(ACR, config, env) == BasicCredential("explicit", "pw")


# Credential helpers


def test_cred_helpers_apply_per_host(
    tmp_path: Path, environ: dict[str, str], helper: Helper
) -> None:
    log = helper("acrtest", {ACR: {"Username": "helper-user", "Secret": SECRET}})
    config = write_config(
        tmp_path,
        {
            "credHelpers": {ACR: "acrtest"},
            "auths": {ACR: {"auth": b64("file:pw")}, "other.io": {"auth": b64("other:pw")}},
        },
    )
    assert lookup(f"https://{ACR}/", config, environ) == BasicCredential("helper-user", SECRET)
    assert lookup("other.io", config, environ) == BasicCredential("other", "pw")
    # The bare, normalised host, with no newline; and only for the host it is configured for.
    assert requests(log) == [ACR]


def test_cred_helpers_keys_are_normalised(
    tmp_path: Path, environ: dict[str, str], helper: Helper
) -> None:
    log = helper("acrtest", {"127.0.0.1:5000": {"Username": "u", "Secret": "s"}})
    config = write_config(tmp_path, {"credHelpers": {"http://127.0.0.1:5000/": "acrtest"}})
    assert lookup("127.0.0.1:5000", config, environ) == BasicCredential("u", "s")
    assert requests(log) == ["127.0.0.1:5000"]


def test_token_username_gives_a_refresh_token(
    tmp_path: Path, environ: dict[str, str], helper: Helper
) -> None:
    helper("acrtest", {ACR: {"Username": "<token>", "Secret": SECRET}})
    config = write_config(tmp_path, {"credHelpers": {ACR: "acrtest"}})
    assert lookup(ACR, config, environ) == RefreshTokenCredential(SECRET)


def test_creds_store_serves_every_host(
    tmp_path: Path, environ: dict[str, str], helper: Helper
) -> None:
    log = helper(
        "store",
        {
            ACR: {"Username": "acr-user", "Secret": "acr-pw"},
            "127.0.0.1:5000": {"Username": "local", "Secret": "local-pw"},
        },
    )
    config = write_config(tmp_path, {"credsStore": "store", "auths": {ACR: {}}})
    assert lookup(ACR, config, environ) == BasicCredential("acr-user", "acr-pw")
    assert lookup("http://127.0.0.1:5000", config, environ) == BasicCredential("local", "local-pw")
    assert requests(log) == [ACR, "127.0.0.1:5000"]


def test_creds_store_with_nothing_falls_back_to_auths(
    tmp_path: Path, environ: dict[str, str], helper: Helper
) -> None:
    log = helper("store", {})
    config = write_config(
        tmp_path, {"credsStore": "store", "auths": {ACR: {"auth": b64("file-user:pw")}}}
    )
    assert lookup(ACR, config, environ) == BasicCredential("file-user", "pw")
    assert lookup("nothing.example", config, environ) is None
    assert requests(log) == [ACR, "nothing.example"]


def test_order_is_cred_helpers_then_creds_store_then_auths(
    tmp_path: Path, environ: dict[str, str], helper: Helper
) -> None:
    per_host = helper("perhost", {"a.io": {"Username": "from-cred-helpers", "Secret": "1"}})
    store = helper(
        "store",
        {
            "a.io": {"Username": "store-a", "Secret": "2"},
            "b.io": {"Username": "from-creds-store", "Secret": "3"},
        },
    )
    auths = {host: {"username": "from-auths", "password": "4"} for host in ("a.io", "b.io", "c.io")}
    config = write_config(
        tmp_path,
        {
            "credHelpers": {"a.io": "perhost", "b.io": "perhost"},
            "credsStore": "store",
            "auths": auths,
        },
    )
    assert lookup("a.io", config, environ) == BasicCredential("from-cred-helpers", "1")
    assert lookup("b.io", config, environ) == BasicCredential("from-creds-store", "3")
    assert lookup("c.io", config, environ) == BasicCredential("from-auths", "4")
    assert requests(per_host) == ["a.io", "b.io"]
    assert requests(store) == ["b.io", "c.io"]


def test_docker_hub_is_asked_for_under_its_v1_url(
    tmp_path: Path, environ: dict[str, str], helper: Helper
) -> None:
    log = helper("store", {"https://index.docker.io/v1/": {"Username": "hub", "Secret": "pw"}})
    config = write_config(tmp_path, {"credsStore": "store"})
    assert lookup("docker.io", config, environ) == BasicCredential("hub", "pw")
    assert requests(log) == ["https://index.docker.io/v1/"]


@pytest.mark.parametrize(
    "answer", [{"Username": "", "Secret": ""}, {"Username": "<token>", "Secret": ""}]
)
def test_empty_helper_answers_are_none(
    tmp_path: Path, environ: dict[str, str], helper: Helper, answer: dict[str, str]
) -> None:
    helper("acrtest", {ACR: answer})
    config = write_config(tmp_path, {"credHelpers": {ACR: "acrtest"}})
    assert lookup(ACR, config, environ) is None


def test_missing_helper_names_the_program_and_the_fix(
    tmp_path: Path, environ: dict[str, str]
) -> None:
    config = write_config(tmp_path, {"credHelpers": {ACR: "nosuchhelper"}})
    with pytest.raises(CredentialHelperError) as caught:
        lookup(ACR, config, environ)
    message = str(caught.value)
    assert "docker-credential-nosuchhelper" in message
    assert "not found on PATH" in message
    assert "install it" in message
    assert f"credHelpers['{ACR}']" in message
    assert caught.value.helper == "docker-credential-nosuchhelper"
    assert caught.value.exit_code is None
    assert isinstance(caught.value, DockerConfigError)


def test_helper_is_looked_up_on_the_given_path_only(
    tmp_path: Path, environ: dict[str, str], helper: Helper
) -> None:
    helper("acrtest", {ACR: {"Username": "u", "Secret": "s"}})
    config = write_config(tmp_path, {"credsStore": "acrtest"})
    with pytest.raises(CredentialHelperError, match="docker-credential-acrtest"):
        lookup(ACR, config, dict(environ, PATH=str(tmp_path / "empty")))


def test_failing_helper_reports_exit_code_and_stderr_not_the_secret(
    tmp_path: Path, environ: dict[str, str], helper: Helper
) -> None:
    answer = {
        "exit": 3,
        "stderr": "keychain is locked\n  try again",
        "stdout": json.dumps({"Username": "u", "Secret": SECRET}),
    }
    helper("acrtest", {ACR: answer})
    config = write_config(tmp_path, {"credsStore": "acrtest"})
    with pytest.raises(CredentialHelperError) as caught:
        lookup(ACR, config, environ)
    message = str(caught.value)
    assert "docker-credential-acrtest" in message
    assert "exit code 3" in message
    assert "keychain is locked try again" in message
    assert caught.value.exit_code == 3
    assert caught.value.stderr == "keychain is locked try again"
    assert_no_leak(caught.value, SECRET)


def test_failing_helper_with_a_credential_on_stdout_and_no_stderr_does_not_leak(
    tmp_path: Path, environ: dict[str, str], helper: Helper
) -> None:
    helper("acrtest", {ACR: {"exit": 4, "stdout": json.dumps({"Username": "u", "Secret": SECRET})}})
    config = write_config(tmp_path, {"credsStore": "acrtest"})
    with pytest.raises(CredentialHelperError, match="exit code 4") as caught:
        lookup(ACR, config, environ)
    assert_no_leak(caught.value, SECRET)


def test_failing_helper_message_on_stdout_is_reported(
    tmp_path: Path, environ: dict[str, str], helper: Helper
) -> None:
    # docker-credential-helpers print their errors on stdout.
    helper("acrtest", {ACR: {"exit": 1, "stdout": "error getting credentials: dbus timeout\n"}})
    config = write_config(tmp_path, {"credsStore": "acrtest"})
    with pytest.raises(CredentialHelperError, match="dbus timeout") as caught:
        lookup(ACR, config, environ)
    assert caught.value.exit_code == 1


@pytest.mark.parametrize(
    "stdout",
    [
        json.dumps({"Username": "u", "Secret": SECRET})[:-1],
        f"Username=u Secret={SECRET}",
        json.dumps(["u", SECRET]),
        json.dumps({"Username": "u", "Secret": [SECRET]}),
    ],
)
def test_bad_helper_answer_is_an_error_without_the_secret(
    tmp_path: Path, environ: dict[str, str], helper: Helper, stdout: str
) -> None:
    helper("acrtest", {ACR: {"stdout": stdout, "stderr": "warning: old protocol"}})
    config = write_config(tmp_path, {"credHelpers": {ACR: "acrtest"}})
    with pytest.raises(CredentialHelperError) as caught:
        lookup(ACR, config, environ)
    assert "docker-credential-acrtest" in str(caught.value)
    assert "warning: old protocol" in str(caught.value)
    assert caught.value.exit_code == 0
    assert_no_leak(caught.value, SECRET)


@pytest.mark.parametrize("answer", [{"sleep": 5}, {"grandchild": 5, "sleep": 5}])
def test_slow_helper_times_out(
    tmp_path: Path, environ: dict[str, str], helper: Helper, answer: dict[str, int]
) -> None:
    helper("acrtest", {ACR: answer})
    config = write_config(tmp_path, {"credsStore": "acrtest"})
    started = time.monotonic()
    with pytest.raises(CredentialHelperError, match=r"did not answer within 0\.5 s") as caught:
        lookup(ACR, config, environ, helper_timeout=0.5)
    # A grandchild holding the pipes open must not make the caller wait for it.
    assert time.monotonic() - started < 4
    assert caught.value.exit_code is None
    assert caught.value.helper == "docker-credential-acrtest"


def test_helper_runs_with_the_given_environment(
    tmp_path: Path, environ: dict[str, str], helper: Helper, bin_dir: Path
) -> None:
    # A helper that answers from an environment variable shows that `environ` reached it.
    script = bin_dir / "docker-credential-envtest"
    script.write_text(
        f"#!{sys.executable}\nimport json, os, sys\nsys.stdin.read()\n"
        'print(json.dumps({"Username": os.environ.get("ACRTEST_USER", ""), "Secret": "s"}))\n'
    )
    script.chmod(0o755)
    config = write_config(tmp_path, {"credsStore": "envtest"})
    env = dict(environ, ACRTEST_USER="from-environ")
    assert lookup(ACR, config, env) == BasicCredential("from-environ", "s")


def test_helper_errors_are_blob_errors(
    tmp_path: Path, environ: dict[str, str], helper: Helper
) -> None:
    helper("acrtest", {ACR: {"exit": 2, "stderr": "boom"}})
    config = write_config(tmp_path, {"credsStore": "acrtest"})
    with pytest.raises(BlobError, match="boom") as caught:
        lookup(ACR, config, environ)
    assert isinstance(caught.value, CredentialHelperError)
    assert caught.value.path == config
