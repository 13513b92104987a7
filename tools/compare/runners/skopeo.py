"""The runner for skopeo: `python skopeo.py < request.json > observation.json`.

skopeo copies images, not blobs: it has no command that fetches one blob by its digest
(`inspect --raw` gives manifests, `inspect --config` the config). The closest honest expression
is `skopeo copy docker://HOST/REPO:TAG dir:DIR` of an image whose only layer is the blob: the
`dir:` transport writes each layer, as received and checked against its digest, to a file named
after the digest's hex. So the runner needs the request's optional `tag` (an image that the
orchestrator pushed with tools/compare/runners/manifest.py) and reports every request without
one as unsupported.

Each download is a `skopeo copy` of its own, into a fresh `dir:` destination: a CLI has no
client instance to keep between downloads (nor tokens, nor connections). skopeo also fetches the
manifest and the config blob, so a fault aimed at every blob request hits those too.

Pull scenarios are what skopeo is for: `skopeo copy docker://HOST/REPO:TAG oci:DIR:TAG`
writes an OCI image layout of the image into `pull-<i>` (index.json naming it by the tag),
with `--override-os`/`--override-arch` for the request's platform (else skopeo takes the
host's). Without `--preserve-digests`, as here, skopeo 1.9 keeps the manifest's bytes only
when it need not change a blob: the scenario's layers are gzipped, as built images' are, and
come through as they are; an uncompressed (`.tar`) layer it would gzip into a new blob, and
write a new manifest for it. It has no way to write layers as files named by their titles:
such a request is reported unsupported.

Defaults except: `--src-tls-verify=false` for a plain-http registry (skopeo tries https first,
then falls back to http); `--src-cert-dir` holding the request's CA for an https one;
`--src-no-creds` without credentials, so that no auth file of the machine is used.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from tools.compare.runners import _protocol
else:
    try:
        import _protocol  # run as a script: this folder is first on sys.path
    except ImportError:
        from tools.compare.runners import _protocol

SKOPEO = "skopeo"
ERROR_LIMIT = 300
DIGEST = re.compile(r"(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})")
# logrus's last line: time="..." level=fatal msg="..."
LOG_MESSAGE = re.compile(r'msg="((?:[^"\\]|\\.)*)"')
# A digest's hex, shortened in error messages: skopeo repeats them, and messages are cut at 300.
LONG_HEX = re.compile(r"\b([0-9a-f]{12})[0-9a-f]{20,}\b")
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


def skopeo_version() -> str:
    """`skopeo 1.9.3`, from `skopeo --version` (`skopeo version 1.9.3`)."""
    completed = subprocess.run(
        [SKOPEO, "--version"], capture_output=True, text=True, check=True, timeout=30
    )
    return completed.stdout.strip().replace("skopeo version", "skopeo", 1)


NO_FILES = (
    "skopeo copies images into image formats (oci:, dir:, docker-archive:...), blobs named by "
    "digest: nothing writes layers as files named by their titles"
)


NO_PARALLEL = (
    "no parallel ranges in one blob: skopeo copy fetches each layer with one GET (it copies "
    "several layers at once, never parts of one)"
)


def unsupported_reason(request: dict[str, Any]) -> str | None:
    if request.get("pull") == "files":
        return NO_FILES
    if (request.get("max_concurrency") or 1) > 1:
        return NO_PARALLEL
    if request.get("pull"):
        return None
    if not DIGEST.fullmatch(request["digest"]):
        return (
            "skopeo takes no blob digest: it reaches blobs only as layers of a tagged image, "
            "and no manifest can list a malformed digest"
        )
    if request.get("tag"):
        return None
    return (
        "skopeo copies images, not blobs: it reaches a blob only as a layer of a tagged image, "
        "and the request names no tag"
    )


def _environment() -> dict[str, str]:
    """This process's environment without proxies: loopback only."""
    return {
        name: value for name, value in os.environ.items() if name.lower() not in PROXY_VARIABLES
    }


def copy_command(request: dict[str, Any], destination: Path, cert_dir: Path | None) -> list[str]:
    registry = urlsplit(request["registry"])
    source = f"docker://{registry.netloc}/{request['repository']}:{request['tag']}"
    command = [SKOPEO, "copy", "--quiet"]
    if registry.scheme == "http":
        command.append("--src-tls-verify=false")
    if cert_dir is not None:
        command += ["--src-cert-dir", str(cert_dir)]
    credentials = request.get("credentials")
    if credentials:
        command += [
            "--src-username",
            credentials["username"],
            "--src-password",
            credentials["password"],
        ]
    else:
        command.append("--src-no-creds")
    if request.get("pull"):
        os_, _, architecture = str(request["platform"]).partition("/")
        command += ["--override-os", os_, "--override-arch", architecture.partition("/")[0]]
        return [*command, source, f"oci:{destination}:{request['tag']}"]
    return [*command, source, f"dir:{destination}"]


def _failure(completed: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    messages = LOG_MESSAGE.findall(last)
    message = last
    if messages:
        try:
            message = json.loads(f'"{messages[-1]}"')
        except ValueError:
            message = messages[-1]
    short = LONG_HEX.sub(r"\1...", message)
    return f"SkopeoError: exit {completed.returncode}: {short}"


def _run_copy(
    request: dict[str, Any], destination: Path, cert_dir: Path | None, environment: dict[str, str]
) -> tuple[str | None, float]:
    """One `skopeo copy` to `destination`: its error (None: exit 0) and how long it took."""
    timeout = float(request["timeout"])
    started = time.monotonic()
    try:
        completed = subprocess.run(
            copy_command(request, destination, cert_dir),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=environment,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return (
            f"Timeout: skopeo had not finished after {timeout:g} s (the request's timeout, "
            "which the runner applies to each download); killed"
        ), time.monotonic() - started
    elapsed = time.monotonic() - started
    return (_failure(completed) if completed.returncode != 0 else None), elapsed


def pull(
    request: dict[str, Any], index: int, cert_dir: Path | None, environment: dict[str, str]
) -> dict[str, Any]:
    """A pull scenario's `skopeo copy` into the layout `pull-<index>`, left as skopeo left it."""
    destination = Path(request["output_dir"]) / f"pull-{index}"
    error, elapsed = _run_copy(request, destination, cert_dir, environment)
    return {
        "ok": error is None,
        "error": None if error is None else error.replace("\n", " ")[:ERROR_LIMIT],
        "elapsed": round(elapsed, 3),
    }


def download(
    request: dict[str, Any], index: int, cert_dir: Path | None, environment: dict[str, str]
) -> dict[str, Any]:
    output_dir = Path(request["output_dir"])
    destination = Path(tempfile.mkdtemp(prefix=f".skopeo-{index}-", dir=output_dir))
    layer = destination / request["digest"].partition(":")[2]
    error, elapsed = _run_copy(request, destination, cert_dir, environment)
    if error is None and not layer.is_file():
        error = f"MissingLayer: skopeo exited 0 but {destination.name} has no {layer.name}"
    # Whatever skopeo left as the layer is the download, even after a failure.
    if layer.is_file():
        os.replace(layer, output_dir / f"blob-{index}")
    shutil.rmtree(destination, ignore_errors=True)
    return {
        "ok": error is None,
        "error": None if error is None else error.replace("\n", " ")[:ERROR_LIMIT],
        "elapsed": round(elapsed, 3),
    }


def observe(request: dict[str, Any]) -> dict[str, Any]:
    observation: dict[str, Any] = {
        "client": skopeo_version(),
        "unsupported": unsupported_reason(request),
        "downloads": [],
    }
    if observation["unsupported"]:
        return observation
    Path(request["output_dir"]).mkdir(parents=True, exist_ok=True)
    environment = _environment()
    with tempfile.TemporaryDirectory(prefix="skopeo-certs-") as certs:
        cert_dir = None
        if request.get("ca_cert"):
            # skopeo trusts every *.crt in the folder as a CA (and *.cert/*.key as client certs).
            cert_dir = Path(certs)
            shutil.copyfile(request["ca_cert"], cert_dir / "ca.crt")
        once = pull if request.get("pull") else download
        for index in range(int(request.get("downloads", 1))):
            observation["downloads"].append(once(request, index, cert_dir, environment))
    return observation


def main() -> None:
    request = json.load(sys.stdin)
    try:
        _protocol.check_loopback(request["registry"])
    except _protocol.RequestError as error:
        print(f"runner: {error}", file=sys.stderr)
        sys.exit(2)
    json.dump(observe(request), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
