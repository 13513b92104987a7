"""`make demo`: a throwaway registry on loopback, a blob behind an S3-style 307, the CLI.

Starts moto (S3) and Debian's docker-registry with Basic auth on 127.0.0.1, its blobs redirected
to presigned URLs on a recording proxy at 127.0.0.2; pushes a sample blob; downloads it with
`acr-blob get`; prints the verified digest and what storage saw; stops everything.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tools.testbed import MotoServer, TestbedUnavailable, open_s3_registry

REPOSITORY = "demo/sample"
CREDENTIALS = ("demo", "demo-password")
SIZE = 8 * 1024 * 1024


def main() -> int:
    try:
        moto = MotoServer()
    except TestbedUnavailable as error:
        print(f"demo: {error}", file=sys.stderr)
        return 1
    with (
        moto,
        open_s3_registry(moto, auth=CREDENTIALS) as registry,
        tempfile.TemporaryDirectory(prefix="acr-blob-demo-") as folder,
    ):
        assert registry.proxy is not None
        print(f"registry {registry.url} (Basic auth), blobs redirected to {registry.proxy.url}")
        digest = registry.push(REPOSITORY, os.urandom(SIZE))
        print(f"pushed {SIZE} random bytes to {REPOSITORY} as {digest}")
        target = Path(folder) / "layer.bin"
        command = [
            str(Path(sys.executable).with_name("acr-blob")),
            "get",
            f"{registry.url}/{REPOSITORY}@{digest}",
            "-o",
            str(target),
        ]
        print("$ ACR_BLOB_USERNAME=demo ACR_BLOB_PASSWORD=... acr-blob " + " ".join(command[1:]))
        environment = dict(
            os.environ, ACR_BLOB_USERNAME=CREDENTIALS[0], ACR_BLOB_PASSWORD=CREDENTIALS[1]
        )
        result = subprocess.run(command, env=environment, check=False)
        if result.returncode != 0:
            print(f"demo: acr-blob exited {result.returncode}", file=sys.stderr)
            return result.returncode
        assert registry.proxy is not None
        seen = registry.proxy.presigned_requests
        leaked = [r for r in seen if r.header("Authorization") is not None]
        print(f"storage served {len(seen)} presigned request(s); with Authorization: {len(leaked)}")
        print(f"verified digest: {digest} ({target.stat().st_size} bytes on disk)")
        return 1 if leaked else 0


if __name__ == "__main__":
    sys.exit(main())
