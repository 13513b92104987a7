"""Azurite, Microsoft's Azure Storage emulator (npm `azurite`): the blob service, on loopback.

tools/testbed/install-azurite.sh installs the pinned version into tools/testbed/azurite/
(`npm ci`, with Debian's nodejs and npm when node is missing). Azurite checks SAS signatures,
permissions, `spr` and expiry for real; its error answers differ from Azure's in form (see
tools/testbed/blob_endpoint.py, which puts them right).
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Self

from tools.testbed.process import ManagedProcess, Service, TestbedUnavailable, free_port
from tools.testbed.tls import client_ssl_context

if TYPE_CHECKING:
    from azure.storage.blob import BlobServiceClient

# The emulator's well-known development account (published in Azurite's README and Microsoft's
# docs): every Azurite accepts it, so it is no secret.
DEV_ACCOUNT = "devstoreaccount1"
DEV_ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

_INSTALL_DIR = Path(__file__).resolve().parent / "azurite"
_INSTALL_HINT = "run tools/testbed/install-azurite.sh (needs node and npm)"
# Nothing Azurite does may leave loopback: no proxies, and its telemetry is switched off below.
_DROPPED_ENV = {"HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"}


def azurite_binary() -> str:
    """The `azurite-blob` launcher: the project's own install first, then one on PATH."""
    if shutil.which("node") is None:
        raise TestbedUnavailable(f"node is not installed, so Azurite cannot run: {_INSTALL_HINT}")
    local = _INSTALL_DIR / "node_modules" / ".bin" / "azurite-blob"
    if local.is_file():
        return str(local)
    found = shutil.which("azurite-blob")
    if found is None:
        raise TestbedUnavailable(f"Azurite is not installed: {_INSTALL_HINT}")
    return found


class AzuriteServer(Service):
    """`azurite-blob` on `host`:free port, its data in a temporary folder, stopped by its pid.

    With `tls` (a certificate and key from tls.make_tls_cert) it serves https, which a SAS
    with `spr=https` requires. `account_url` is the path-style URL of the dev account:
    `http(s)://HOST:PORT/devstoreaccount1`.
    """

    def __init__(self, *, host: str = "127.0.0.1", tls: tuple[Path, Path] | None = None) -> None:
        self.binary = azurite_binary()
        self.host = host
        self.port = free_port(host)
        self.tls = tls
        self.url = f"{'https' if tls else 'http'}://{host}:{self.port}"
        self.account_url = f"{self.url}/{DEV_ACCOUNT}"
        self.workdir: Path | None = None
        self._process: ManagedProcess | None = None

    @property
    def ca_cert(self) -> Path | None:
        return self.tls[0] if self.tls else None

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """What a client of this server trusts (None over plain http)."""
        verify = client_ssl_context(self.ca_cert)
        return verify if isinstance(verify, ssl.SSLContext) else None

    def argv(self, location: Path) -> list[str]:
        argv = [
            self.binary,
            "--blobHost",
            self.host,
            "--blobPort",
            str(self.port),
            "--location",
            str(location),
            "--silent",
            "--disableTelemetry",
            # azure-storage-blob sends API versions newer than a pinned Azurite knows.
            "--skipApiVersionCheck",
        ]
        if self.tls is not None:
            argv += ["--cert", str(self.tls[0]), "--key", str(self.tls[1])]
        return argv

    def start(self) -> Self:
        workdir = self.workdir = Path(tempfile.mkdtemp(prefix="acr-blob-azurite-"))
        try:
            (workdir / "data").mkdir()
            env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
            self._process = ManagedProcess(
                self.argv(workdir / "data"), log_path=workdir / "azurite.log", cwd=workdir, env=env
            )
            self._process.wait_ready(self._listening, what=f"Azurite at {self.url}", timeout=30.0)
        except BaseException:
            self.stop()
            raise
        return self

    def _listening(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0):
                return True
        except OSError:
            return False

    def service_client(self) -> BlobServiceClient:
        """An azure-storage-blob client of the dev account, signed with its key."""
        # Imported here: azure-storage-blob is a test dependency, and slow to import.
        from azure.storage.blob import BlobServiceClient

        return BlobServiceClient(
            self.account_url,
            credential={"account_name": DEV_ACCOUNT, "account_key": DEV_ACCOUNT_KEY},
            connection_verify=str(self.ca_cert) if self.ca_cert else True,
        )

    def log_tail(self, lines: int = 30) -> str:
        return self._process.log_tail(lines) if self._process else ""

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None
