"""The installed `acr-blob` console script, run in a subprocess against real registries."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tools.testbed import BlobFactory, Deployment, flip_byte, free_port

SCRIPT = Path(sys.executable).with_name("acr-blob")
MISSING = "sha256:" + "0" * 64


def run(
    *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ACR_BLOB_")}
    environment.update(env or {})
    return subprocess.run(
        [str(SCRIPT), *args],
        input=stdin.encode(),
        capture_output=True,
        env=environment,
        timeout=120,
        check=False,
    )


def test_get_to_a_file(
    registry: Deployment, blob_factory: BlobFactory, repository: str, tmp_path: Path
) -> None:
    digest, data = blob_factory(registry, 100_000)
    target = tmp_path / "layer.bin"
    result = run("get", registry.url, repository, digest, "-o", str(target))
    assert result.returncode == 0, result.stderr
    assert target.read_bytes() == data
    assert f"verified {digest}".encode() in result.stderr


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
