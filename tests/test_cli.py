"""The installed `acr-blob` console script, run in a subprocess against real registries."""

from __future__ import annotations

import base64
import datetime
import fcntl
import io
import json
import os
import pty
import re
import select
import signal
import stat
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest

from acr_blob import CacheMissError, cli
from acr_blob import cache as cache_module
from acr_blob._cli_progress import ProgressBar
from tools.faultproxy import Fault, FaultProxy, FaultProxyFactory
from tools.testbed import BlobFactory, Deployment, RecordedRequest, flip_byte, free_port

SCRIPT = Path(sys.executable).with_name("acr-blob")
MISSING = "sha256:" + "0" * 64
MiB = 1024 * 1024


def environment(env: dict[str, str] | None = None) -> dict[str, str]:
    variables = {k: v for k, v in os.environ.items() if not k.startswith("ACR_BLOB_")}
    variables.update(env or {})
    return variables


def run(
    *args: str, stdin: str = "", env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(SCRIPT), *args],
        input=stdin.encode(),
        capture_output=True,
        env=environment(env),
        timeout=timeout,
        check=False,
    )


def reference(endpoint: str, repository: str, digest: str) -> str:
    return f"{endpoint}/{repository}@{digest}"


def test_get_to_a_file(
    registry: Deployment, blob_factory: BlobFactory, repository: str, tmp_path: Path
) -> None:
    digest, data = blob_factory(registry, 100_000)
    target = tmp_path / "layer.bin"
    result = run("get", registry.url, repository, digest, "-o", str(target))
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == data
    assert f"verified {digest}".encode() in result.stderr
    # stderr is no terminal here: no progress bar.
    assert b"\r" not in result.stderr
    assert b"%" not in result.stderr


def test_get_json_and_stdout(
    registry: Deployment, blob_factory: BlobFactory, repository: str, tmp_path: Path
) -> None:
    digest, data = blob_factory(registry, 5000)
    result = run("get", registry.url, repository, digest, "-o", str(tmp_path / "x"), "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout)["size"] == 5000
    piped = run("get", registry.url, repository, digest, "-o", "-")
    assert piped.returncode == 0
    assert piped.stdout == data


def test_python_dash_m_and_head(
    registry: Deployment, blob_factory: BlobFactory, repository: str
) -> None:
    digest, _ = blob_factory(registry, 777)
    result = subprocess.run(
        [sys.executable, "-m", "acr_blob", "head", registry.url, repository, digest, "--json"],
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "digest": digest,
        "size": 777,
        "media_type": "application/octet-stream",
        "etag": f'"{digest}"',
    }
    plain = run("head", registry.url, repository, digest)
    assert b"size: 777" in plain.stdout


def test_credentials_from_stdin_and_environment(
    basic_registry: Deployment, blob_factory: BlobFactory, repository: str, tmp_path: Path
) -> None:
    digest, data = blob_factory(basic_registry, 2000)
    user, password = basic_registry.auth or ("", "")
    target = tmp_path / "blob"
    ok = run(
        "get",
        basic_registry.url,
        repository,
        digest,
        "-o",
        str(target),
        "--username",
        user,
        "--password-stdin",
        stdin=password + "\n",
    )
    assert ok.returncode == 0, ok.stderr
    assert target.read_bytes() == data
    from_env = run(
        "head",
        basic_registry.url,
        repository,
        digest,
        env={"ACR_BLOB_USERNAME": user, "ACR_BLOB_PASSWORD": password},
    )
    assert from_env.returncode == 0
    wrong = run(
        "get",
        basic_registry.url,
        repository,
        digest,
        "-o",
        str(tmp_path / "w"),
        "--username",
        user,
        "--password-stdin",
        stdin="not-the-password\n",
    )
    assert wrong.returncode == 4
    assert b"not-the-password" not in wrong.stderr + wrong.stdout
    assert not (tmp_path / "w").exists()
    anonymous = run("head", basic_registry.url, repository, digest)
    assert anonymous.returncode == 4


def test_credentials_from_docker_config(
    basic_registry: Deployment, blob_factory: BlobFactory, repository: str, tmp_path: Path
) -> None:
    digest, data = blob_factory(basic_registry, 3000)
    user, password = basic_registry.auth or ("", "")
    config = tmp_path / "docker"
    config.mkdir()
    host = f"{basic_registry.host}:{basic_registry.port}"

    def write(secret: str) -> None:
        auth = base64.b64encode(f"{user}:{secret}".encode()).decode()
        (config / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))

    write(password)
    target = tmp_path / "blob"
    env = {"DOCKER_CONFIG": str(config)}
    ok = run("get", basic_registry.url, repository, digest, "-o", str(target), env=env)
    assert ok.returncode == 0, ok.stderr
    assert target.read_bytes() == data
    # --anonymous ignores the file; explicit credentials win over it.
    assert (
        run("head", basic_registry.url, repository, digest, "--anonymous", env=env).returncode == 4
    )
    write("stale-password")
    assert run("head", basic_registry.url, repository, digest, env=env).returncode == 4
    explicit = run(
        "head",
        basic_registry.url,
        repository,
        digest,
        env={**env, "ACR_BLOB_USERNAME": user, "ACR_BLOB_PASSWORD": password},
    )
    assert explicit.returncode == 0


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("not-found", 3),
        ("flipped", 5),
        ("bad-digest", 2),
        ("bad-repository", 2),
        ("refused", 1),
        ("half-credentials", 2),
    ],
)
def test_failures_exit_with_their_code_and_leave_nothing(
    registry: Deployment,
    blob_factory: BlobFactory,
    repository: str,
    tmp_path: Path,
    case: str,
    code: int,
) -> None:
    digest, _ = blob_factory(registry, 50_000)
    endpoint, env = registry.url, {}
    if case == "not-found":
        digest = MISSING
    elif case == "flipped":
        assert registry.root is not None
        flip_byte(registry.root, digest, offset=49_999)
    elif case == "bad-digest":
        digest = "sha256:XYZ"
    elif case == "bad-repository":
        repository = "Not/Valid"
    elif case == "refused":
        endpoint = f"http://127.0.0.1:{free_port()}"
    else:
        env = {"ACR_BLOB_USERNAME": "alice"}
    out = tmp_path / "out"
    out.mkdir()
    result = run("get", endpoint, repository, digest, "-o", str(out / "blob"), env=env)
    assert result.returncode == code, result.stderr
    assert result.stderr.startswith(b"acr-blob: ")
    assert list(out.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Image-style references, head, exists


def test_get_by_reference(
    registry: Deployment, blob_factory: BlobFactory, repository: str, tmp_path: Path
) -> None:
    digest, data = blob_factory(registry, 100_001)
    ref = reference(registry.url, repository, digest)
    target = tmp_path / "layer.bin"
    result = run("get", ref, "-o", str(target))
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == data
    assert result.stderr == f"verified {digest} (100001 bytes) -> {target}\n".encode()
    piped = run("get", ref, "-o", "-", "--quiet")
    assert (piped.returncode, piped.stdout, piped.stderr) == (0, data, b"")


def test_head_and_exists_by_reference(
    registry: Deployment, blob_factory: BlobFactory, repository: str
) -> None:
    digest, _ = blob_factory(registry, 4321)
    ref = reference(registry.url, repository, digest)
    head = run("head", ref, "--json")
    assert head.returncode == 0, head.stderr
    assert json.loads(head.stdout)["size"] == 4321
    assert json.loads(head.stdout)["digest"] == digest

    present = run("exists", ref)
    assert (present.returncode, present.stdout, present.stderr) == (0, b"", b"")
    absent = run("exists", reference(registry.url, repository, MISSING))
    assert (absent.returncode, absent.stdout, absent.stderr) == (3, b"", b"")
    in_json = run("exists", registry.url, repository, MISSING, "--json")
    assert in_json.returncode == 3
    assert json.loads(in_json.stdout) == {"exists": False, "digest": MISSING}
    assert json.loads(run("exists", ref, "--json").stdout)["exists"] is True


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["prod/bash@" + MISSING], "no registry in blob reference"),
        (["ubuntu@" + MISSING], "no registry in blob reference"),
        (["myregistry.azurecr.io/prod/bash:latest"], "'latest' is a tag"),
        (["myregistry.azurecr.io/prod/bash"], "no digest"),
        (["myregistry.azurecr.io/Prod/bash@" + MISSING], "invalid repository name 'Prod/bash'"),
        (["myregistry.azurecr.io/prod/bash@sha256:abc"], "invalid digest 'sha256:abc'"),
        (["ftp://myregistry.azurecr.io/prod/bash@" + MISSING], "only https:// and http://"),
        (["https://alice:hunter2@r.io/prod/bash@" + MISSING], "credentials do not belong"),
        (["myregistry.azurecr.io", "prod/bash"], "give one blob reference"),
    ],
)
def test_bad_references_are_usage_errors(args: list[str], message: str) -> None:
    result = run("head", *args, timeout=30)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(b"acr-blob: ")
    assert message.encode() in result.stderr
    assert b"hunter2" not in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["http://10.255.255.1/prod/bash@" + MISSING],
        ["http://10.255.255.1:5000", "prod/bash", MISSING],
        ["http://registry.example/prod/bash@" + MISSING, "--anonymous"],
    ],
)
def test_plain_http_beyond_loopback_is_refused_before_connecting(
    args: list[str], tmp_path: Path
) -> None:
    # 10.255.255.1 does not answer: a connection attempt would hang until --timeout.
    started = time.monotonic()
    result = run("get", *args, "-o", str(tmp_path / "blob"), "--timeout", "30", timeout=30)
    assert time.monotonic() - started < 10
    assert result.returncode == 2, result.stderr
    assert b"refusing plain http to http://" in result.stderr
    assert b"--insecure" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_insecure_allows_plain_http_beyond_loopback(
    registry: Deployment, blob_factory: BlobFactory, repository: str, tmp_path: Path
) -> None:
    digest, data = blob_factory(registry, 3000)
    # On Linux, 0.0.0.0 reaches this machine's loopback listeners, yet it is no loopback
    # address: the nearest thing to a remote plain-http registry that a test can own.
    ref = reference(f"http://0.0.0.0:{registry.port}", repository, digest)
    refused = run("get", ref, "-o", str(tmp_path / "refused"))
    assert refused.returncode == 2
    target = tmp_path / "blob"
    allowed = run("get", ref, "-o", str(target), "--insecure")
    assert allowed.returncode == 0, allowed.stderr
    assert target.read_bytes() == data


def test_credentials_with_a_reference(
    basic_registry: Deployment, blob_factory: BlobFactory, repository: str, tmp_path: Path
) -> None:
    digest, data = blob_factory(basic_registry, 2500)
    user, password = basic_registry.auth or ("", "")
    ref = reference(basic_registry.url, repository, digest)
    config = tmp_path / "docker"
    config.mkdir()
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    host = f"{basic_registry.host}:{basic_registry.port}"
    (config / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    target = tmp_path / "blob"
    from_docker = run("get", ref, "-o", str(target), env={"DOCKER_CONFIG": str(config)})
    assert from_docker.returncode == 0, from_docker.stderr
    assert target.read_bytes() == data
    from_stdin = run("exists", ref, "--username", user, "--password-stdin", stdin=password + "\n")
    assert from_stdin.returncode == 0, from_stdin.stderr
    # A refusal is not an absence.
    assert run("exists", ref, "--anonymous").returncode == 4


# ---------------------------------------------------------------------------------------------
# Options: --max-concurrency, --timeout, --json with stdout


def test_max_concurrency_fetches_parallel_ranges(
    registry: Deployment,
    blob_factory: BlobFactory,
    repository: str,
    fault_proxy: FaultProxyFactory,
    tmp_path: Path,
) -> None:
    digest, data = blob_factory(registry, 17 * MiB)
    proxy = fault_proxy(registry)
    target = tmp_path / "blob"
    ref = reference(proxy.url, repository, digest)
    result = run("get", ref, "-o", str(target), "--max-concurrency", "4")
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == data
    ranged = [r for r in proxy.requests if r.method == "GET" and r.header("Range")]
    assert len(ranged) >= 2, [r.header("Range") for r in proxy.requests]

    proxy.clear()
    single = run("get", ref, "-o", str(tmp_path / "single"), "--max-concurrency", "1")
    assert single.returncode == 0, single.stderr
    assert [r.header("Range") for r in proxy.requests if r.method == "GET"] == [None]

    # To stdout, the parts are handed out in order.
    proxy.clear()
    piped = run("get", ref, "-o", "-", "--max-concurrency", "3")
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == data
    ranged = [r for r in proxy.requests if r.method == "GET" and r.header("Range")]
    assert len(ranged) >= 2, [r.header("Range") for r in proxy.requests]


def test_max_concurrency_auto_downloads_verified_bytes(
    registry: Deployment, blob_factory: BlobFactory, repository: str, tmp_path: Path
) -> None:
    digest, data = blob_factory(registry, 17 * MiB)
    ref = reference(registry.url, repository, digest)
    result = run("get", ref, "-o", str(tmp_path / "blob"), "--max-concurrency", "auto", "-v")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "blob").read_bytes() == data
    piped = run("get", ref, "-o", "-", "--max-concurrency", "AUTO")
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == data
    # pull's --max-concurrency counts blobs side by side: a number only.
    refused = run(
        "pull",
        f"{registry.url}/{repository}:latest",
        str(tmp_path / "p"),
        "--max-concurrency",
        "auto",
    )
    assert refused.returncode == 2 and b"must be a whole number" in refused.stderr


@pytest.mark.parametrize(
    "option",
    [
        ["--max-concurrency", "0"],
        ["--max-concurrency", "65"],
        ["--max-concurrency", "two"],
        ["--max-concurrency", "autoo"],
        ["--timeout", "0"],
        ["--timeout", "-1"],
        ["--timeout", "nan"],
    ],
)
def test_bad_option_values_are_usage_errors(option: list[str], tmp_path: Path) -> None:
    result = run("get", "myregistry.azurecr.io/a@" + MISSING, "-o", str(tmp_path / "x"), *option)
    assert result.returncode == 2
    assert option[0].encode() in result.stderr


def test_timeout_bounds_the_silence(
    registry: Deployment,
    blob_factory: BlobFactory,
    repository: str,
    fault_proxy: FaultProxyFactory,
    tmp_path: Path,
) -> None:
    digest, data = blob_factory(registry, 1000)
    proxy = fault_proxy(registry)
    # The first GET stalls 4 s: with --timeout 0.3 it times out and the retry succeeds at once.
    proxy.add(Fault.stall_before_headers(4.0), method="GET", path="/blobs/", times=1)
    target = tmp_path / "blob"
    started = time.monotonic()
    result = run(
        "get", reference(proxy.url, repository, digest), "-o", str(target), "--timeout=0.3"
    )
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 3.5
    assert target.read_bytes() == data
    assert len([r for r in proxy.requests if r.method == "GET" and "/blobs/" in r.path]) == 2


def test_json_with_stdout_is_a_usage_error(tmp_path: Path) -> None:
    result = run("get", "myregistry.azurecr.io/a@" + MISSING, "-o", "-", "--json")
    assert result.returncode == 2
    assert b"--json needs -o FILE" in result.stderr


def test_a_closed_pipe_ends_quietly(
    registry: Deployment, blob_factory: BlobFactory, repository: str
) -> None:
    digest, _ = blob_factory(registry, 4 * MiB)
    process = subprocess.Popen(
        [str(SCRIPT), "get", reference(registry.url, repository, digest), "-o", "-"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment(),
    )
    assert process.stdout is not None and process.stderr is not None
    assert len(process.stdout.read(1000)) == 1000
    process.stdout.close()  # `| head -c 1000`
    stderr = process.stderr.read()
    assert process.wait(timeout=30) == 1
    assert stderr == b"acr-blob: output closed before the end of the blob\n"


# ---------------------------------------------------------------------------------------------
# --verbose: request logs, secrets redacted


@pytest.mark.parametrize("verbosity", ["-v", "-vv"])
def test_verbose_logs_requests_without_secrets(
    s3_basic_registry: Deployment,
    blob_factory: BlobFactory,
    repository: str,
    tmp_path: Path,
    verbosity: str,
) -> None:
    digest, data = blob_factory(s3_basic_registry, 20_000)
    assert s3_basic_registry.auth is not None and s3_basic_registry.proxy is not None
    user, password = s3_basic_registry.auth
    target = tmp_path / "blob"
    result = run(
        "get",
        reference(s3_basic_registry.url, repository, digest),
        "-o",
        str(target),
        verbosity,
        env={"ACR_BLOB_USERNAME": user, "ACR_BLOB_PASSWORD": password},
    )
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == data
    log = result.stderr.decode()
    # The registry's 307, and the storage request it led to, with its signature redacted.
    blob_path = f"/v2/{repository}/blobs/{digest}"
    assert f'HTTP Request: GET {s3_basic_registry.url}{blob_path} "HTTP/1.1 307' in log, log
    storage = re.search(
        r"HTTP Request: GET (http://127\.0\.0\.2:\d+/[^?\s]+)\?(\S+) \"HTTP/1.1 200", log
    )
    assert storage is not None, log
    query = parse_qs(storage.group(2))
    assert query["X-Amz-Signature"] == query["X-Amz-Credential"] == ["REDACTED"], log
    assert query["X-Amz-Expires"] != ["REDACTED"]
    assert f"acr_blob: GET {storage.group(1)}?<redacted> -> 200" in log  # the SDK's own log
    [presigned] = s3_basic_registry.proxy.presigned_requests
    sent = parse_qs(presigned.query)
    signature = sent["X-Amz-Signature"][0]
    assert len(signature) >= 32
    assert signature not in log
    assert sent["X-Amz-Credential"][0] not in log
    assert password not in log
    assert base64.b64encode(f"{user}:{password}".encode()).decode() not in log
    if verbosity == "-vv":
        # httpcore's connection-level log, response headers (the signed Location) included.
        assert "httpcore.http11: receive_response_headers.complete" in log
        location = r"b'Location', b'http://127\.0\.0\.2:\d+/[^'?]+\?[^']*X-Amz-Signature=REDACTED'"
        assert re.search(location, log), log
    else:
        assert "httpcore" not in log


# ---------------------------------------------------------------------------------------------
# The progress bar


def run_on_terminal(*args: str, columns: int = 60, timeout: float = 60) -> tuple[int, str, float]:
    """Run with stderr on a pseudo-terminal; return the exit code, what the terminal showed
    and how long it took."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    started = time.monotonic()
    process = subprocess.Popen(
        [str(SCRIPT), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=slave,
        env=environment(),
    )
    os.close(slave)
    shown = bytearray()
    deadline = started + timeout
    try:
        while time.monotonic() < deadline:
            if not select.select([master], [], [], 0.5)[0]:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child's end is closed
                break
            if not chunk:
                break
            shown += chunk
        code = process.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
    return code, shown.decode(), time.monotonic() - started


def test_progress_bar_on_a_terminal(
    registry: Deployment,
    blob_factory: BlobFactory,
    repository: str,
    fault_proxy: FaultProxyFactory,
    tmp_path: Path,
) -> None:
    digest, data = blob_factory(registry, 2 * MiB)
    proxy = fault_proxy(registry)
    proxy.add(Fault.drip(128 * 1024, 0.05), method="GET", path="/blobs/")  # about 0.8 s
    target = tmp_path / "blob"
    ref = reference(proxy.url, repository, digest)
    code, shown, elapsed = run_on_terminal("get", ref, "-o", str(target), columns=70)
    assert code == 0, shown
    assert target.read_bytes() == data
    frames = [f.rstrip() for f in re.split(r"[\r\n]+", shown) if f.strip()]
    assert all(len(f) < 70 for f in frames if not f.startswith("verified")), frames
    bar = r" *\d{1,3}% \[[=> ]+\] "
    moving = [f for f in frames if re.fullmatch(bar + r"[\d.]+ [KM]?i?B / 2\.0 MiB .*", f)]
    assert any(
        re.search(r"[\d.]+ [KM]iB/s  ETA \d+:\d\d$", f) and not f.startswith("100%") for f in moving
    ), frames
    # Redrawn at most about ten times a second.
    assert len(moving) <= 10 * elapsed + 3, frames
    assert frames[-1] == f"verified {digest} ({2 * MiB} bytes) -> {target}"
    assert re.fullmatch(r"100% \[=+\] 2\.0 MiB  [\d.]+ [KM]iB/s  in 0:0\d", frames[-2])
    # The final line is ended before the message: the message is a line of its own.
    assert re.search(r"in 0:0\d *\r?\n\r?verified", shown)

    quiet_code, quiet_shown, _ = run_on_terminal("get", ref, "-o", str(target), "--quiet")
    assert (quiet_code, quiet_shown) == (0, "")


def test_progress_bar_redraws_at_a_bounded_rate() -> None:
    now = [100.0]
    stream = io.StringIO()
    bar = ProgressBar(stream, clock=lambda: now[0], columns=lambda: 80)
    bar(0, 10 * MiB)
    now[0] += 0.05
    bar(MiB, 10 * MiB)  # too soon after the last redraw: not drawn
    assert stream.getvalue().count("\r") == 1
    now[0] += 1.0
    bar(3 * MiB, 10 * MiB)
    line = stream.getvalue().rpartition("\r")[2]
    assert line.startswith(" 30% [")
    assert line.rstrip().endswith("3.0 MiB / 10.0 MiB  2.9 MiB/s  ETA 0:02")
    assert len(line) <= 79
    now[0] += 1.0
    bar(10 * MiB, 10 * MiB)
    bar.finish()
    bar(10 * MiB, 10 * MiB)  # nothing after the end
    bar.finish()
    assert stream.getvalue().endswith("\n")
    assert stream.getvalue().count("\n") == 1
    final = stream.getvalue().rpartition("\r")[2]
    assert re.fullmatch(r"100% \[=+\] 10\.0 MiB  4\.9 MiB/s  in 0:02\s*\n", final), final


def test_progress_bar_without_a_size_or_room() -> None:
    stream = io.StringIO()
    now = [0.0]
    bar = ProgressBar(stream, clock=lambda: now[0], columns=lambda: 30)
    bar(5000, None)
    now[0] += 1
    bar(2 * MiB + 5000, None)
    assert stream.getvalue().rpartition("\r")[2].rstrip() == "2.0 MiB  2.0 MiB/s"
    bar.abort()
    assert stream.getvalue().endswith("\n")
    # Too narrow for a bar: the numbers alone, cut to the width.
    narrow_stream = io.StringIO()
    narrow = ProgressBar(narrow_stream, columns=lambda: 30)
    narrow(1, 1000)
    assert narrow_stream.getvalue().startswith("\r  0% 1 B / 1000 B")
    assert all(len(line) <= 29 for line in narrow_stream.getvalue().split("\r"))
    # An aborted bar that never drew anything prints nothing.
    silent = io.StringIO()
    ProgressBar(silent).abort()
    assert silent.getvalue() == ""


# ---------------------------------------------------------------------------------------------
# Ctrl-C


def arrived(partial: Path, prefix: bytes) -> bool:
    """Whether the partial file begins with ``prefix`` (parallel parts write further on first)."""
    try:
        with partial.open("rb") as file:
            return file.read(len(prefix)) == prefix
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("concurrency", [1, 4])
def test_ctrl_c_exits_130_and_leaves_nothing_at_the_target(
    registry: Deployment,
    blob_factory: BlobFactory,
    repository: str,
    fault_proxy: FaultProxyFactory,
    tmp_path: Path,
    concurrency: int,
) -> None:
    size = 17 * MiB if concurrency > 1 else 4 * MiB  # parallel ranges start at 16 MiB
    digest, data = blob_factory(registry, size)
    proxy = fault_proxy(registry)
    proxy.add(Fault.drip(64 * 1024, 0.05), method="GET", path="/blobs/")  # 1.25 MiB/s
    target = tmp_path / "layer.bin"
    partial = tmp_path / f".sha256-{digest.removeprefix('sha256:')}.partial"
    ref = reference(proxy.url, repository, digest)
    args = ["get", ref, "-o", str(target), "--max-concurrency", str(concurrency)]
    process = subprocess.Popen(
        [str(SCRIPT), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment(),
    )
    try:
        deadline = time.monotonic() + 20
        while not arrived(partial, data[: 256 * 1024]):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no bytes arrived"
            time.sleep(0.02)
        interrupted = time.monotonic()
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert time.monotonic() - interrupted < 5
    assert stderr.endswith(b"acr-blob: interrupted\n"), stderr
    assert b"Traceback" not in stderr
    assert not target.exists()
    # The partial file stays beside the target, for the next run to continue; parallel parts
    # leave it with holes, and the part map of the spans that arrived beside it.
    part_map = partial.with_suffix(".parts")
    expected = sorted([partial.name] + ([part_map.name] if concurrency > 1 else []))
    assert sorted(p.name for p in tmp_path.iterdir()) == expected
    kept = partial.read_bytes()
    if concurrency > 1:
        spans = [tuple(span) for span in json.loads(part_map.read_bytes())["done"]]
        assert spans[0][0] == 0 and spans[0][1] >= 256 * 1024
        assert all(kept[first:end] == data[first:end] for first, end in spans)
        kept = kept[: spans[0][1]]  # the in-order prefix the next run hashes and goes on from
    assert len(kept) >= 256 * 1024 and data.startswith(kept)

    proxy.clear_faults()
    proxy.clear()
    again = run(*args)
    assert again.returncode == 0, again.stderr
    assert target.read_bytes() == data
    assert list(tmp_path.iterdir()) == [target]
    # The next run starts where the kept bytes end (then, in parallel, cuts the rest in parts).
    first = next(r for r in proxy.requests if r.method == "GET" and "/blobs/" in r.path)
    assert first.header("Range") == f"bytes={len(kept)}-"


# ---------------------------------------------------------------------------------------------
# Mirrors: --mirror, --hosts-dir, --no-fallback


def blob_requests(proxy: FaultProxy, method: str = "GET") -> list[RecordedRequest]:
    return [r for r in proxy.requests if r.method == method and "/blobs/" in r.path]


def netloc(url: str) -> str:
    return httpx.URL(url).netloc.decode("ascii")


def test_get_asks_the_mirror_before_the_registry(
    registry: Deployment,
    blob_factory: BlobFactory,
    repository: str,
    fault_proxy: FaultProxyFactory,
    tmp_path: Path,
) -> None:
    digest, data = blob_factory(registry, 10_000)
    origin, mirror = fault_proxy(registry), fault_proxy(registry)
    ref = reference(origin.url, repository, digest)
    target = tmp_path / "blob"
    result = run("get", ref, "-o", str(target), "--mirror", mirror.url)
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == data
    assert origin.requests == []
    [asked] = blob_requests(mirror)
    assert parse_qs(asked.query) == {"ns": [netloc(origin.url)]}
    head = run("head", ref, "--json", "--mirror", mirror.url)
    assert head.returncode == 0, head.stderr
    assert json.loads(head.stdout)["size"] == 10_000
    assert len(blob_requests(mirror, "HEAD")) == 1
    assert origin.requests == []

    # A mirror that is down: the registry serves the blob.
    dead = f"http://127.0.0.1:{free_port()}"
    fallback = run("get", ref, "-o", str(tmp_path / "fallback"), "--mirror", dead)
    assert fallback.returncode == 0, fallback.stderr
    assert len(blob_requests(origin)) == 1
    # --no-fallback: the mirrors alone; the error names each host that failed.
    other_dead = f"http://127.0.0.1:{free_port()}"
    failed = run(
        "get",
        ref,
        "-o",
        str(tmp_path / "failed"),
        "--mirror",
        dead,
        "--mirror",
        other_dead,
        "--no-fallback",
    )
    assert failed.returncode == 1, failed.stderr
    assert f"(after {netloc(dead)}: ".encode() in failed.stderr, failed.stderr
    assert netloc(other_dead).encode() in failed.stderr
    assert len(blob_requests(origin)) == 1
    assert not (tmp_path / "failed").exists()


def test_hosts_dir_reads_containerds_hosts_toml(
    registry: Deployment,
    blob_factory: BlobFactory,
    repository: str,
    fault_proxy: FaultProxyFactory,
    tmp_path: Path,
) -> None:
    digest, data = blob_factory(registry, 7000)
    origin, mirror = fault_proxy(registry), fault_proxy(registry)
    hosts = tmp_path / "certs.d"
    (hosts / netloc(origin.url)).mkdir(parents=True)
    hosts_toml = hosts / netloc(origin.url) / "hosts.toml"
    hosts_toml.write_text(
        f'server = "{origin.url}"\n\n[host."{mirror.url}"]\ncapabilities = ["pull", "resolve"]\n'
    )
    ref = reference(origin.url, repository, digest)
    target = tmp_path / "blob"
    result = run("get", ref, "-o", str(target), "--hosts-dir", str(hosts))
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == data
    assert len(blob_requests(mirror)) == 1
    assert origin.requests == []

    # No `server`: no fallback to the registry once the mirror is down.
    dead = f"http://127.0.0.1:{free_port()}"
    hosts_toml.write_text(f'[host."{dead}"]\ncapabilities = ["pull"]\n')
    failed = run("get", ref, "-o", str(tmp_path / "failed"), "--hosts-dir", str(hosts))
    assert failed.returncode == 1, failed.stderr
    assert netloc(dead).encode() in failed.stderr
    assert origin.requests == []
    # A file that is not containerd's format is bad input.
    hosts_toml.write_text('[host."https://mirror.example"]\nclient = "client.pem"\n')
    refused = run("get", ref, "-o", str(tmp_path / "refused"), "--hosts-dir", str(hosts))
    assert refused.returncode == 2, refused.stderr
    assert f"acr-blob: {hosts_toml}: ".encode() in refused.stderr
    assert origin.requests == []


def test_the_registrys_credentials_never_reach_a_mirror(
    basic_registry: Deployment,
    registry: Deployment,
    repository: str,
    fault_proxy: FaultProxyFactory,
    tmp_path: Path,
) -> None:
    data = os.urandom(5000)
    digest = basic_registry.push(repository, data)
    assert registry.push(repository, data) == digest
    mirror = fault_proxy(registry)
    user, password = basic_registry.auth or ("", "")
    target = tmp_path / "blob"
    result = run(
        "get",
        reference(basic_registry.url, repository, digest),
        "-o",
        str(target),
        "--mirror",
        mirror.url,
        env={"ACR_BLOB_USERNAME": user, "ACR_BLOB_PASSWORD": password},
    )
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == data
    assert len(blob_requests(mirror)) == 1
    assert all(r.header("Authorization") is None for r in mirror.requests)


def test_a_bad_mirror_url_is_a_usage_error(tmp_path: Path) -> None:
    ref = "myregistry.azurecr.io/a@" + MISSING
    result = run("get", ref, "-o", str(tmp_path / "x"), "--mirror", "ftp://mirror.example")
    assert result.returncode == 2
    assert b"acr-blob: invalid mirror URL 'ftp://mirror.example'" in result.stderr


# ---------------------------------------------------------------------------------------------
# The cache: get --cache-dir / --offline, and acr-blob cache ls|du|prune|verify


def entry_path(cache: Path, digest: str) -> Path:
    algorithm, _, hex_digest = digest.partition(":")
    return cache / "blobs" / algorithm / hex_digest


def cached_get(
    proxy_or_registry: FaultProxy | Deployment,
    repository: str,
    digest: str,
    cache: Path,
    target: Path,
) -> None:
    ref = reference(proxy_or_registry.url, repository, digest)
    result = run("get", ref, "-o", str(target), "--cache-dir", str(cache))
    assert result.returncode == 0, result.stderr


def test_get_with_a_cache_downloads_once(
    registry: Deployment,
    blob_factory: BlobFactory,
    repository: str,
    fault_proxy: FaultProxyFactory,
    tmp_path: Path,
) -> None:
    digest, data = blob_factory(registry, 300_000)
    proxy = fault_proxy(registry)
    cache = tmp_path / "cache"
    ref = reference(proxy.url, repository, digest)
    first, second = tmp_path / "first", tmp_path / "second"
    assert run("get", ref, "-o", str(first), "--cache-dir", str(cache)).returncode == 0
    result = run("get", ref, "-o", str(second), "--cache-dir", str(cache))
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"verified {digest} (300000 bytes) -> {second}\n".encode()
    assert first.read_bytes() == second.read_bytes() == data
    assert len(blob_requests(proxy)) == 1
    # The entry is read-only, and the targets are files of their own (never links to it).
    entry = entry_path(cache, digest)
    assert entry.read_bytes() == data
    assert stat.S_IMODE(entry.stat().st_mode) & 0o222 == 0
    assert len({path.stat().st_ino for path in (entry, first, second)}) == 3
    assert entry.stat().st_nlink == 1
    assert (cache / "oci-layout").read_text() == '{"imageLayoutVersion":"1.0.0"}\n'
    # $ACR_BLOB_CACHE_DIR is the default.
    third = tmp_path / "third"
    from_env = run("get", ref, "-o", str(third), env={"ACR_BLOB_CACHE_DIR": str(cache)})
    assert from_env.returncode == 0, from_env.stderr
    assert third.read_bytes() == data
    assert len(blob_requests(proxy)) == 1


def test_get_to_stdout_with_a_cache(
    registry: Deployment,
    blob_factory: BlobFactory,
    repository: str,
    fault_proxy: FaultProxyFactory,
    tmp_path: Path,
) -> None:
    digest, data = blob_factory(registry, 100_000)
    proxy = fault_proxy(registry)
    cache = tmp_path / "cache"
    ref = reference(proxy.url, repository, digest)
    for _ in range(2):
        piped = run("get", ref, "-o", "-", "--cache-dir", str(cache))
        assert (piped.returncode, piped.stdout) == (0, data), piped.stderr
    assert len(blob_requests(proxy)) == 1


def test_get_offline_takes_the_cache_and_sends_nothing(
    registry: Deployment,
    blob_factory: BlobFactory,
    repository: str,
    fault_proxy: FaultProxyFactory,
    tmp_path: Path,
) -> None:
    (digest, data), (uncached, uncached_data) = (
        blob_factory(registry, 5000),
        blob_factory(registry, 6000),
    )
    proxy = fault_proxy(registry)
    cache = tmp_path / "cache"
    cached_get(proxy, repository, digest, cache, tmp_path / "warm")
    proxy.clear()
    ref = reference(proxy.url, repository, digest)
    target = tmp_path / "offline"
    hit = run("get", ref, "-o", str(target), "--offline", "--cache-dir", str(cache))
    assert hit.returncode == 0, hit.stderr
    assert target.read_bytes() == data
    miss_ref = reference(proxy.url, repository, uncached)
    miss_target = tmp_path / "miss"
    miss = run("get", miss_ref, "-o", str(miss_target), "--offline", "--cache-dir", str(cache))
    assert miss.returncode == 1, miss.stderr
    assert miss.stderr == f"acr-blob: {CacheMissError(uncached, str(cache))}\n".encode()
    assert not miss_target.exists()
    # $ACR_BLOB_OFFLINE and $ACR_BLOB_CACHE_DIR the same way.
    env = {"ACR_BLOB_OFFLINE": "1", "ACR_BLOB_CACHE_DIR": str(cache)}
    from_env = run("get", miss_ref, "-o", str(miss_target), env=env)
    assert from_env.returncode == 1, from_env.stderr
    assert f"{uncached} is not in the cache {cache}".encode() in from_env.stderr
    assert proxy.requests == []
    # --no-offline wins over the variable: the blob is downloaded, into the cache too.
    online = run("get", miss_ref, "-o", str(miss_target), "--no-offline", env=env)
    assert online.returncode == 0, online.stderr
    assert miss_target.read_bytes() == uncached_data
    assert entry_path(cache, uncached).read_bytes() == uncached_data
    assert len(blob_requests(proxy)) == 1


def test_a_cache_folder_that_cannot_be_made_is_passed_by_with_a_warning(
    registry: Deployment, blob_factory: BlobFactory, repository: str, tmp_path: Path
) -> None:
    digest, data = blob_factory(registry, 3000)
    blocker = tmp_path / "file"
    blocker.write_bytes(b"not a folder")
    target = tmp_path / "blob"
    ref = reference(registry.url, repository, digest)
    result = run("get", ref, "-o", str(target), "--cache-dir", str(blocker / "cache"))
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == data
    warning, verified = result.stderr.decode().splitlines()
    assert warning.startswith(f"acr-blob: not caching {digest}: "), warning
    assert verified == f"verified {digest} (3000 bytes) -> {target}"


def interrupt_when(args: list[str], ready: Callable[[], bool]) -> int:
    """Run ``acr-blob *args`` and Ctrl-C it once ``ready()``; return its exit code."""
    process = subprocess.Popen(
        [str(SCRIPT), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment()
    )
    try:
        deadline = time.monotonic() + 20
        while not ready():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "never ready"
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    return process.returncode


def test_an_interrupted_download_into_the_cache_follows_no_resume(
    registry: Deployment,
    blob_factory: BlobFactory,
    repository: str,
    fault_proxy: FaultProxyFactory,
    tmp_path: Path,
) -> None:
    digest, data = blob_factory(registry, 4 * MiB)
    proxy = fault_proxy(registry)
    proxy.add(Fault.drip(64 * 1024, 0.05), method="GET", path="/blobs/")  # 1.25 MiB/s
    cache = tmp_path / "cache"
    entry = entry_path(cache, digest)
    partial = entry.with_name(f".sha256-{digest.partition(':')[2]}.partial")
    target = tmp_path / "blob"
    args = ["get", reference(proxy.url, repository, digest), "-o", str(target)]
    args += ["--cache-dir", str(cache)]
    prefix = data[: 256 * 1024]

    def downloading(requests: int) -> Callable[[], bool]:
        return lambda: len(blob_requests(proxy)) == requests and arrived(partial, prefix)

    # The partial download into the cache is kept for the next get to continue...
    assert interrupt_when(args, downloading(1)) == 130
    kept = partial.read_bytes()
    assert len(kept) >= len(prefix) and data.startswith(kept)
    # ...unless --no-resume says otherwise.
    assert interrupt_when([*args, "--no-resume"], downloading(2)) == 130
    assert blob_requests(proxy)[1].header("Range") is None  # started again, not continued
    assert not partial.exists()
    assert not entry.exists() and not target.exists()


@pytest.mark.parametrize(
    ("options", "env", "message"),
    [
        (["--offline"], {}, "--offline needs a cache"),
        ([], {"ACR_BLOB_OFFLINE": "yes"}, "$ACR_BLOB_OFFLINE needs a cache"),
        (["--max-cache-bytes", "1000"], {}, "--max-cache-bytes needs a cache"),
        (["--max-cache-bytes", "-1", "--cache-dir", "c"], {}, "--max-cache-bytes: must be"),
        (["--max-cache-bytes", "10GiB", "--cache-dir", "c"], {}, "--max-cache-bytes: must be"),
        (["--cache-dir", ""], {}, "--cache-dir: must name a folder"),
    ],
)
def test_bad_cache_options_are_usage_errors(
    options: list[str], env: dict[str, str], message: str, tmp_path: Path
) -> None:
    ref = "myregistry.azurecr.io/a@" + MISSING
    result = run("get", ref, "-o", str(tmp_path / "x"), *options, env=env, timeout=30)
    assert result.returncode == 2, result.stderr
    assert message.encode() in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_cache_ls_and_du_show_the_entries(
    registry: Deployment, blob_factory: BlobFactory, repository: str, tmp_path: Path
) -> None:
    small, large = blob_factory(registry, 1000), blob_factory(registry, 20_000)
    cache = tmp_path / "cache"
    started = time.time()
    cached_get(registry, repository, small.digest, cache, tmp_path / "small")
    cached_get(registry, repository, large.digest, cache, tmp_path / "large")
    listed = run("cache", "ls", "--cache-dir", str(cache))
    assert listed.returncode == 0, listed.stderr
    lines = [line.split("  ") for line in listed.stdout.decode().splitlines()]
    # Least recently used first.
    assert [line[:2] for line in lines] == [[small.digest, "1000"], [large.digest, "20000"]]
    for *_, used in lines:
        when = datetime.datetime.strptime(used, "%Y-%m-%dT%H:%M:%SZ")
        assert started - 2 <= when.replace(tzinfo=datetime.UTC).timestamp() <= time.time()
    as_json = json.loads(run("cache", "ls", "--json", "--cache-dir", str(cache)).stdout)
    assert [(e["digest"], e["size"], e["last_used"]) for e in as_json] == [
        (small.digest, 1000, lines[0][2]),
        (large.digest, 20_000, lines[1][2]),
    ]
    assert as_json[0]["path"] == str(entry_path(cache, small.digest))
    env = {"ACR_BLOB_CACHE_DIR": str(cache)}
    du = run("cache", "du", env=env)
    assert (du.returncode, du.stdout, du.stderr) == (0, b"21000 bytes in 2 blobs\n", b"")
    assert json.loads(run("cache", "du", "--json", env=env).stdout) == {
        "bytes": 21_000,
        "count": 2,
    }

    # A folder that does not exist is an empty cache, and stays absent.
    absent = tmp_path / "absent"
    empty = run("cache", "ls", "--cache-dir", str(absent))
    assert (empty.returncode, empty.stdout, empty.stderr) == (0, b"", b"")
    assert json.loads(run("cache", "ls", "--json", "--cache-dir", str(absent)).stdout) == []
    nothing = run("cache", "du", "--cache-dir", str(absent))
    assert (nothing.returncode, nothing.stdout) == (0, b"0 bytes in 0 blobs\n")
    assert not absent.exists()


def test_cache_prune_removes_the_least_recently_used(
    registry: Deployment,
    blob_factory: BlobFactory,
    repository: str,
    fault_proxy: FaultProxyFactory,
    tmp_path: Path,
) -> None:
    older, newer = blob_factory(registry, 3000), blob_factory(registry, 4000)
    proxy = fault_proxy(registry)
    cache = tmp_path / "cache"
    cached_get(proxy, repository, older.digest, cache, tmp_path / "older")
    cached_get(proxy, repository, newer.digest, cache, tmp_path / "newer")
    # Used again (from the cache): now `newer` is the least recently used.
    cached_get(proxy, repository, older.digest, cache, tmp_path / "again")
    assert len(blob_requests(proxy)) == 2
    pruned = run("cache", "prune", "--max-bytes", "3500", "--cache-dir", str(cache))
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout == f"removed {newer.digest}  4000\n".encode()
    listed = run("cache", "ls", "--cache-dir", str(cache)).stdout.decode()
    assert [line.split()[0] for line in listed.splitlines()] == [older.digest]
    # Everything fits: nothing to remove.
    kept = run("cache", "prune", "--max-bytes", "3000", "--cache-dir", str(cache))
    assert (kept.returncode, kept.stdout) == (0, b"")

    emptied = run("cache", "prune", "--max-bytes", "0", "--cache-dir", str(cache))
    assert (emptied.returncode, emptied.stdout) == (0, f"removed {older.digest}  3000\n".encode())
    assert run("cache", "ls", "--cache-dir", str(cache)).stdout == b""
    assert run("cache", "du", "--cache-dir", str(cache)).stdout == b"0 bytes in 0 blobs\n"
    assert not entry_path(cache, older.digest).exists()
    # The targets made from the entries are untouched; the next get downloads again.
    assert (tmp_path / "again").read_bytes() == older.data
    cached_get(proxy, repository, older.digest, cache, tmp_path / "refilled")
    assert len(blob_requests(proxy)) == 3


def test_get_with_max_cache_bytes_evicts_the_least_recently_used(
    registry: Deployment, blob_factory: BlobFactory, repository: str, tmp_path: Path
) -> None:
    first, second = blob_factory(registry, 3000), blob_factory(registry, 4000)
    cache = tmp_path / "cache"
    cached_get(registry, repository, first.digest, cache, tmp_path / "first")
    result = run(
        "get",
        reference(registry.url, repository, second.digest),
        "-o",
        str(tmp_path / "second"),
        "--cache-dir",
        str(cache),
        "--max-cache-bytes",
        "5000",
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "second").read_bytes() == second.data
    assert not entry_path(cache, first.digest).exists()
    assert entry_path(cache, second.digest).read_bytes() == second.data


def test_cache_verify_removes_a_corrupted_entry(
    registry: Deployment, blob_factory: BlobFactory, repository: str, tmp_path: Path
) -> None:
    good, bad = blob_factory(registry, 2000), blob_factory(registry, 3000)
    cache = tmp_path / "cache"
    cached_get(registry, repository, good.digest, cache, tmp_path / "good")
    cached_get(registry, repository, bad.digest, cache, tmp_path / "bad")
    clean = run("cache", "verify", "--cache-dir", str(cache))
    assert (clean.returncode, clean.stdout, clean.stderr) == (0, b"", b"")

    entry = entry_path(cache, bad.digest)
    entry.chmod(0o644)  # entries are read-only
    with entry.open("r+b") as file:
        file.seek(1234)
        byte = file.read(1)
        file.seek(1234)
        file.write(bytes([byte[0] ^ 0xFF]))
    result = run("cache", "verify", "--cache-dir", str(cache))
    assert result.returncode == 1, result.stderr
    assert result.stdout == f"removed: {bad.digest}  3000: its content is not its digest\n".encode()
    assert b"Traceback" not in result.stderr
    assert not entry.exists()
    assert entry_path(cache, good.digest).read_bytes() == good.data
    again = run("cache", "verify", "--cache-dir", str(cache))
    assert (again.returncode, again.stdout) == (0, b"")


@pytest.mark.parametrize("command", [["ls"], ["du"], ["prune", "--max-bytes", "0"], ["verify"]])
def test_cache_commands_need_a_folder(command: list[str]) -> None:
    result = run("cache", *command, timeout=30)
    assert result.returncode == 2
    assert (
        result.stderr
        == (
            f"acr-blob: cache {command[0]}: which cache? give --cache-dir DIR or set "
            "$ACR_BLOB_CACHE_DIR\n"
        ).encode()
    )


def test_cache_takes_no_reference(tmp_path: Path) -> None:
    result = run("cache", "ls", "myregistry.azurecr.io/a@" + MISSING, "--cache-dir", str(tmp_path))
    assert result.returncode == 2
    assert b"unrecognized arguments: myregistry.azurecr.io/a@" in result.stderr
    assert run("cache", timeout=30).returncode == 2
    prune = run("cache", "prune", "--cache-dir", str(tmp_path), timeout=30)
    assert prune.returncode == 2
    assert b"--max-bytes" in prune.stderr


def test_cli_variables_are_the_caches() -> None:
    assert cli.CACHE_DIR_VARIABLE == cache_module.CACHE_DIR_ENV
    assert cli.OFFLINE_VARIABLE == cache_module.OFFLINE_ENV
