"""One `docker-registry serve` process (distribution 2.8) with its own config and temp folder."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

import bcrypt
import httpx

from tools.testbed.motoserver import ACCESS_KEY, REGION, SECRET_KEY, MotoServer
from tools.testbed.process import ManagedProcess, Service, TestbedUnavailable, free_port
from tools.testbed.tls import client_ssl_context

# The S3 driver panics at start with AWS_CA_BUNDLE set on these machines; the proxy variables
# are dropped so that nothing the registry does can leave loopback.
_DROPPED_ENV = {
    "AWS_CA_BUNDLE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
}


def registry_binary() -> str:
    path = shutil.which("docker-registry")
    if path is None:
        raise TestbedUnavailable(
            "docker-registry is not installed (Debian: apt-get install docker-registry)"
        )
    return path


@dataclass(frozen=True)
class TokenAuth:
    """The registry's `auth: token` section: where clients get tokens and how to check them."""

    realm: str
    service: str
    issuer: str
    rootcertbundle: Path

    def config(self) -> dict[str, str]:
        return {
            "realm": self.realm,
            "service": self.service,
            "issuer": self.issuer,
            "rootcertbundle": str(self.rootcertbundle),
        }


@dataclass(frozen=True)
class RegistryProxy:
    """The registry's `proxy` section: run as a pull-through cache (mirror) of `remoteurl`.

    Distribution 2.8 hands `username`/`password` only to the token realms it finds in the
    remote's Bearer challenges at start; to a Basic-auth remote it never sends them (see
    `open_mirror`, which also puts them in the URL for one). The remote must answer when the
    mirror starts: the mirror pings its `/v2/` then, and exits if that fails.
    """

    remoteurl: str
    username: str | None = None
    password: str | None = None

    def __post_init__(self) -> None:
        if (self.username is None) != (self.password is None):
            raise ValueError("a proxy's username and password go together")

    def config(self) -> dict[str, str]:
        config = {"remoteurl": self.remoteurl}
        if self.username is not None and self.password is not None:
            config["username"] = self.username
            config["password"] = self.password
        return config

    def __repr__(self) -> str:
        # The password stays out of test reports; so do credentials inside the URL.
        remote = urlsplit(self.remoteurl)
        shown = remote._replace(netloc=remote.netloc.rpartition("@")[2]).geturl()
        return f"RegistryProxy(remoteurl={shown!r}, username={self.username!r})"


def write_htpasswd(path: Path, user: str, password: str) -> None:
    # Cost 4 (the minimum): the registry checks the hash on every request, and the default
    # cost 12 would add about a quarter of a second to each one.
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    path.write_text(f"{user}:{hashed}\n")
    path.chmod(0o600)


class RegistryServer(Service):
    """A registry on `host`:free port; filesystem storage unless `s3` is given.

    Auth is `htpasswd` (Basic), `token` (bearer tokens from a token server) or neither.

    `s3_endpoint` replaces moto's URL as the S3 driver's endpoint. The driver uses that one
    endpoint both for its own (header-signed) requests and for the presigned URLs it redirects
    clients to, so a StorageProxy put there sees both kinds of traffic.

    With `proxy` the registry is a pull-through cache of another registry (read-only: pushes
    answer 405 UNSUPPORTED); it caches what it fetched in its own storage.
    """

    def __init__(
        self,
        *,
        htpasswd: tuple[str, str] | None = None,
        s3: MotoServer | None = None,
        s3_endpoint: str | None = None,
        tls: tuple[Path, Path] | None = None,
        host: str = "127.0.0.1",
        redirect: bool = True,
        token: TokenAuth | None = None,
        proxy: RegistryProxy | None = None,
    ) -> None:
        if htpasswd is not None and token is not None:
            raise ValueError("a registry has one auth method: htpasswd or token, not both")
        self.binary = registry_binary()
        self.host = host
        self.port = free_port(host)
        self.url = f"{'https' if tls else 'http'}://{host}:{self.port}"
        self.htpasswd = htpasswd
        self.token = token
        self.proxy = proxy
        self.s3 = s3
        self.s3_endpoint = s3_endpoint or (s3.url if s3 else None)
        # Each registry gets its own prefix so that registries can share one bucket.
        self.s3_rootdirectory = f"/testbed-{secrets.token_hex(4)}" if s3 else None
        self.tls = tls
        self.redirect = redirect
        # Both set by start(): nothing is left on disk by a server that never started.
        self.workdir: Path | None = None
        self.root: Path | None = None
        self._process: ManagedProcess | None = None

    @property
    def ca_cert(self) -> Path | None:
        return self.tls[0] if self.tls else None

    def config(self, workdir: Path) -> dict[str, Any]:
        storage: dict[str, Any] = {
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        }
        if self.s3 is not None:
            storage["s3"] = {
                "accesskey": ACCESS_KEY,
                "secretkey": SECRET_KEY,
                "region": REGION,
                "regionendpoint": self.s3_endpoint,
                "bucket": self.s3.bucket,
                "rootdirectory": self.s3_rootdirectory,
                "secure": self.s3_endpoint is not None and self.s3_endpoint.startswith("https:"),
                "v4auth": True,
            }
            storage["redirect"] = {"disable": not self.redirect}
        else:
            storage["filesystem"] = {"rootdirectory": str(workdir / "storage")}
        http: dict[str, Any] = {"addr": f"{self.host}:{self.port}", "secret": "acr-blob-testbed"}
        if self.tls is not None:
            http["tls"] = {"certificate": str(self.tls[0]), "key": str(self.tls[1])}
        config: dict[str, Any] = {
            "version": "0.1",
            "log": {"level": "warn"},
            "storage": storage,
            "http": http,
        }
        if self.htpasswd is not None:
            # A realm that is a loopback URL: some clients resolve a bare word as a host name.
            config["auth"] = {"htpasswd": {"realm": self.url, "path": str(workdir / "htpasswd")}}
        elif self.token is not None:
            config["auth"] = {"token": self.token.config()}
        if self.proxy is not None:
            # Proxy mode needs nothing else changed: its scheduler keeps its state in the
            # storage root (/scheduler-state.json) and expires cached blobs after a week
            # through the blob store's Delete, which `storage.delete` above already allows.
            config["proxy"] = self.proxy.config()
        return config

    def start(self) -> Self:
        workdir = self.workdir = Path(tempfile.mkdtemp(prefix="acr-blob-registry-"))
        try:
            if self.s3 is None:
                self.root = workdir / "storage"
            if self.htpasswd is not None:
                write_htpasswd(workdir / "htpasswd", *self.htpasswd)
            config_path = workdir / "config.yml"
            # JSON is YAML: no YAML library needed to write the config.
            config_path.write_text(json.dumps(self.config(workdir), indent=2))
            env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
            self._process = ManagedProcess(
                [self.binary, "serve", str(config_path)],
                log_path=workdir / "registry.log",
                cwd=workdir,
                env=env,
            )
            with httpx.Client(
                trust_env=False, verify=client_ssl_context(self.ca_cert), timeout=1.0
            ) as client:
                self._process.wait_ready(
                    lambda: self._answers(client), what=f"docker-registry at {self.url}"
                )
        except BaseException:
            self.stop()
            raise
        return self

    def _answers(self, client: httpx.Client) -> bool:
        try:
            status = client.get(self.url + "/v2/").status_code
        except httpx.TransportError:
            return False
        return status in (200, 401)

    def log_tail(self, lines: int = 30) -> str:
        return self._process.log_tail(lines) if self._process else ""

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
