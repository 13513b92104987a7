"""moto's S3 server: the object storage that an S3-backed registry redirects clients to."""

from __future__ import annotations

import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Self

import httpx

from tools.testbed.process import ManagedProcess, Service, TestbedUnavailable, free_port

# moto checks no signatures, but boto3 and the registry's S3 driver insist on some credentials.
ACCESS_KEY = "testbed-access-key"
SECRET_KEY = "testbed-secret-key"
REGION = "us-east-1"


class MotoServer(Service):
    """`python -m moto.server` on loopback, with one bucket created (moto keeps data in memory)."""

    def __init__(self, *, host: str = "127.0.0.1", bucket: str = "registry") -> None:
        if importlib.util.find_spec("moto.server") is None:
            raise TestbedUnavailable("moto[server] is not installed in this environment")
        self.host = host
        self.port = free_port(host)
        self.bucket = bucket
        self.url = f"http://{host}:{self.port}"
        self._workdir: Path | None = None
        self._process: ManagedProcess | None = None

    def start(self) -> Self:
        self._workdir = Path(tempfile.mkdtemp(prefix="acr-blob-moto-"))
        argv = [sys.executable, "-m", "moto.server", "-H", self.host, "-p", str(self.port)]
        try:
            self._process = ManagedProcess(
                argv, log_path=self._workdir / "moto.log", cwd=self._workdir
            )
            self._process.wait_ready(self._answers, what="moto server")
            self._create_bucket()
        except BaseException:
            self.stop()
            raise
        return self

    def _answers(self) -> bool:
        try:
            with httpx.Client(trust_env=False, timeout=1.0) as client:
                client.get(self.url + "/")
        except httpx.TransportError:
            return False
        return True

    def _create_bucket(self) -> None:
        # Imported here: boto3 takes a noticeable fraction of a second to import.
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
        )
        s3.create_bucket(Bucket=self.bucket)

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
