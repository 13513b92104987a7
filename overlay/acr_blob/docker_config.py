"""Credentials from the user's Docker configuration, found the way the docker CLI finds them.

The file is ``$DOCKER_CONFIG/config.json``, or ``~/.docker/config.json`` when ``DOCKER_CONFIG``
is unset. For a registry host the sources are tried in this order, each one passing on to the
next when it has nothing for the host:

1. ``credHelpers[host]``: that credential helper (``docker-credential-<name> get``);
2. ``credsStore``: the default credential helper;
3. ``auths[host]``: a base64 ``auth``, separate ``username``/``password``, or an
   ``identitytoken``.

Example::

    from acr_blob import BlobClient
    from acr_blob.docker_config import docker_config_credential

    registry = "myregistry.azurecr.io"
    with BlobClient(registry, docker_config_credential(registry)) as client:
        ...

No message, repr or chained exception of this module carries a password, a token or the text
of the file or of a helper's answer.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .credentials import BasicCredential, RefreshTokenCredential
from .errors import CredentialHelperError, DockerConfigError, InvalidEndpointError
from .references import DOCKER_HUB_CONFIG_KEY, is_docker_hub

__all__ = [
    "CredentialHelperError",
    "DockerConfigError",
    "docker_config_credential",
    "docker_config_path",
]

DockerCredential = BasicCredential | RefreshTokenCredential
# Builds the error for a helper that misbehaved: (what happened, exit code, output excerpt).
_Failure = Callable[[str, "int | None", str], "CredentialHelperError"]

# The key every one of Docker Hub's names (references.DOCKER_HUB_HOSTS) normalises to; its
# credentials are stored and asked for under references.DOCKER_HUB_CONFIG_KEY.
_DOCKER_HUB = "index.docker.io"
# The exact text docker-credential-helpers print (on stdout) when they hold nothing for a host.
_NOT_FOUND = "credentials not found in native keychain"
# docker-credential-helpers' convention: this user name means "Secret is an identity token".
_TOKEN_USERNAME = "<token>"
_EXCERPT_LENGTH = 200
_JSON_TYPES: dict[type, str] = {
    dict: "an object",
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


@dataclass(frozen=True)
class _Config:
    path: Path
    # Keys as written in the file: an exact match with the caller's registry string wins.
    auths: dict[str, dict[str, Any]]
    # Keys normalised to host[:port], so that "https://host" and "host" keys both match.
    cred_helpers: dict[str, str]
    creds_store: str


def docker_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """The Docker configuration file that the docker CLI would read.

    ``$DOCKER_CONFIG/config.json`` when ``DOCKER_CONFIG`` is set and not empty, otherwise
    ``config.json`` in ``.docker`` under the home directory. ``environ`` replaces ``os.environ``.

    Example::

        docker_config_path({"DOCKER_CONFIG": "/etc/ci/docker"})  # /etc/ci/docker/config.json
    """
    env = os.environ if environ is None else environ
    directory = env.get("DOCKER_CONFIG", "")
    if directory:
        return Path(directory, "config.json")
    home = env.get("USERPROFILE" if os.name == "nt" else "HOME", "")
    return Path(home or Path.home(), ".docker", "config.json")


def docker_config_credential(
    registry: str,
    *,
    config_path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    helper_timeout: float | None = 10.0,
) -> BasicCredential | RefreshTokenCredential | None:
    """The credential the user's Docker configuration holds for ``registry``, or ``None``.

    ``registry`` is a host, ``host:port`` or URL (``https://myregistry.azurecr.io``,
    ``127.0.0.1:5000``); Docker Hub may be named ``docker.io``, ``index.docker.io`` or
    ``registry-1.docker.io``. ``config_path`` overrides :func:`docker_config_path`.
    ``environ`` replaces ``os.environ``: it locates the file, supplies the ``PATH`` that
    credential helpers are looked up on, and is the helpers' whole environment.
    ``helper_timeout`` is how many seconds a helper may take (``None``: no limit, for helpers
    that prompt).

    A missing file, or nothing for this registry, gives ``None``. Raises
    :class:`DockerConfigError` for a broken file and :class:`CredentialHelperError` for a
    missing or failing helper.

    Example::

        credential = docker_config_credential("https://myregistry.azurecr.io")
        if credential is None:
            print("run `docker login myregistry.azurecr.io` first")
    """
    host = _registry_host(registry)
    path = Path(config_path) if config_path is not None else docker_config_path(environ)
    config = _load_config(path)
    if config is None:
        return None
    helpers = [
        (config.cred_helpers.get(host, ""), f"credHelpers[{host!r}]"),
        (config.creds_store, "credsStore"),
    ]
    for helper, source in helpers:
        if helper:
            credential = _ask_helper(
                helper,
                _server_url(host),
                source=source,
                path=path,
                environ=environ,
                timeout=helper_timeout,
            )
            if credential is not None:
                return credential
    return _from_auths(config, registry, host)


def _registry_host(registry: str) -> str:
    host = _normalise(registry)
    if not host:
        raise InvalidEndpointError(f"not a registry host or URL: {registry[:300]!r}")
    return host


def _normalise(address: str) -> str:
    """host[:port], lowercase, with Docker Hub's aliases folded into one; "" when there is none."""
    address = address.strip()
    if "://" in address:
        try:
            netloc = urlsplit(address).netloc
        except ValueError:
            return ""
        # userinfo has no place in a config key, but must not become part of the host either.
        host = netloc.rpartition("@")[2]
    else:
        host = address.partition("/")[0]
    host = host.lower()
    return _DOCKER_HUB if is_docker_hub(host) else host


def _server_url(host: str) -> str:
    return DOCKER_HUB_CONFIG_KEY if host == _DOCKER_HUB else host


def _json_type(value: object) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


def _load_config(path: Path) -> _Config | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise DockerConfigError(
            f"cannot read Docker config {path}: {error.strerror or type(error).__name__}",
            path=path,
        ) from None
    # Parsed outside any `except` block: a JSONDecodeError or UnicodeDecodeError holds the whole
    # file, secrets included, and would otherwise ride along as the new error's __context__.
    problem = ""
    document: object = None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        problem = f"not UTF-8 (byte {error.start})"
    else:
        # docker accepts an empty file as an empty configuration.
        if text.strip():
            try:
                document = json.loads(text)
            except json.JSONDecodeError as error:
                problem = (
                    f"not valid JSON ({error.msg} at line {error.lineno} column {error.colno})"
                )
    if problem:
        raise DockerConfigError(f"Docker config {path} is {problem}", path=path)
    return _parse_config(path, document)


def _parse_config(path: Path, document: object) -> _Config:
    def wrong(field: str, expected: str, value: object) -> DockerConfigError:
        return DockerConfigError(
            f"Docker config {path}: {field} must be {expected}, not {_json_type(value)}", path=path
        )

    # Like docker (Go's JSON decoder), null stands for "absent" anywhere.
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise wrong("the top level", "an object", document)

    auths_field = _or_default(document.get("auths"), {})
    if not isinstance(auths_field, dict):
        raise wrong('"auths"', "an object", auths_field)
    auths: dict[str, dict[str, Any]] = {}
    for key, entry in auths_field.items():
        entry = _or_default(entry, {})
        if not isinstance(entry, dict):
            raise wrong(f"auths[{key[:100]!r}]", "an object", entry)
        for name in ("auth", "username", "password", "identitytoken"):
            value = entry.get(name)
            if value is not None and not isinstance(value, str):
                raise wrong(f"auths[{key[:100]!r}].{name}", "a string", value)
        auths[key] = entry

    helpers_field = _or_default(document.get("credHelpers"), {})
    if not isinstance(helpers_field, dict):
        raise wrong('"credHelpers"', "an object", helpers_field)
    cred_helpers: dict[str, str] = {}
    for key, helper in helpers_field.items():
        helper = _or_default(helper, "")
        if not isinstance(helper, str):
            raise wrong(f"credHelpers[{key[:100]!r}]", "a string", helper)
        _check_helper_name(path, f"credHelpers[{key[:100]!r}]", helper)
        # The first of several keys that normalise alike wins, as the first in the file.
        cred_helpers.setdefault(_normalise(key), helper)

    creds_store = _or_default(document.get("credsStore"), "")
    if not isinstance(creds_store, str):
        raise wrong('"credsStore"', "a string", creds_store)
    _check_helper_name(path, '"credsStore"', creds_store)
    return _Config(path, auths, cred_helpers, creds_store)


def _or_default(value: object, default: object) -> object:
    return default if value is None else value


def _check_helper_name(path: Path, field: str, helper: str) -> None:
    # A separator would turn the PATH lookup into a lookup of an arbitrary file.
    if "/" in helper or "\\" in helper or helper in (".", ".."):
        raise DockerConfigError(
            f"Docker config {path}: {field} is not a credential helper name: {helper[:100]!r}",
            path=path,
        )


def _from_auths(config: _Config, registry: str, host: str) -> DockerCredential | None:
    # docker tries the key exactly as given before comparing normalised keys.
    keys = [registry] if registry in config.auths else []
    keys += [key for key in config.auths if key != registry and _normalise(key) == host]
    for key in keys:
        credential = _auth_entry_credential(config.path, key, config.auths[key])
        if credential is not None:
            return credential
    return None


def _auth_entry_credential(path: Path, key: str, entry: dict[str, Any]) -> DockerCredential | None:
    token = entry.get("identitytoken") or ""
    if token:
        return RefreshTokenCredential(token)
    auth = entry.get("auth") or ""
    if auth:
        username, password = _decode_auth(path, key, auth)
    else:
        username = entry.get("username") or ""
        password = entry.get("password") or ""
    if not username and not password:
        return None
    return BasicCredential(username, password)


def _decode_auth(path: Path, key: str, auth: str) -> tuple[str, str]:
    # Decoded outside any `except` block, so that the error has no __context__ holding the value.
    decoded: str | None = None
    try:
        # Some tools drop the padding; restoring it costs nothing and is still unambiguous.
        raw = base64.b64decode(auth + "=" * (-len(auth) % 4), validate=True)
    except (binascii.Error, ValueError):
        raw = None
    if raw is not None:
        try:
            decoded = raw.decode("utf-8")
        except UnicodeDecodeError:
            decoded = None
    if decoded is None or ":" not in decoded:
        raise DockerConfigError(
            f"Docker config {path}: auths[{key[:100]!r}].auth is not the base64 of"
            ' "username:password"; run `docker login` again',
            path=path,
        )
    username, _, password = decoded.partition(":")
    return username, password


def _excerpt(data: bytes) -> str:
    text = " ".join(data[: _EXCERPT_LENGTH * 4].decode("utf-8", "replace").split())
    text = "".join(ch for ch in text if ch.isprintable())
    if len(text) > _EXCERPT_LENGTH:
        text = text[: _EXCERPT_LENGTH - 1] + "…"
    return text


def _ask_helper(
    name: str,
    server_url: str,
    *,
    source: str,
    path: Path,
    environ: Mapping[str, str] | None,
    timeout: float | None,
) -> DockerCredential | None:
    program = f"docker-credential-{name}"
    search_path = None if environ is None else environ.get("PATH", os.defpath)
    executable = shutil.which(program, path=search_path)
    if executable is None:
        raise CredentialHelperError(
            f"credential helper {program} ({source} in {path}) was not found on PATH; install it,"
            f" or remove {source} from {path}",
            helper=program,
            path=path,
        )

    def failure(what: str, exit_code: int | None, stderr: str = "") -> CredentialHelperError:
        message = f"credential helper {program} ({source} in {path}) {what}"
        if stderr:
            message += f": {stderr}"
        return CredentialHelperError(
            message, helper=program, path=path, exit_code=exit_code, stderr=stderr
        )

    try:
        process = subprocess.Popen(
            [executable, "get"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=None if environ is None else dict(environ),
        )
    except OSError as error:
        raise failure(
            f"could not be started ({error.strerror or type(error).__name__})", None
        ) from None
    stdout = stderr = b""
    with process:
        try:
            # No newline: docker writes the bare server URL, and some helpers use it verbatim.
            stdout, stderr = process.communicate(server_url.encode(), timeout=timeout)
        except subprocess.TimeoutExpired:
            # kill + wait, not communicate(): a grandchild still holding the pipes open would
            # make communicate() wait for it too.
            process.kill()
            process.wait()
            timed_out = True
        except BaseException:
            process.kill()
            raise
        else:
            timed_out = False
    if timed_out:
        # Raised outside the `except` block: TimeoutExpired carries whatever stdout held.
        raise failure(f"did not answer within {timeout} s and was stopped", None)
    return _parse_helper_answer(process.returncode, stdout, stderr, failure)


def _parse_helper_answer(
    exit_code: int,
    stdout: bytes,
    stderr: bytes,
    failure: _Failure,
) -> DockerCredential | None:
    out_text = stdout.decode("utf-8", "replace")
    err_text = stderr.decode("utf-8", "replace")
    if exit_code != 0:
        if _NOT_FOUND in out_text or _NOT_FOUND in err_text:
            return None
        detail = _excerpt(stderr)
        # docker-credential-helpers report errors on stdout; use it only when it cannot be a
        # credential answer, which would hold the Secret.
        if not detail and "{" not in out_text and "Secret" not in out_text:
            detail = _excerpt(stdout)
        raise failure(f"failed with exit code {exit_code}", exit_code, detail)

    # Parsed outside any `except` block: a JSONDecodeError's .doc is the answer, Secret included.
    answer: object = None
    valid = True
    try:
        answer = json.loads(out_text)
    except json.JSONDecodeError:
        valid = False
    if not valid or not isinstance(answer, dict):
        raise failure("answered something other than a JSON object", exit_code, _excerpt(stderr))
    username = answer.get("Username") or ""
    secret = answer.get("Secret") or ""
    if not isinstance(username, str) or not isinstance(secret, str):
        raise failure(
            "answered a Username or Secret that is not a string", exit_code, _excerpt(stderr)
        )
    if username == _TOKEN_USERNAME:
        return RefreshTokenCredential(secret) if secret else None
    if not username and not secret:
        return None
    return BasicCredential(username, secret)
